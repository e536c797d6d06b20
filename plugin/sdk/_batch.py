"""``client.batch_endpoints``, ``client.batch_deployments`` and ``client.jobs``: batch scoring, as azure-ai-ml's
``MLClient`` groups of the same names."""

from __future__ import annotations

import io
import os
import tarfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tiffin.errors import NotFoundError, RequestTimeoutError, SpecError, TiffinError

from ._poller import Poller
from ._transport import Transport, path

if TYPE_CHECKING:  # imported where used: get, list, invoke and stream need no spec models (pydantic)
    from tiffin.specs import BatchDeployment, BatchEndpoint

__all__ = ["BatchDeploymentOperations", "BatchEndpointOperations", "JobOperations"]

_ROOT = "/batch-endpoints"
# The store's TERMINAL_JOB_STATUSES; not imported from there, which would load SQLAlchemy and Alembic into
# every client (and every `import tiffin`).
_ENDED = frozenset({"Completed", "Failed", "Canceled"})


def _spec(kind: type, value: Any, label: str) -> dict[str, Any]:
    """The whole spec, validated here first so a mistake is reported before anything is sent."""
    from tiffin.specs import parse_spec

    if isinstance(value, kind):
        return value.to_yaml_dict()  # type: ignore[attr-defined]
    return parse_spec(dict(value), kind, label).spec.to_yaml_dict()


def absolute_input(value: str) -> str:
    """A local input path (folder, file or glob) made absolute: the server does not share our directory. URIs,
    ``azureml:`` references and a data asset's resource id (``/subscriptions/.../data/NAME/versions/V``, as
    ``client.data.get(...)["id"]`` gives it) go as they are."""
    if "://" in value or value.startswith(("azureml:", "/subscriptions/")):
        return value
    return os.path.abspath(os.path.expanduser(value))


class BatchEndpointOperations:
    """Batch endpoints; methods return plain dicts shaped as ``tiffin batch-endpoint show`` prints them."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create_or_update(self, endpoint: BatchEndpoint | Mapping[str, Any]) -> dict[str, Any]:
        """Create the endpoint, or change the fields given if it exists."""
        from tiffin.specs import BatchEndpoint

        data = _spec(BatchEndpoint, endpoint, "batch endpoint")
        name = data["name"]
        try:
            self.get(name)
        except NotFoundError:
            return self._t.request("POST", _ROOT, json=data)
        if isinstance(endpoint, BatchEndpoint):
            given = endpoint.model_dump(mode="json", exclude_unset=True)
        else:
            given = dict(endpoint)
        return self.update(name, {k: v for k, v in given.items() if k != "name"})

    def create(self, endpoint: BatchEndpoint | Mapping[str, Any]) -> dict[str, Any]:
        """Create the endpoint; ConflictError if the name is taken."""
        from tiffin.specs import BatchEndpoint

        return self._t.request("POST", _ROOT, json=_spec(BatchEndpoint, endpoint, "batch endpoint"))

    def update(self, name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Change some fields (description, tags, auth_mode, ``defaults.deployment_name``)."""
        return self._t.request("PATCH", path("batch-endpoints", name), json=dict(changes))

    def get(self, name: str) -> dict[str, Any]:
        """One batch endpoint."""
        return self._t.request("GET", path("batch-endpoints", name))

    def list(self) -> list[dict[str, Any]]:
        """Every batch endpoint."""
        return self._t.request("GET", _ROOT)

    def delete(self, name: str) -> None:
        """Delete the endpoint and its deployments (its jobs stay, as history)."""
        self._t.request("DELETE", path("batch-endpoints", name))

    def get_keys(self, name: str) -> dict[str, str]:
        """Keys or a fresh token for invoking the endpoint over REST."""
        return self._t.request("GET", path("batch-endpoints", name, "credentials"))

    def invoke(
        self,
        endpoint_name: str,
        input: str | os.PathLike[str] | Mapping[str, Any] | Any,
        *,
        deployment_name: str | None = None,
        input_type: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        job_name: str | None = None,
        settings: Mapping[str, Any] | None = None,
        output_path: str | os.PathLike[str] | None = None,
    ) -> dict[str, Any]:
        """Start a job over ``input``; returns the queued job at once.

        ``input`` is a folder, a file or a glob pattern; a registered data asset (``"azureml:NAME@latest"``,
        ``"azureml:NAME:V"``, its resource id); ``azureml://datastores/NAME/paths/PATH``; an ``http(s)://`` file
        URL; or, as azure-ai-ml takes it, an object with ``path`` (and ``type``: ``uri_folder``/``uri_file``),
        such as ``Input(type="uri_folder", path=data["id"])`` or ``{"type": "uri_file", "path": URL}``.

        ``settings`` changes the deployment's settings for this job only (``{"mini_batch_size": 20,
        "instance_count": 2, "output_file_name": "scores.csv"}``); ``output_path`` is a folder the output
        file is written into instead of the job's own folder.
        """
        if not isinstance(input, str | os.PathLike):  # Azure's Input(type=..., path=...), or a mapping like it
            given = input if isinstance(input, Mapping) else {"path": getattr(input, "path", None),
                                                              "type": getattr(input, "type", None)}  # fmt: skip
            if not given.get("path"):
                raise SpecError("needs a path: a folder, a file, a data asset reference or a URL", field="input")
            input, input_type = given["path"], input_type or given.get("type")
        body: dict[str, Any] = {"input": absolute_input(os.fspath(input))}
        for key, value in (("deployment_name", deployment_name), ("input_type", input_type), ("job_name", job_name)):
            if value is not None:
                body[key] = value
        if inputs:
            body["inputs"] = dict(inputs)
        if settings:
            body["settings"] = dict(settings)
        if output_path is not None:
            body["output_path"] = absolute_input(os.fspath(output_path))
        return self._t.request("POST", path("batch-endpoints", endpoint_name, "jobs"), json=body)

    def list_jobs(self, endpoint_name: str) -> list[dict[str, Any]]:
        """The endpoint's jobs, oldest first."""
        return self._t.request("GET", path("batch-endpoints", endpoint_name, "jobs"))


