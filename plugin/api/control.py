"""The control plane's operations on online endpoints and deployments, independent of HTTP.

The REST layer (:mod:`tiffin.api.app`) parses a request, calls one method here and serialises the
result; everything it needs to decide lives here. Methods take and return plain JSON-ready values and
raise :class:`~tiffin.errors.TiffinError` subclasses, which the REST layer maps to HTTP statuses in
one place. They block on the store, so the REST layer runs them in a worker thread.

The store keeps an endpoint's name, auth mode and traffic maps in columns of their own (the gateway
reads them there); the endpoint's ``spec`` holds the remaining Azure fields (description, tags...).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from tiffin import config
from tiffin.assets.resolve import inline_assets, pin_references
from tiffin.auth import TOKEN_MODES, issue_token, new_key, new_token_secret
from tiffin.environments.sources import environment_of
from tiffin.errors import ConflictError, SpecError
from tiffin.paths import model_mount, online_mount_identity
from tiffin.resource_ids import online_deployment_id, online_endpoint_id
from tiffin.runners.factory import check_model, runner_kind
from tiffin.specs import OnlineDeployment, OnlineEndpoint, parse_spec
from tiffin.specs.traffic import check_traffic
from tiffin.store import DeploymentRecord, EndpointRecord, Store

__all__ = ["KEY_TYPES", "LOCAL_AUTH_MODE", "ControlPlane", "credentials_json", "is_local", "tail_lines"]

LOCAL_AUTH_MODE = "none"
"""The auth mode of ``--local`` endpoints: Azure's local endpoints take requests without credentials."""

KEY_TYPES = ("primary", "secondary")

# Spec fields the store holds in columns of their own; kept out of the stored spec so each value
# has exactly one home.
_COLUMN_FIELDS = frozenset({"name", "auth_mode", "traffic", "mirror_traffic"})
_TRAFFIC_FIELDS = ("traffic", "mirror_traffic")
# Fields the answers add to a spec. A body may be an earlier answer fed back (`show` output, or an SDK
# `get` result changed and sent again, as azure-ai-ml users do); these are dropped, not kept as spec.
# The spec models name them (Azure's and tiffin's read-only keys), so one list serves the loader and the API.
_ENDPOINT_ANSWER_FIELDS = OnlineEndpoint.AZURE_READ_ONLY | {"kind"}
# Azure's endpoint answers carry the endpoint's id in properties too; its autoscale how-to reads it from there
# (`--query "properties.\"azureml.onlineendpointid\""`) for a rule on an endpoint metric.
_ENDPOINT_ID_PROPERTY = "azureml.onlineendpointid"
_DEPLOYMENT_ANSWER_FIELDS = OnlineDeployment.AZURE_READ_ONLY


def credentials_json(record: EndpointRecord) -> dict[str, str]:
    """An endpoint's credentials as ``az ml ... get-credentials`` prints them: both keys, or a fresh token."""
    if record.auth_mode == "key":
        return {"primaryKey": record.primary_key or "", "secondaryKey": record.secondary_key or ""}
    if record.auth_mode in TOKEN_MODES and record.token_secret:
        return issue_token(record.name, record.token_secret).as_azure()
    raise ConflictError(f"endpoint '{record.name}' is local and takes requests without credentials")


def is_local(endpoint: EndpointRecord) -> bool:
    """Whether ``endpoint`` was created with ``--local``: exactly the endpoints without auth."""
    return endpoint.auth_mode == LOCAL_AUTH_MODE


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _stored_spec(spec: OnlineEndpoint) -> dict[str, Any]:
    return {key: value for key, value in spec.to_yaml_dict().items() if key not in _COLUMN_FIELDS}


