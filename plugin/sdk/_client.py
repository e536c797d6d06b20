"""The SDK's entry point, :class:`TiffinClient`."""

from __future__ import annotations

from types import TracebackType

from tiffin.config import tiffin_url

from ._assets import ComputeOperations, DataOperations, EnvironmentOperations, ModelOperations
from ._autoscale import AutoscaleOperations
from ._batch import BatchDeploymentOperations, BatchEndpointOperations, JobOperations
from ._deployments import OnlineDeploymentOperations
from ._endpoints import OnlineEndpointOperations
from ._transport import Transport, find_admin_token

__all__ = ["TiffinClient"]


class TiffinClient:
    """A client of ``tiffin serve``, shaped like azure-ai-ml's ``MLClient``::

        from tiffin.sdk import TiffinClient

        client = TiffinClient()  # $TIFFIN_URL, and $TIFFIN_ADMIN_TOKEN or $TIFFIN_HOME/admin-token
        client.online_endpoints.create_or_update({"name": "my-endpoint"})
        client.online_deployments.create_or_update(load_spec("blue.yml").spec, all_traffic=True)
        print(client.online_endpoints.invoke("my-endpoint", "sample-request.json"))
        job = client.batch_endpoints.invoke("my-batch", input="data/")
        client.jobs.stream(job["name"], out=sys.stdout)
        model = client.models.create_or_update(load_spec("model.yml").spec)  # registered: model["version"]

    ``url`` defaults to ``$TIFFIN_URL`` (``http://127.0.0.1:7700``); ``admin_token`` to
    ``$TIFFIN_ADMIN_TOKEN``, else the file ``tiffin serve`` writes. Errors the server answers are
    raised as the matching :mod:`tiffin.errors` class, with the server's message.
    """

    def __init__(self, url: str | None = None, admin_token: str | None = None, timeout: float = 30) -> None:
        self.url = (url or tiffin_url()).rstrip("/")
        self._transport = Transport(self.url, admin_token or find_admin_token(), timeout)
        self.online_endpoints = OnlineEndpointOperations(self._transport)
        self.online_deployments = OnlineDeploymentOperations(self._transport, self.online_endpoints)
        self.batch_endpoints = BatchEndpointOperations(self._transport)
        self.batch_deployments = BatchDeploymentOperations(self._transport)
        self.jobs = JobOperations(self._transport)
        self.models = ModelOperations(self._transport)
        self.environments = EnvironmentOperations(self._transport)
        self.data = DataOperations(self._transport)
        self.compute = ComputeOperations(self._transport)
        self.autoscale = AutoscaleOperations(self._transport)  # az monitor autoscale

    def close(self) -> None:
        """Close the client's connections."""
        self._transport.close()

    def __enter__(self) -> TiffinClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TiffinClient({self.url!r})"
