"""The control plane's operations on batch jobs, independent of HTTP: invoke (queue a job), list, show, cancel,
and read a job's log and outputs.

As :mod:`tiffin.api.batch` does for batch endpoints and deployments (:class:`~tiffin.api.batch.BatchControl`
extends :class:`BatchJobs` with them): plain JSON-ready values in and out, errors raised as
:class:`~tiffin.errors.TiffinError` subclasses, blocking on the store. Jobs themselves run in
:class:`tiffin.batch.BatchScheduler`; invoking one here only queues it, with the deployment's spec as it is now
and the input files resolved.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tiffin import config
from tiffin.assets.resolve import check_compute, inline_assets
from tiffin.batch import INPUT_TYPES, datastore_path, job_progress
from tiffin.batch.inputs import is_within
from tiffin.batch.outputs import folder_archive
from tiffin.batch.sources import InputPolicy, resolve_job_input
from tiffin.errors import ConflictError, NotFoundError, SpecError, TiffinError
from tiffin.paths import job_dir, job_log_path
from tiffin.resource_ids import job_id
from tiffin.specs import BatchDeployment, parse_spec, with_job_settings
from tiffin.store import TERMINAL_JOB_STATUSES, EndpointRecord, JobRecord, Store

__all__ = ["MAX_ERRORS_SHOWN", "BatchJobs", "iso_or_none"]

MAX_ERRORS_SHOWN = 20
"""How many mini-batch errors ``job show`` lists (the job log has them all)."""

_INVOKE_FIELDS = frozenset({"input", "input_type", "deployment_name", "inputs", "job_name", "settings", "output_path"})
# Azure's job names: letters, digits, '-' and '_'. A name, never a path: the job's folder is named after it.
_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}")
# A literal input NAME reaches the scoring code as the variable AZUREML_BI_NAME.
_LITERAL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_WORKER_FIELDS = ("instance_count", "max_concurrency_per_instance")


def iso_or_none(value: Any) -> str | None:
    """A stored time as ISO 8601 text, ``None`` when there is none (a job not started yet)."""
    return value.isoformat() if value is not None else None


class BatchJobs:
    """Batch jobs over one :class:`Store`; ``home`` is ``TIFFIN_HOME``.

    The server's limits default to its settings (:mod:`tiffin.config`): ``input_roots``
    (``TIFFIN_INPUT_ROOTS``: where an endpoint credential's inputs may be, besides ``home/datastores``),
    ``max_workers`` and ``max_instances`` (a job's ``instance_count * max_concurrency_per_instance`` and
    ``instance_count``), ``max_input_files`` (one job's input files), ``url_prefixes``
    (``TIFFIN_INPUT_URL_PREFIXES``: where an endpoint credential's ``http(s)://`` inputs may be).
    """

    def __init__(
        self,
        store: Store,
        *,
        home: Path,
        input_roots: Sequence[Path] | None = None,
        max_workers: int | None = None,
        max_instances: int | None = None,
        max_input_files: int | None = None,
        url_prefixes: Sequence[str] | None = None,
    ) -> None:
        self.store = store
        self.home = home
        self.datastores = home / "datastores"
        self.input_roots = (self.datastores, *(config.input_roots() if input_roots is None else input_roots))
        self.url_prefixes = tuple(config.input_url_prefixes() if url_prefixes is None else url_prefixes)
        self.max_workers = max_workers or config.max_workers()
        self.max_instances = max_instances or config.max_instances()
        self.max_input_files = max_input_files or config.max_input_files()

    def endpoint(self, name: str) -> EndpointRecord:
        """The batch endpoint ``name`` (:class:`NotFoundError` if missing or an online endpoint)."""
        return self.store.get_endpoint(name, "batch")

    def job_json(self, record: JobRecord) -> dict[str, Any]:
        """A job as ``az ml job show`` prints one (with Azure's status names), plus its progress and errors."""
        batches = self.store.mini_batches(record.name)
        errors = [
            {"mini_batch": b.index, "items": b.items, "attempts": b.attempts, "error": b.error}
            for b in batches
            if b.error and b.status in ("failed", "pending", "running")
        ]
        progress = job_progress(self.store, record.name).as_dict() if batches else (record.progress or {})
        inputs = dict(record.inputs)
        files = inputs.pop("files", [])
        output_path = inputs.pop("output_path", None)
        outputs = record.outputs or {}
        if not outputs and output_path:  # not written yet: say where it will be, as Azure shows output_path
            outputs = {"score": {"type": "uri_folder", "path": output_path}}
        return {
            "id": job_id(record.name),
            "name": record.name,
            "type": "batch",
            "status": record.status,
            "endpoint_name": record.endpoint_name,
            "deployment_name": record.deployment_name,
            "inputs": {**inputs, "input_files": len(files)},
            "outputs": outputs,
            "error": record.error,
            "errors": errors[:MAX_ERRORS_SHOWN],
            "progress": progress,
            "log": _log_of(self.home, record.name),
            "creation_context": {"created_at": iso_or_none(record.created_at)},
            "start_time": iso_or_none(record.started_at),
            "end_time": iso_or_none(record.finished_at),
        }

    def endpoint_of_job(self, job: str) -> str:
        """The batch endpoint that job ``job`` belongs to (its key may read the job)."""
        return self.store.get_job(job).endpoint_name

    def invoke(self, endpoint: str, body: Mapping[str, Any], *, admin: bool) -> dict[str, Any]:
        """Queue a job: ``{"input": PATH, "input_type"?, "deployment_name"?, "inputs"?, "job_name"?,
        "settings"?, "output_path"?}``.

        ``input`` is a folder, a file or a glob pattern on the server's machine (absolute, or relative to
        the server's working directory), a datastore URI, a registered data asset (``azureml:NAME@latest``,
        ``azureml:NAME:V``, its id) or an ``http(s)://`` file URL (see :mod:`tiffin.batch.sources`); ``inputs``
        are literal values kept with the job
        and given to the scoring code as ``AZUREML_BI_<NAME>`` variables. ``settings`` changes the
        deployment's settings for this job only (``{"mini_batch_size": 20, "instance_count": 2,
        "output_file_name": "x.csv"}``, see :func:`tiffin.specs.with_job_settings`); ``output_path`` is a
        folder to write the output file into, instead of the job's own folder.

        ``admin`` says the caller holds the admin token, and may name any local path the server's user can
        read and set environment variables. Otherwise (an endpoint's key or token) inputs come from the
        datastores and :attr:`input_roots` only, with one answer for absent and out-of-reach inputs, the output
        goes into a datastore, and ``environment_variables`` cannot be set.
        """
        unknown = sorted(set(body) - _INVOKE_FIELDS)
        if unknown:
            raise SpecError(f"is not an invoke field; send {', '.join(sorted(_INVOKE_FIELDS))}", field=unknown[0])
        target = self.endpoint(endpoint)
        name = body.get("deployment_name") or (target.spec.get("defaults") or {}).get("deployment_name")
        if not name:
            raise ConflictError(
                f"batch endpoint '{endpoint}' has no default deployment; pass --deployment-name or create one with "
                f"`tiffin batch-deployment create --endpoint-name {endpoint} --set-default -f deployment.yml`"
            )
        if not isinstance(name, str):
            raise SpecError(f"must be the name of a deployment (got {name!r})", field="deployment_name")
        deployment = self.store.get_deployment(endpoint, name)
        source = body.get("input")
        if not isinstance(source, str) or not source:
            raise SpecError("is required: a folder, a file or a glob pattern of input files", field="input")
        input_type = body.get("input_type")
        if input_type is not None and input_type not in INPUT_TYPES:
            raise SpecError(f"must be one of {', '.join(INPUT_TYPES)} (got {input_type!r})", field="input_type")
        literals = _literals(body.get("inputs"))
        overrides = body.get("settings") or {}
        if not isinstance(overrides, Mapping):
            example = '{"mini_batch_size": 20}'
            raise SpecError(f"must map settings to this job's values, for example {example}", field="settings")
        if not admin:
            _refuse_environment(overrides)
        job_name = body.get("job_name")
        if job_name is not None and not (isinstance(job_name, str) and _JOB_NAME.fullmatch(job_name)):
            raise SpecError(
                f"must be a name, not a path: letters, digits, '-' and '_', starting with a letter or digit, at most "
                f"255 characters (got {job_name!r})",
                field="job_name",
            )
        output_path = _output_folder(body.get("output_path"), self.home)
        if output_path is not None and not admin and not is_within(output_path, [self.datastores]):
            raise SpecError(
                "an endpoint's key or token writes outputs into datastores only: give "
                "azureml://datastores/NAME/paths/PATH; another folder takes the admin token",
                field="output_path",
            )
        # The job runs what the deployment's pinned references name, fixed now (tiffin.assets.resolve): its
        # workers see the registered model's stored files, never a reference.
        spec = inline_assets(self.store, deployment.spec, source=f"batch deployment '{name}'")
        if overrides:  # validated whole, so a bad value is refused here with its field, not when the job runs
            merged = with_job_settings(spec, overrides)
            # A misspelt setting is refused here, with the setting it most likely means.
            loaded = parse_spec(merged, BatchDeployment, f"this job's settings (deployment '{name}')")
            if any(field in str(key) for key in overrides for field in _WORKER_FIELDS):
                # Only when the job asks: a deployment stored over today's caps is clamped when it runs.
                self._check_workers(loaded.spec)
            # More instances than the job's compute has (max_instances): refused, as at deployment create.
            if any("instance_count" in str(key) for key in overrides):
                check_compute(self.store, loaded.spec.compute, loaded.spec.instance_count, source="this job")
            spec = loaded.spec.to_yaml_dict()
        # Listing the input is the costly check (up to TIFFIN_MAX_INPUT_FILES files, 10 s): last.
        policy = InputPolicy(admin, self.input_roots, self.url_prefixes, self.max_input_files)
        given = resolve_job_input(source, input_type, store=self.store, home=self.home, policy=policy)
        if literals:
            settings = dict(spec.get("settings") or {})
            env = dict(settings.get("environment_variables") or {})
            env.update({f"AZUREML_BI_{k.upper()}": str(v) for k, v in literals.items()})
            spec["settings"] = {**settings, "environment_variables": env}
        job_name = job_name or f"batchjob-{uuid.uuid4()}"
        inputs = {"input": source, **({"literals": dict(literals)} if literals else {}),
                  **({"output_path": str(output_path)} if output_path else {}), **given.as_inputs()}  # fmt: skip
        record = self.store.create_job(job_name, endpoint, name, inputs, spec=spec)
        return self.job_json(record)

    def _check_workers(self, deployment: BatchDeployment) -> None:
        """Refuse more instances or workers than the server allows, naming the field and the setting."""
        instances, per_instance = deployment.instance_count, deployment.max_concurrency_per_instance
        if instances > self.max_instances:
            raise SpecError(
                f"is {instances}, over this server's limit of {self.max_instances} ({config.MAX_INSTANCES_ENV}); "
                "ask for fewer, or raise the limit where tiffin serve runs",
                field="instance_count",
            )
        if instances * per_instance > self.max_workers:
            raise SpecError(
                f"is {per_instance}, and instance_count ({instances}) x max_concurrency_per_instance = "
                f"{instances * per_instance} workers, over this server's limit of {self.max_workers} "
                f"({config.MAX_WORKERS_ENV}); ask for fewer, or raise the limit where tiffin serve runs",
                field="max_concurrency_per_instance",
            )

    def list_jobs(self, endpoint: str | None = None, deployment: str | None = None) -> list[dict[str, Any]]:
        """Jobs, oldest first; of one batch endpoint when ``endpoint`` is given, and of one of its deployments
        when ``deployment`` is too."""
        if endpoint is not None:
            self.endpoint(endpoint)
        if deployment is not None:
            if endpoint is None:
                raise TypeError("a deployment's jobs need its endpoint's name")
            self.store.get_deployment(endpoint, deployment)  # a 404 naming it, not an empty list
        records = self.store.list_jobs(endpoint, deployment_name=deployment)
        return [self.job_json(record) for record in records]

    def get_job(self, name: str) -> dict[str, Any]:
        """One job."""
        return self.job_json(self.store.get_job(name))

    def cancel_job(self, name: str) -> dict[str, Any]:
        """Cancel a queued or running job (its workers stop within a second); a finished job is left as it is."""
        job = self.store.get_job(name)
        if job.status in TERMINAL_JOB_STATUSES:
            raise ConflictError(f"job '{name}' already ended ({job.status}); there is nothing to cancel")
        self.store.update_job(name, expected_status=job.status, status="Canceled", error="canceled by the user")
        return self.get_job(name)

    def job_log(self, name: str, offset: int) -> tuple[bytes, int]:
        """The job log from byte ``offset`` on (at most 1 MiB) and the offset to ask for next."""
        self.store.get_job(name)
        path = job_log_path(self.home, name)
        if not path.exists():
            return b"", offset
        with open(path, "rb") as log:
            log.seek(offset)
            data = log.read(1 << 20)
        return data, offset + len(data)

    def job_output(self, name: str, output_name: str = "score") -> Path:
        """The file of a completed job's named output (Azure's ``score``); for an output that is a folder (what
        a ``summary_only`` job's scoring code wrote into ``AZUREML_BI_OUTPUT_PATH``), a gzip'd tar of its files."""
        job = self.store.get_job(name)
        output = (job.outputs or {}).get(output_name)
        if output is None:
            if job.status != "Completed":
                raise ConflictError(f"job '{name}' is {job.status}; its outputs appear once it has Completed")
            raise NotFoundError(
                f"job '{name}' has no output '{output_name}' (output_action summary_only writes none); "
                f"outputs: {', '.join(job.outputs or {}) or 'none'}"
            )
        path = Path(output["path"])
        if output.get("type") == "uri_folder":
            own = job_dir(self.home, name)
            if not is_within(path, [own]):
                # A folder given as output_path may hold files no job wrote (a datastore's): not handed out here.
                raise NotFoundError(
                    f"job '{name}' wrote its output files into {path}, a folder of yours, not of the job; read them "
                    "there (job download hands out a folder output only when it is the job's own)"
                )
            if not path.is_dir():
                raise NotFoundError(f"the output folder of job '{name}' is gone from {path}")
            return folder_archive(path, own / f"output-{output_name}.tar.gz")
        if not path.is_file():
            raise NotFoundError(f"the output file of job '{name}' is gone from {path}")
        return path


def _log_of(home: Path, job: str) -> str | None:
    try:
        return str(job_log_path(home, job))
    except TiffinError:  # a job stored before names were checked has no folder; it is listed all the same
        return None


def _literals(value: Any) -> dict[str, str | int | float | bool]:
    """An invoke's ``inputs``: names that can follow ``AZUREML_BI_`` in a variable's name, literal values."""
    literals = value or {}
    if not isinstance(literals, Mapping) or not all(
        isinstance(k, str) and _LITERAL_NAME.fullmatch(k) and isinstance(v, str | int | float | bool)
        and not (isinstance(v, str) and "\0" in v)
        for k, v in literals.items()
    ):  # fmt: skip
        raise SpecError(
            "must map names (letters, digits and '_') to literal values (strings, numbers, booleans)", field="inputs"
        )
    return dict(literals)


def _refuse_environment(overrides: Mapping[str, Any]) -> None:
    """Environment variables reach the scoring code's process (AZUREML_MODEL_DIR, LD_PRELOAD...): the admin's."""
    for key in overrides:
        if str(key).removeprefix("settings.").partition(".")[0] == "environment_variables":
            raise SpecError(
                "cannot be set with an endpoint's key or token; only the admin token sets environment variables "
                "(or put them in the deployment)",
                field=str(key),
            )


def _output_folder(value: Any, home: Path) -> Path | None:
    """``output_path`` of an invoke as an absolute folder: relative to the server's directory, as inputs,
    or a datastore URI standing for a folder of tiffin's home."""
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise SpecError("must be a folder path", field="output_path")
    folder = datastore_path(value, home, field="output_path")
    if folder is None and ("://" in value or value.startswith(("azureml:", "folder:"))):
        raise SpecError(
            f"{value} is a remote path; tiffin writes local files: give a folder on this machine, or "
            "azureml://datastores/NAME/paths/PATH (a folder of tiffin's home)",
            field="output_path",
        )
    folder = folder or Path(value).expanduser()
    folder = folder if folder.is_absolute() else Path.cwd() / folder
    if folder.exists() and not folder.is_dir():
        raise SpecError(f"{folder} is a file; give a folder (the file in it is named by output_file_name)",
                        field="output_path")  # fmt: skip
    return folder