def _without(body: Mapping[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    out = {key: value for key, value in body.items() if key not in fields}
    properties = out.get("properties")
    if isinstance(properties, dict) and _ENDPOINT_ID_PROPERTY in properties:  # an answer's, fed back
        out["properties"] = {k: v for k, v in properties.items() if k != _ENDPOINT_ID_PROPERTY}
        if not out["properties"]:
            del out["properties"]
    return out


def _label(kind: str, body: Mapping[str, Any], fallback: str | None) -> str:
    """How error messages name the spec being validated: "online endpoint 'my-endpoint'"."""
    name = body.get("name", fallback)
    return f"{kind} '{name}'" if isinstance(name, str) else kind


def _same_or_absent(body: Mapping[str, Any], field: str, expected: str, where: str) -> None:
    value = body.get(field, expected)
    if value != expected:
        raise SpecError(f"is {value!r} but the URL names {where} '{expected}'; make them agree", field=field)


def tail_lines(path: Path, count: int, block: int = 64 * 1024) -> str:
    """The last ``count`` lines of the text file at ``path``.

    Reads backwards in blocks, so a replica log of any size costs only about the lines returned.
    """
    with path.open("rb") as file:
        position = file.seek(0, os.SEEK_END)
        data = b""
        # count + 1 newlines guarantee that the first of the last ``count`` lines is complete.
        while position > 0 and data.count(b"\n") <= count:
            step = min(block, position)
            position -= step
            file.seek(position)
            data = file.read(step) + data
    return b"".join(data.splitlines(keepends=True)[-count:]).decode("utf-8", errors="replace")


class ControlPlane:
    """Online endpoints and deployments as the REST API exposes them, over one :class:`Store`.

    ``public_url`` (``http://127.0.0.1:7700``) is where clients reach ``tiffin serve``; endpoint
    URIs are built from it. ``home`` is ``TIFFIN_HOME``, where replica logs are. ``max_instances``
    (default ``TIFFIN_MAX_INSTANCES``) is the most replicas a deployment may ask for.
    """

    def __init__(
        self,
        store: Store,
        *,
        public_url: str,
        home: Path,
        max_instances: int | None = None,
        ready_count: Callable[[str, str], int | None] | None = None,
    ) -> None:
        self.store = store
        self.public_url = public_url.rstrip("/")
        self.home = home
        self.max_instances = max_instances if max_instances is not None else config.max_instances()
        # Replicas answering now, on every server sharing the store (the gateway's routing table): with
        # autoscale this is not the spec's instance_count.
        self.ready_count = ready_count

    # --- serialisation -----------------------------------------------------------------------------

    def endpoint_json(self, record: EndpointRecord) -> dict[str, Any]:
        """An endpoint as ``az ml online-endpoint show`` prints it; never its keys or token secret."""
        out: dict[str, Any] = {
            "id": online_endpoint_id(record.name),
            "name": record.name,
            "description": record.spec.get("description"),
            "tags": record.spec.get("tags") or {},
            "auth_mode": record.auth_mode,
            "traffic": record.traffic,
            "mirror_traffic": record.mirror_traffic,
            "provisioning_state": record.provisioning_state,
            "scoring_uri": f"{self.public_url}/endpoints/{record.name}/score",
            "openapi_uri": f"{self.public_url}/endpoints/{record.name}/swagger.json",
            "kind": "online",
            "local": is_local(record),
            "created_at": _iso(record.created_at),
            "updated_at": _iso(record.updated_at),
        }
        for key, value in record.spec.items():  # the other Azure fields: properties, identity...
            out.setdefault(key, value)
        out["properties"] = {**(out.get("properties") or {}), _ENDPOINT_ID_PROPERTY: out["id"]}
        return out

    def deployment_json(self, record: DeploymentRecord) -> dict[str, Any]:
        """A deployment: its spec in Azure's shape plus its provisioning state (and why it failed) and, where
        this server routes it, ``current_instances``: the replicas answering now (autoscale moves it)."""
        out = {
            **record.spec,
            "id": online_deployment_id(record.endpoint_name, record.name),
            "endpoint_name": record.endpoint_name,
            "provisioning_state": record.state,
            "reason": record.reason,
            "created_at": _iso(record.created_at),
            "updated_at": _iso(record.updated_at),
        }
        count = self.ready_count(record.endpoint_name, record.name) if self.ready_count is not None else None
        if count is not None:
            out["current_instances"] = count
        return out

    # --- endpoints ---------------------------------------------------------------------------------

    def endpoint(self, name: str) -> EndpointRecord:
        """The online endpoint ``name`` (:class:`NotFoundError` if missing or a batch endpoint)."""
        return self.store.get_endpoint(name, "online")

    def list_endpoints(self) -> list[dict[str, Any]]:
        """Every online endpoint, by name."""
        return [self.endpoint_json(record) for record in self.store.list_endpoints("online")]

    def get_endpoint(self, name: str) -> dict[str, Any]:
        """One online endpoint."""
        return self.endpoint_json(self.endpoint(name))

    def create_endpoint(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create an endpoint from an Azure endpoint spec, plus ``"local": true`` for a local one.

        Traffic may only name existing deployments, so a new endpoint's traffic must be empty, as on
        Azure. Endpoints hold no processes, so they are ``Succeeded`` at once.
        """
        body = _without(body, _ENDPOINT_ANSWER_FIELDS)
        local = body.pop("local", False)
        if not isinstance(local, bool):
            raise SpecError(f"must be true or false (got {local!r})", field="local")
        spec = parse_spec(body, OnlineEndpoint, _label("online endpoint", body, None)).spec
        check_traffic(spec.traffic, spec.mirror_traffic, ())
        record = self.store.create_endpoint(
            "online",
            spec.name,
            _stored_spec(spec),
            LOCAL_AUTH_MODE if local else spec.auth_mode,
            provisioning_state="Succeeded",
        )
        return self.endpoint_json(record)

    def update_endpoint(self, name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change some spec fields (description, tags, traffic, mirror_traffic, auth_mode...).

        The changes are merged into the current spec and the result validated as a whole; ``null``
        clears an optional field. Traffic follows :mod:`tiffin.specs.traffic`'s rules: the spec's validator
        applies them, and the store again with the endpoint's deployments, in the transaction that writes.
        """
        changes = _without(changes, _ENDPOINT_ANSWER_FIELDS)
        current = self.endpoint(name)
        local = is_local(current)
        _same_or_absent(changes, "name", name, "endpoint")
        if changes.pop("local", local) != local:
            raise SpecError("cannot be changed after the endpoint is created", field="local")
        if local:
            # Ignored, as when the endpoint was created: a local endpoint takes no credentials.
            changes.pop("auth_mode", None)
        if not changes:  # no write, so no routing rebuild for nothing
            return self.endpoint_json(current)
        merged = {
            **current.spec,
            "name": name,
            "traffic": current.traffic,
            "mirror_traffic": current.mirror_traffic,
            **({} if local else {"auth_mode": current.auth_mode}),
            **changes,
        }
        spec = parse_spec(merged, OnlineEndpoint, f"online endpoint '{name}'").spec
        updates: dict[str, Any] = {"spec": _stored_spec(spec)}
        for field in _TRAFFIC_FIELDS:
            if field in changes:
                updates[field] = getattr(spec, field)
        if not local and spec.auth_mode != current.auth_mode:
            updates["auth_mode"] = spec.auth_mode
        updated = self.store.update_endpoint(name, kind="online", **updates)
        from tiffin.supervisor.logfiles import record_traffic_change  # the deployments' event logs

        splits = [(record.traffic, record.mirror_traffic) for record in (current, updated)]
        record_traffic_change(self.home, name, *splits)
        return self.endpoint_json(updated)

    def set_traffic(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the live and/or mirror traffic split: ``{"traffic": {...}, "mirror_traffic": {...}}``."""
        unknown = sorted(set(body) - set(_TRAFFIC_FIELDS))
        if unknown:
            raise SpecError("is not a traffic setting; send traffic and/or mirror_traffic", field=unknown[0])
        if not body:
            raise SpecError('send traffic and/or mirror_traffic, e.g. {"traffic": {"blue": 100}}')
        for field, value in body.items():
            if not isinstance(value, Mapping):
                raise SpecError("must be a mapping of deployment name to whole percentage", field=field)
        # The same path as a PATCH: validated as part of the whole spec, then checked against the deployments
        # by the store, both with tiffin.specs.traffic's rules, so the two routes cannot disagree.
        return self.update_endpoint(name, body)

    def delete_endpoint(self, name: str) -> None:
        """Delete the endpoint and every deployment it holds (the supervisor stops their replicas)."""
        deployments = [d.name for d in self.store.list_deployments(name)]
        self.store.delete_endpoint(name, "online")
        for deployment in deployments:
            self._remove_model_mount(name, deployment)

    def credentials(self, name: str) -> dict[str, str]:
        """``primaryKey``/``secondaryKey``, or a fresh token as ``accessToken``/``expiryTimeUtc``."""
        return credentials_json(self.endpoint(name))

    def regenerate_keys(self, name: str, key_type: str = "primary") -> None:
        """Replace one key (key mode), or the token secret (token modes), which revokes every token."""
        kind = key_type.strip().lower() if isinstance(key_type, str) else key_type
        if kind not in KEY_TYPES:
            raise SpecError(f"must be primary or secondary (got {key_type!r})", field="key_type")
        record = self.endpoint(name)
        if record.auth_mode == "key":
            self.store.set_keys(name, **{kind: new_key()}, kind="online")
        elif record.auth_mode in TOKEN_MODES:
            self.store.update_endpoint(name, kind="online", token_secret=new_token_secret())
        else:
            raise ConflictError(f"endpoint '{name}' is local and has no keys to regenerate")

    # --- deployments -------------------------------------------------------------------------------

    def list_deployments(self, endpoint: str) -> list[dict[str, Any]]:
        """The deployments of one online endpoint, by name."""
        self.endpoint(endpoint)
        return [self.deployment_json(record) for record in self.store.list_deployments(endpoint)]

    def get_deployment(self, endpoint: str, name: str) -> dict[str, Any]:
        """One deployment of an online endpoint."""
        self.endpoint(endpoint)
        return self.deployment_json(self.store.get_deployment(endpoint, name))

    def put_deployment(self, endpoint: str, name: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create or replace a deployment from its Azure spec; returns it and whether it is new.

        The supervisor picks the change up and moves the state from Creating/Updating to Succeeded or
        Failed. A local endpoint takes one deployment, which gets all its traffic.
        """
        body = _without(body, _DEPLOYMENT_ANSWER_FIELDS)
        _same_or_absent(body, "name", name, "deployment")
        _same_or_absent(body, "endpoint_name", endpoint, "endpoint")
        body.update(name=name, endpoint_name=endpoint)
        target = self.endpoint(endpoint)
        source = f"online deployment '{name}'"
        spec = parse_spec(body, OnlineDeployment, source).spec
        # References resolve now, pinned to the versions they name: a missing asset is refused before anything
        # is stored, and a later @latest never changes this deployment (tiffin.assets.resolve).
        stored = pin_references(self.store, spec.to_yaml_dict(), source=source)
        runnable = parse_spec(inline_assets(self.store, stored, source=source), OnlineDeployment, source).spec
        # Refused here, before anything is stored: a deployment nothing can run, or whose model is not there,
        # would otherwise sit in the store and fail only when its replicas start.
        check_model(runnable, source=source)
        kind = runner_kind(runnable, source=source)
        # Its environment is read and translated now (cheap, no build): a conda file that cannot be (an R package,
        # a version pip cannot read) is a 422 naming it, not a deployment that fails once stored.
        environment_of(runnable, kind=kind, owner=f"deployment '{name}'")
        if spec.instance_count > self.max_instances:
            # The supervisor would start every replica: 10000 processes take the machine down.
            raise SpecError(
                f"is {spec.instance_count}, above this server's limit of {self.max_instances} replicas per "
                "deployment; lower it, or start tiffin serve with a higher TIFFIN_MAX_INSTANCES",
                source=f"online deployment '{name}'",
                field="instance_count",
            )
        local = is_local(target)
        if local:
            others = [d.name for d in self.store.list_deployments(endpoint) if d.name != name]
            if others:
                raise ConflictError(
                    f"local endpoint '{endpoint}' already has deployment '{others[0]}' and, as on Azure, takes "
                    f"only one; delete it first with `tiffin online-deployment delete -n {others[0]} -e {endpoint}`"
                )
        record = self.store.put_deployment(endpoint, name, "online", stored)
        if local and target.traffic != {name: 100}:
            self.store.set_traffic(endpoint, {name: 100}, {}, kind="online")
        return self.deployment_json(record), record.state == "Creating"

    def delete_deployment(self, endpoint: str, name: str) -> None:
        """Delete a deployment; :class:`ConflictError` while it still gets traffic (not on local ones)."""
        target = self.endpoint(endpoint)
        if is_local(target) and target.traffic.get(name):
            # A local endpoint's one deployment holds all the traffic by rule, not by the user's choice.
            self.store.set_traffic(endpoint, {}, {}, kind="online")
        self.store.delete_deployment(endpoint, name)
        self._remove_model_mount(endpoint, name)

    def _remove_model_mount(self, endpoint: str, name: str) -> None:
        """Remove the model copy a deployment's replicas staged (left behind when its init() failed, or
        when it is deleted), and the endpoint's folder of mounts once empty."""
        mount = model_mount(self.home, online_mount_identity(endpoint, name))
        shutil.rmtree(mount, ignore_errors=True)
        with contextlib.suppress(OSError):  # other deployments' mounts are still there
            mount.parent.rmdir()
