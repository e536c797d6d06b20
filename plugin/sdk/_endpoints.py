"""``client.online_endpoints``: create, change, inspect and call online endpoints."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tiffin.errors import NotFoundError, TiffinError

from ._poller import Poller
from ._transport import Transport, path, raise_for_status

if TYPE_CHECKING:  # imported where used: get, list and invoke need no spec models (pydantic)
    from tiffin.specs import OnlineEndpoint

__all__ = ["OnlineEndpointOperations"]

_ROOT = "/online-endpoints"


def _full_spec(endpoint: OnlineEndpoint | Mapping[str, Any]) -> dict[str, Any]:
    """The whole spec, validated here first so a mistake is reported before anything is sent."""
    from tiffin.specs import OnlineEndpoint, parse_spec

    if isinstance(endpoint, OnlineEndpoint):
        return endpoint.to_yaml_dict()
    data = {key: value for key, value in endpoint.items() if key != "local"}
    return parse_spec(data, OnlineEndpoint, _label(data)).spec.to_yaml_dict()


def _given_fields(endpoint: OnlineEndpoint | Mapping[str, Any]) -> dict[str, Any]:
    """Only the fields the caller set: an update must not reset traffic it did not mention."""
    from tiffin.specs import OnlineEndpoint

    if isinstance(endpoint, OnlineEndpoint):
        data = endpoint.model_dump(mode="json", exclude_unset=True)
    else:
        data = dict(endpoint)
    return {key: value for key, value in data.items() if key not in ("name", "local")}


def _label(data: Mapping[str, Any]) -> str:
    name = data.get("name")
    return f"online endpoint '{name}'" if isinstance(name, str) else "online endpoint"


def _payload(request_file: str | Path | None, body: bytes | str | Mapping[str, Any] | None) -> bytes:
    if (request_file is None) == (body is None):
        raise TiffinError("give the request as request_file or as body (exactly one of them)")
    if request_file is not None:
        try:
            return Path(request_file).read_bytes()
        except OSError as exc:
            raise TiffinError(f"cannot read the request file {request_file}: {exc.strerror or exc}") from None
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


class OnlineEndpointOperations:
    """Online endpoints, as azure-ai-ml's ``MLClient.online_endpoints``; methods return plain dicts
    shaped as ``tiffin online-endpoint show`` prints them."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport

    def get(self, name: str) -> dict[str, Any]:
        """One endpoint (:class:`NotFoundError` if there is none)."""
        return self._http.request("GET", path("online-endpoints", name))

    def list(self) -> list[dict[str, Any]]:
        """Every online endpoint, by name."""
        return self._http.request("GET", _ROOT)

    def create(self, endpoint: OnlineEndpoint | Mapping[str, Any], local: bool = False) -> dict[str, Any]:
        """Create an endpoint; :class:`ConflictError` if the name is taken (what the CLI's create does).

        ``local`` gives Azure's local-endpoint semantics: no auth, one deployment taking all traffic.
        """
        spec = _full_spec(endpoint)
        return self._http.request("POST", _ROOT, json={**spec, "local": True} if local else spec)

    def update(self, name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change the given spec fields of endpoint ``name`` (``None`` clears an optional field)."""
        return self._http.request("PATCH", path("online-endpoints", name), json=dict(changes))

    def create_or_update(self, endpoint: OnlineEndpoint | Mapping[str, Any], local: bool = False) -> dict[str, Any]:
        """Create the endpoint, or change the fields the caller set if it exists already."""
        name = _full_spec(endpoint)["name"]
        try:
            self.get(name)
        except NotFoundError:
            return self.create(endpoint, local=local)
        return self.update(name, _given_fields(endpoint))

    def begin_create_or_update(
        self, endpoint: OnlineEndpoint | Mapping[str, Any], local: bool = False
    ) -> Poller[dict[str, Any]]:
        """As :meth:`create_or_update` (endpoints are ready at once); ``.result()`` gives the endpoint."""
        result = self.create_or_update(endpoint, local=local)
        return Poller(lambda: result)

    def delete(self, name: str) -> None:
        """Delete the endpoint and all its deployments."""
        self._http.request("DELETE", path("online-endpoints", name))

    def begin_delete(self, name: str) -> Poller[None]:
        """As :meth:`delete`, which completes at once."""
        self.delete(name)
        return Poller(lambda: None)

    def get_keys(self, name: str) -> dict[str, str]:
        """``primaryKey``/``secondaryKey`` (key mode), or a fresh ``accessToken``/``expiryTimeUtc``."""
        return self._http.request("GET", path("online-endpoints", name, "credentials"))

    def regenerate_keys(self, name: str, key_type: str = "primary") -> None:
        """Replace the ``primary`` or ``secondary`` key; in token modes, revoke every token issued."""
        self._http.request("POST", path("online-endpoints", name, "regenerate-keys"), json={"key_type": key_type})

    def set_traffic(
        self, name: str, traffic: Mapping[str, int], mirror_traffic: Mapping[str, int] | None = None
    ) -> dict[str, Any]:
        """Replace the live traffic split (and the mirror split, if given); the endpoint."""
        body: dict[str, Any] = {"traffic": dict(traffic)}
        if mirror_traffic is not None:
            body["mirror_traffic"] = dict(mirror_traffic)
        return self._http.request("PUT", path("online-endpoints", name, "traffic"), json=body)

    def stats(self, name: str) -> dict[str, Any]:
        """The gateway's request statistics of the endpoint."""
        return self._http.request("GET", path("online-endpoints", name, "stats"))

    def rollout(self, name: str, to: str, **options: Any) -> dict[str, Any]:
        """Start a guarded rollout of the endpoint's traffic to deployment ``to`` (docs/rollouts.md); options are
        steps ("5,25,50,100"), step_interval ("60s"), max_error_rate ("1%"), max_p99_ratio, min_requests,
        mirror (percent), mirror_duration ("5m"), tolerance. The rollout as it starts."""
        body = {"to": to, **{key: value for key, value in options.items() if value is not None}}
        return self._http.request("POST", path("online-endpoints", name, "rollout"), json=body)

    def get_rollout(self, name: str) -> dict[str, Any]:
        """The endpoint's rollout: status, step, guard readings, agreement report, why it stopped."""
        return self._http.request("GET", path("online-endpoints", name, "rollout"))

    def pause_rollout(self, name: str) -> dict[str, Any]:
        """Hold the rollout at its step (traffic stays as it is)."""
        return self._http.request("POST", path("online-endpoints", name, "rollout", "pause"))

    def resume_rollout(self, name: str) -> dict[str, Any]:
        """Go on from where the rollout was paused (the step is judged afresh)."""
        return self._http.request("POST", path("online-endpoints", name, "rollout", "resume"))

    def abort_rollout(self, name: str) -> dict[str, Any]:
        """Stop the rollout and put the traffic back as it was before it (status Aborting, then Aborted)."""
        return self._http.request("POST", path("online-endpoints", name, "rollout", "abort"))

    def invoke(
        self,
        endpoint_name: str,
        request_file: str | Path | None = None,
        *,
        body: bytes | str | Mapping[str, Any] | None = None,
        deployment_name: str | None = None,
    ) -> str:
        """POST a request to the endpoint's scoring URI with its credential; the response body.

        ``deployment_name`` pins the request to one deployment (header ``azureml-model-deployment``),
        even one with no traffic. A non-2xx answer raises the matching tiffin error.
        """
        payload = _payload(request_file, body)
        endpoint = self.get(endpoint_name)
        headers = {"Content-Type": "application/json"}
        if endpoint.get("auth_mode") != "none":
            credentials = self.get_keys(endpoint_name)
            secret = credentials.get("primaryKey") or credentials.get("accessToken")
            headers["Authorization"] = f"Bearer {secret}"
        if deployment_name:
            headers["azureml-model-deployment"] = deployment_name
        url = f"{self._http.url}{path('endpoints', endpoint_name, 'score')}"
        response = self._http.score(url, payload, headers)
        raise_for_status(response)
        return response.text
