"""``client.online_deployments``: create, wait for, inspect and delete online deployments."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tiffin.errors import TiffinError

from ._poller import Poller
from ._transport import Transport, path

if TYPE_CHECKING:  # spec models (pydantic) are imported where used: get and list need none
    from tiffin.specs import OnlineDeployment

    from ._endpoints import OnlineEndpointOperations

__all__ = ["OnlineDeploymentOperations", "Progress"]

Progress = Callable[[dict[str, Any]], None]
"""Called with the deployment, as last read, on every poll while waiting for it."""

POLL_INTERVAL = 0.5
FIRST_POLLS = (0.1, 5.0)
"""Poll every 0.1 s for the first 5 s of a wait, then every :data:`POLL_INTERVAL`: most deployments on this
machine are ready within 1-2 s (measured by benchmarks/bench_deploy.py), and a half-second poll added 0.25 s on
average to every create."""


def _spec(deployment: OnlineDeployment | Mapping[str, Any], endpoint_name: str | None) -> dict[str, Any]:
    """The deployment's spec with its endpoint filled in, validated here first.

    Relative paths are made absolute against the current folder, as azure-ai-ml does for specs built
    in code: the server may run in another folder. Specs from ``load_spec`` are absolute already.
    """
    from tiffin.specs import OnlineDeployment, parse_spec

    data = deployment.to_yaml_dict() if isinstance(deployment, OnlineDeployment) else dict(deployment)
    if endpoint_name:
        data["endpoint_name"] = endpoint_name
    name = data.get("name")
    label = f"online deployment '{name}'" if isinstance(name, str) else "online deployment"
    spec = parse_spec(data, OnlineDeployment, label, base_dir=Path.cwd()).spec
    if not spec.endpoint_name:
        raise TiffinError(
            f"say which endpoint {label} belongs to: pass endpoint_name (--endpoint-name) or set endpoint_name "
            "in its spec"
        )
    return spec.to_yaml_dict()


class OnlineDeploymentOperations:
    """Online deployments, as azure-ai-ml's ``MLClient.online_deployments``; methods return plain
    dicts shaped as ``tiffin online-deployment show`` prints them."""

    def __init__(self, transport: Transport, endpoints: OnlineEndpointOperations) -> None:
        self._http = transport
        self._endpoints = endpoints

    def get(self, name: str, endpoint_name: str) -> dict[str, Any]:
        """One deployment, with its ``provisioning_state`` (and ``reason`` when Failed)."""
        return self._http.request("GET", path("online-endpoints", endpoint_name, "deployments", name))

    def list(self, endpoint_name: str) -> list[dict[str, Any]]:
        """The deployments of an endpoint, by name."""
        return self._http.request("GET", path("online-endpoints", endpoint_name, "deployments"))

    def delete(self, name: str, endpoint_name: str) -> None:
        """Delete a deployment (:class:`ConflictError` while it still gets traffic)."""
        self._http.request("DELETE", path("online-endpoints", endpoint_name, "deployments", name))

    def begin_delete(self, name: str, endpoint_name: str) -> Poller[None]:
        """As :meth:`delete`, which completes at once (the supervisor stops the replicas after)."""
        self.delete(name, endpoint_name)
        return Poller(lambda: None)

    def get_logs(
        self, name: str, endpoint_name: str, lines: int = 100, instance: int = 0, container: str | None = None
    ) -> str:
        """The last ``lines`` lines (at most 10,000) of the deployment's logs, as ``az ml online-deployment get-logs``:
        ``container="inference-server"`` replica ``instance``'s console log (the scoring code's output and
        ``logging``, each line with its time and instance), ``"storage-initializer"`` what prepared the deployment
        (model, code, environment build); neither: both, that one first."""
        params: dict[str, Any] = {"lines": lines, "instance": instance}
        if container is not None:
            params["container"] = container
        return self._http.request("GET", self._route(name, endpoint_name, "logs"), params=params)

    def read_logs(self, name: str, endpoint_name: str, offset: int | None, instance: int = 0) -> tuple[str, int]:
        """Replica ``instance``'s console log after byte ``offset`` (None: its last 100 lines) and the offset to
        read from next: call it again with that offset to follow the log."""
        params: dict[str, Any] = {"instance": instance}
        if offset is not None:
            params["offset"] = offset
        else:
            params["container"] = "inference-server"
        response = self._http.response("GET", self._route(name, endpoint_name, "logs"), params=params)
        next_offset = int(response.headers.get("x-tiffin-log-offset", offset or 0))
        return response.content.decode("utf-8", errors="replace"), next_offset

    def follow_logs(self, name: str, endpoint_name: str, instance: int = 0, interval: float = 0.5) -> Iterator[str]:
        """Replica ``instance``'s last 100 console lines, then each piece written after, as it comes (every
        ``interval`` seconds); endless: stop iterating to stop following."""
        text, offset = self.read_logs(name, endpoint_name, None, instance)
        if text:
            yield text
        while True:
            time.sleep(interval)
            text, offset = self.read_logs(name, endpoint_name, offset, instance)
            if text:
                yield text

    def get_events(self, name: str, endpoint_name: str, limit: int = 100) -> list[dict[str, Any]]:
        """The deployment's last ``limit`` lifecycle events, oldest first: ``time``, ``name`` (ReplicaStarted,
        ReplicaReady, ReplicaFailed, TrafficChanged…), ``message`` and, when about one replica, ``instance``."""
        return self._http.request("GET", self._route(name, endpoint_name, "events"), params={"limit": limit})

    @staticmethod
    def _route(name: str, endpoint_name: str, what: str) -> str:
        return path("online-endpoints", endpoint_name, "deployments", name, what)

    def create_or_update(
        self,
        deployment: OnlineDeployment | Mapping[str, Any],
        endpoint_name: str | None = None,
        all_traffic: bool = False,
        wait: bool = True,
        timeout: float = 600,
        progress: Progress | None = None,
    ) -> dict[str, Any]:
        """Create or replace a deployment and, with ``wait``, return once it is ``Succeeded``.

        Raises :class:`TiffinError` with the reason if it ends ``Failed``, or after ``timeout`` seconds.
        ``all_traffic`` gives it all of the endpoint's live traffic once it is ready (at once when not
        waiting). ``wait=False`` returns the deployment as just stored (``Creating``/``Updating``).
        """
        if wait:
            return self.begin_create_or_update(
                deployment, endpoint_name, all_traffic=all_traffic, timeout=timeout, progress=progress
            ).result()
        stored = self._put(deployment, endpoint_name)
        if all_traffic:
            self._endpoints.set_traffic(stored["endpoint_name"], {stored["name"]: 100})
        return stored

    def begin_create_or_update(
        self,
        deployment: OnlineDeployment | Mapping[str, Any],
        endpoint_name: str | None = None,
        *,
        all_traffic: bool = False,
        timeout: float = 600,
        progress: Progress | None = None,
    ) -> Poller[dict[str, Any]]:
        """Send the deployment now; ``.result()`` waits as :meth:`create_or_update` does."""
        stored = self._put(deployment, endpoint_name)
        name, endpoint = stored["name"], stored["endpoint_name"]

        def finish() -> dict[str, Any]:
            ready = self.wait(name, endpoint, timeout=timeout, progress=progress)
            if all_traffic:
                self._endpoints.set_traffic(endpoint, {name: 100})
            return ready

        return Poller(finish)

    def wait(
        self, name: str, endpoint_name: str, timeout: float = 600, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Poll the deployment until it is ``Succeeded`` (returned) or ``Failed`` (raised, with why)."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            current = self.get(name, endpoint_name)
            if progress is not None:
                progress(current)
            state = current.get("provisioning_state")
            if state == "Succeeded":
                return current
            if state == "Failed":
                raise TiffinError(
                    f"deployment '{name}' on endpoint '{endpoint_name}' failed: "
                    f"{current.get('reason') or 'no reason recorded'}; see its log with "
                    f"`tiffin online-deployment get-logs -n {name} -e {endpoint_name}`"
                )
            if time.monotonic() >= deadline:
                raise TiffinError(
                    f"deployment '{name}' on endpoint '{endpoint_name}' is still {state} after {timeout:g}s; "
                    f"follow it with `tiffin online-deployment show -n {name} -e {endpoint_name}`"
                )
            fast, during = FIRST_POLLS
            time.sleep(fast if time.monotonic() - started < during else POLL_INTERVAL)

    def _put(self, deployment: OnlineDeployment | Mapping[str, Any], endpoint_name: str | None) -> dict[str, Any]:
        spec = _spec(deployment, endpoint_name)
        route = path("online-endpoints", spec["endpoint_name"], "deployments", spec["name"])
        return self._http.request("PUT", route, json=spec)
