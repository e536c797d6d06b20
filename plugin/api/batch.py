"""The control plane's operations on batch endpoints and batch deployments, independent of HTTP.

As :mod:`tiffin.api.control` does for online endpoints: plain JSON-ready values in and out, errors raised
as :class:`~tiffin.errors.TiffinError` subclasses, blocking on the store (the REST layer runs these in a
worker thread). :class:`BatchControl` extends :class:`~tiffin.api.batch_jobs.BatchJobs`, where the jobs'
operations (invoke, show, log, output, cancel) are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tiffin.assets.resolve import check_compute, inline_assets, pin_references
from tiffin.auth import Credentials
from tiffin.batch.provision import needs_provisioning
from tiffin.errors import ConflictError, SpecError
from tiffin.resource_ids import batch_deployment_id, batch_endpoint_id
from tiffin.specs import BatchDeployment, BatchEndpoint, parse_spec
from tiffin.store import TERMINAL_JOB_STATUSES, DeploymentRecord, EndpointRecord, Store

from .batch_jobs import BatchJobs, iso_or_none
from .control import credentials_json

__all__ = ["BatchControl"]

_ANSWER_FIELDS = frozenset({"id", "provisioning_state", "scoring_uri", "kind", "created_at", "updated_at", "reason"})


def _without(body: Mapping[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in fields}


class BatchControl(BatchJobs):
    """Batch endpoints, deployments and (through :class:`~tiffin.api.batch_jobs.BatchJobs`) jobs over one
    :class:`Store`; ``home`` is ``TIFFIN_HOME``, and the limits are :class:`~tiffin.api.batch_jobs.BatchJobs`'."""

    def __init__(
        self,
        store: Store,
        *,
        public_url: str,
        home: Path,
        input_roots: Sequence[Path] | None = None,
        max_workers: int | None = None,
        max_instances: int | None = None,
        max_input_files: int | None = None,
        url_prefixes: Sequence[str] | None = None,
    ) -> None:
        super().__init__(
            store,
            home=home,
            input_roots=input_roots,
            max_workers=max_workers,
            max_instances=max_instances,
            max_input_files=max_input_files,
            url_prefixes=url_prefixes,
        )
        self.public_url = public_url.rstrip("/")

    # --- serialisation -----------------------------------------------------------------------------

    def endpoint_json(self, record: EndpointRecord) -> dict[str, Any]:
        """A batch endpoint as ``az ml batch-endpoint show`` prints it (never its keys)."""
        return {
            **record.spec,
            "id": batch_endpoint_id(record.name),
            "name": record.name,
            "auth_mode": record.auth_mode,
            "defaults": record.spec.get("defaults") or {"deployment_name": None},
            "scoring_uri": f"{self.public_url}/api/batch-endpoints/{record.name}/jobs",
            "provisioning_state": record.provisioning_state,
            "kind": "batch",
            "created_at": iso_or_none(record.created_at),
            "updated_at": iso_or_none(record.updated_at),
        }

    @staticmethod
    def deployment_json(record: DeploymentRecord) -> dict[str, Any]:
        """A batch deployment: its spec in Azure's (newer, ``settings:``) shape and its state."""
        return {
            **record.spec,
            "id": batch_deployment_id(record.endpoint_name, record.name),
            "endpoint_name": record.endpoint_name,
            "provisioning_state": record.state,
            **({"reason": record.reason} if record.reason else {}),
            "created_at": iso_or_none(record.created_at),
            "updated_at": iso_or_none(record.updated_at),
        }

    # --- endpoints ---------------------------------------------------------------------------------

    def list_endpoints(self) -> list[dict[str, Any]]:
        """Every batch endpoint, by name."""
        return [self.endpoint_json(record) for record in self.store.list_endpoints("batch")]

    def get_endpoint(self, name: str) -> dict[str, Any]:
        """One batch endpoint."""
        return self.endpoint_json(self.endpoint(name))

    def create_endpoint(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a batch endpoint from its Azure spec (``defaults.deployment_name`` must be empty or exist
        later: a new endpoint has no deployments, so it is left unset until one is created)."""
        spec = parse_spec(_without(body, _ANSWER_FIELDS), BatchEndpoint, "batch endpoint").spec
        stored = {k: v for k, v in spec.to_yaml_dict().items() if k not in ("name", "auth_mode")}
        record = self.store.create_endpoint("batch", spec.name, stored, spec.auth_mode, provisioning_state="Succeeded")
        return self.endpoint_json(record)

    def update_endpoint(self, name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change spec fields (description, tags, auth_mode, ``defaults.deployment_name``...)."""
        changes = _without(changes, _ANSWER_FIELDS)
        current = self.endpoint(name)
        if changes.get("name", name) != name:
            raise SpecError(f"is {changes['name']!r} but the URL names endpoint '{name}'", field="name")
        merged = {**current.spec, "name": name, "auth_mode": current.auth_mode, **changes}
        spec = parse_spec(merged, BatchEndpoint, f"batch endpoint '{name}'").spec
        default = spec.defaults.deployment_name
        if default is not None and default not in {d.name for d in self.store.list_deployments(name)}:
            raise SpecError(
                f"names deployment '{default}', which endpoint '{name}' does not have; create it first",
                field="defaults.deployment_name",
            )
        stored = {k: v for k, v in spec.to_yaml_dict().items() if k not in ("name", "auth_mode")}
        record = self.store.update_endpoint(name, kind="batch", spec=stored, auth_mode=spec.auth_mode)
        return self.endpoint_json(record)

    def delete_endpoint(self, name: str) -> None:
        """Delete the endpoint and its deployments; its jobs stay, as history (queued ones are canceled)."""
        self.endpoint(name)
        for job in self.store.list_jobs(name):
            if job.status not in TERMINAL_JOB_STATUSES:
                self.store.update_job(job.name, status="Canceled", error="its endpoint was deleted")
        self.store.delete_endpoint(name, "batch")

    def credentials(self, name: str) -> dict[str, str]:
        """Keys (``auth_mode: key``) or a fresh token (``aml_token``/``aad_token``) for invoking the endpoint."""
        return credentials_json(self.endpoint(name))

    def credentials_of(self, name: str) -> Credentials:
        """What the invoke call accepts, for the REST layer's check."""
        record = self.endpoint(name)
        return Credentials(record.auth_mode, record.primary_key, record.secondary_key, record.token_secret)

    # --- deployments -------------------------------------------------------------------------------

    def list_deployments(self, endpoint: str) -> list[dict[str, Any]]:
        """The deployments of one batch endpoint."""
        self.endpoint(endpoint)
        return [self.deployment_json(record) for record in self.store.list_deployments(endpoint)]

    def get_deployment(self, endpoint: str, name: str) -> dict[str, Any]:
        """One batch deployment."""
        self.endpoint(endpoint)
        return self.deployment_json(self.store.get_deployment(endpoint, name))

    def put_deployment(
        self, endpoint: str, name: str, body: Mapping[str, Any], *, set_default: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """Create or replace a batch deployment; returns it and whether it is new.

        One whose jobs run in an environment built here (it declares one, or its MLflow model has its own
        requirements), or that has a local MLflow model, stays ``Creating`` (``Updating``) until the scheduler has
        built that environment and started spare workers for its first job, their imports done
        (:mod:`tiffin.batch.provision`), then is ``Succeeded``, or ``Failed`` with uv's message as ``reason``. Any
        other is ``Succeeded`` once its spec is valid and its code and model are where it says. It becomes the
        endpoint's default with ``set_default``, or when the endpoint has none yet.
        """
        body = _without(body, _ANSWER_FIELDS)
        for field, expected in (("name", name), ("endpoint_name", endpoint)):
            if body.get(field, expected) != expected:
                raise SpecError(f"is {body[field]!r} but the URL names '{expected}'; make them agree", field=field)
        target = self.endpoint(endpoint)
        source = f"batch deployment '{name}'"
        spec = parse_spec({**body, "name": name, "endpoint_name": endpoint}, BatchDeployment, source).spec
        # As for online deployments: references pinned now (a missing asset refused), the assets they name
        # checked, and the compute's cap on instances applied (tiffin.assets.resolve).
        stored = pin_references(self.store, spec.to_yaml_dict(), source=source)
        runnable = parse_spec(inline_assets(self.store, stored, source=source), BatchDeployment, source).spec
        _check_runnable(runnable)
        self._check_workers(runnable)
        check_compute(self.store, runnable.compute, runnable.instance_count, source=source)
        record = self.store.put_deployment(endpoint, name, "batch", stored)
        created = record.state == "Creating"
        if not needs_provisioning(runnable):  # else the scheduler provisions it (on_change wakes it)
            record = self.store.set_deployment_state(endpoint, name, "Succeeded") or record
        defaults = target.spec.get("defaults") or {}
        if set_default or not defaults.get("deployment_name"):
            self.store.update_endpoint(
                endpoint, kind="batch", spec={**target.spec, "defaults": {"deployment_name": name}}
            )
        return self.deployment_json(record), created

    def delete_deployment(self, endpoint: str, name: str) -> None:
        """Delete a batch deployment; not the endpoint's default while others could take its place."""
        target = self.endpoint(endpoint)
        default = (target.spec.get("defaults") or {}).get("deployment_name")
        others = [d.name for d in self.store.list_deployments(endpoint) if d.name != name]
        if default == name and others:
            raise ConflictError(
                f"deployment '{name}' is the default of batch endpoint '{endpoint}'; make another the default "
                f"first: `tiffin batch-endpoint update -n {endpoint} --set defaults.deployment_name={others[0]}`"
            )
        self.store.delete_deployment(endpoint, name)
        if default == name:
            self.store.update_endpoint(
                endpoint, kind="batch", spec={**target.spec, "defaults": {"deployment_name": None}}
            )


def _check_runnable(deployment: BatchDeployment) -> None:
    """Refuse at creation what no job could run: no script and no MLflow model, a missing script or model."""
    from tiffin.runners.factory import check_model, is_mlflow_model

    check_model(deployment)
    code = deployment.code_configuration
    if code is not None and code.scoring_script:
        script = Path(code.code) / code.scoring_script
        if not script.is_file():
            raise SpecError(f"scoring script {script} does not exist", field="code_configuration.scoring_script")
        return
    if not is_mlflow_model(deployment):
        raise SpecError(
            "a batch deployment needs code_configuration (code + scoring_script), or an MLflow model "
            "(model.type: mlflow_model) to run without one",
            field="code_configuration",
        )