class BatchDeploymentOperations:
    """Batch deployments of batch endpoints."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def create_or_update(
        self,
        deployment: BatchDeployment | Mapping[str, Any],
        endpoint_name: str | None = None,
        *,
        set_default: bool = False,
        wait: bool = True,
        timeout: float = 1800,
    ) -> dict[str, Any]:
        """Create or replace the deployment and, with ``wait``, return once it is ``Succeeded``.

        One that runs in an environment (declared, or its MLflow model's own) is ``Creating`` (``Updating``) while
        the server builds it and starts workers for its first job; :class:`TiffinError` with uv's message if that
        fails (``Failed``), or after ``timeout`` seconds. Any other is ``Succeeded`` at once. ``wait=False``
        returns the deployment as just stored."""
        if wait:
            return self.begin_create_or_update(
                deployment, endpoint_name, set_default=set_default, timeout=timeout
            ).result()
        return self._put(deployment, endpoint_name, set_default=set_default)

    def begin_create_or_update(
        self,
        deployment: BatchDeployment | Mapping[str, Any],
        endpoint_name: str | None = None,
        *,
        set_default: bool = False,
        timeout: float = 1800,
    ) -> Poller[dict[str, Any]]:
        """Send the deployment now; ``.result()`` waits as :meth:`create_or_update` does."""
        stored = self._put(deployment, endpoint_name, set_default=set_default)
        return Poller(lambda: self.wait(stored["name"], stored["endpoint_name"], timeout=timeout))

    def wait(self, name: str, endpoint_name: str, timeout: float = 1800) -> dict[str, Any]:
        """Poll the deployment until it is ``Succeeded`` (returned) or ``Failed`` (raised, with why)."""
        started = time.monotonic()
        while True:
            current = self.get(name, endpoint_name)
            state = current.get("provisioning_state")
            if state == "Succeeded":
                return current
            if state == "Failed":
                raise TiffinError(
                    f"batch deployment '{name}' on endpoint '{endpoint_name}' failed: "
                    f"{current.get('reason') or 'no reason recorded'}; see its environment's build with "
                    f"`tiffin batch-deployment show -n {name} -e {endpoint_name}`, fix it and update it"
                )
            if time.monotonic() - started >= timeout:
                raise TiffinError(
                    f"batch deployment '{name}' on endpoint '{endpoint_name}' is still {state} after {timeout:g}s; "
                    f"follow it with `tiffin batch-deployment show -n {name} -e {endpoint_name}`"
                )
            time.sleep(0.1 if time.monotonic() - started < 5 else 0.5)

    def _put(
        self, deployment: BatchDeployment | Mapping[str, Any], endpoint_name: str | None, *, set_default: bool
    ) -> dict[str, Any]:
        from tiffin.specs import BatchDeployment

        data = dict(deployment.to_yaml_dict() if isinstance(deployment, BatchDeployment) else deployment)
        if endpoint_name:
            data["endpoint_name"] = endpoint_name
        data = _spec(BatchDeployment, data, f"batch deployment '{data.get('name')}'")
        endpoint = data.get("endpoint_name")
        if not endpoint:
            raise SpecError("say which batch endpoint the deployment belongs to", field="endpoint_name")
        route = path("batch-endpoints", endpoint, "deployments", data["name"])
        return self._t.request("PUT", route, json=data, params={"set_default": 1} if set_default else None)

    def get(self, name: str, endpoint_name: str) -> dict[str, Any]:
        """One batch deployment."""
        return self._t.request("GET", path("batch-endpoints", endpoint_name, "deployments", name))

    def list(self, endpoint_name: str) -> list[dict[str, Any]]:
        """The endpoint's deployments."""
        return self._t.request("GET", path("batch-endpoints", endpoint_name, "deployments"))

    def list_jobs(self, name: str, endpoint_name: str) -> list[dict[str, Any]]:
        """The jobs this deployment ran or will run, oldest first (as ``az ml batch-deployment list-jobs``)."""
        return self._t.request("GET", path("batch-endpoints", endpoint_name, "deployments", name, "jobs"))

    def delete(self, name: str, endpoint_name: str) -> None:
        """Delete the deployment (not the default of an endpoint that has others)."""
        self._t.request("DELETE", path("batch-endpoints", endpoint_name, "deployments", name))


class JobOperations:
    """Batch jobs: show, list, follow, cancel, download."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def get(self, name: str) -> dict[str, Any]:
        """The job: ``status`` (Queued, Running, Completed, Failed, Canceled), ``progress``, ``outputs``, ``errors``."""
        return self._t.request("GET", path("jobs", name))

    def list(self, endpoint_name: str | None = None) -> list[dict[str, Any]]:
        """Every job, or one endpoint's, oldest first."""
        if endpoint_name is not None:
            return self._t.request("GET", path("batch-endpoints", endpoint_name, "jobs"))
        return self._t.request("GET", "/jobs")

    def cancel(self, name: str) -> dict[str, Any]:
        """Cancel a queued or running job."""
        return self._t.request("POST", path("jobs", name, "cancel"))

    def read_log(self, name: str, offset: int = 0) -> tuple[str, int]:
        """The job log from byte ``offset``; the text and the offset to read from next."""
        response = self._t.response("GET", path("jobs", name, "log"), params={"offset": offset})
        next_offset = int(response.headers.get("x-tiffin-log-offset", offset))
        return response.content.decode("utf-8", errors="replace"), next_offset

    def stream(
        self,
        name: str,
        *,
        out: TextIO | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        interval: float = 0.5,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Follow the job to its end: its log to ``out``, each state to ``on_progress``; the final job."""
        offset = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get(name)
            text, offset = self.read_log(name, offset)
            if text and out is not None:
                out.write(text)
                out.flush()
            if on_progress is not None:
                on_progress(job)
            if job["status"] in _ENDED:
                text, offset = self.read_log(name, offset)  # what was written while it finished
                if text and out is not None:
                    out.write(text)
                    out.flush()
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise RequestTimeoutError(f"job '{name}' is still {job['status']} after {timeout:g}s")
            time.sleep(interval)

    def wait(self, name: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job ends; the final job."""
        return self.stream(name, timeout=timeout)

    def download(self, name: str, download_path: str | os.PathLike[str] = ".", output_name: str | None = None) -> Path:
        """Write the job's output into ``download_path``; returns the file (or folder) written.

        With ``output_name`` (Azure's ``score``), as azure-ai-ml's ``jobs.download`` lays it out:
        ``download_path/named-outputs/score/predictions.csv``. Without it, the ``score`` output's file goes
        straight into ``download_path`` (``download_path/predictions.csv``).
        """
        if output_name is None:
            return self.save_output(name, "score", download_path)
        return self.save_output(name, output_name, Path(download_path) / "named-outputs" / output_name)

    def save_output(self, name: str, output_name: str, folder: str | os.PathLike[str]) -> Path:
        """Write output ``output_name`` of the job into ``folder`` itself; returns the file (or folder) written.

        An output that is a folder (what a ``summary_only`` job's scoring code wrote into
        ``AZUREML_BI_OUTPUT_PATH``) comes as a gzip'd tar and is unpacked into ``folder``.
        """
        kind = ((self.get(name).get("outputs") or {}).get(output_name) or {}).get("type")
        response = self._t.response("GET", path("jobs", name, "outputs", output_name))
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        if kind == "uri_folder":
            with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
                tar.extractall(target, filter="data")  # plain files under the folder only
            return target
        filename = _attachment_name(response.headers.get("content-disposition", "")) or "predictions.csv"
        (target / filename).write_bytes(response.content)
        return target / filename


def _attachment_name(disposition: str) -> str | None:
    for part in disposition.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "filename" and value:
            return os.path.basename(value.strip('"'))
    return None
