"""``tiffin batch-endpoint ...``, ``tiffin batch-deployment ...`` and ``tiffin job ...``: ``az ml``'s commands.

As for online endpoints: specs read with :func:`tiffin.specs.load_spec`, sent through
:class:`tiffin.sdk.TiffinClient`, output on stdout through :func:`~tiffin.cli.output.emit`, progress and
warnings on stderr. ``job stream`` shows a Rich progress bar on a terminal and follows the job log; it exits
0 when the job completed and 1 otherwise.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tiffin.cli.options import (
    DeploymentNameOpt,
    EndpointOpt,
    FileOpt,
    InstantNoWaitOpt,
    NameOpt,
    OptionalEndpointOpt,
    OptionalFileOpt,
    OptionalNameOpt,
    OutputOpt,
    QueryOpt,
    SetOpt,
    YesOpt,
    err,
)
from tiffin.cli.output import OutputFormat, emit
from tiffin.cli.shared import changed_here, confirm_delete, connect, load_with_flags
from tiffin.errors import ConflictError, NotFoundError, TiffinError
from tiffin.specs import BatchDeployment, BatchEndpoint, apply_overrides

__all__ = ["batch_deployment_app", "batch_endpoint_app", "job_app"]

batch_endpoint_app = typer.Typer(help="Manage batch endpoints (as `az ml batch-endpoint`).", no_args_is_help=True)
batch_deployment_app = typer.Typer(help="Manage batch deployments (as `az ml batch-deployment`).", no_args_is_help=True)
job_app = typer.Typer(help="Follow and manage batch jobs (as `az ml job`).", no_args_is_help=True)

JobNameOpt = Annotated[str, typer.Option("--name", "-n", help="Name of the job.")]
SetDefaultOpt = Annotated[bool, typer.Option("--set-default", help="Make it the endpoint's default deployment.")]


# --- batch-endpoint ------------------------------------------------------------------------------


@batch_endpoint_app.command("create")
def endpoint_create(
    name: OptionalNameOpt = None,
    file: OptionalFileOpt = None,
    no_wait: InstantNoWaitOpt = False,
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Create a batch endpoint (ready at once)."""
    if name is None and file is None:
        raise typer.BadParameter(
            "name the endpoint with --name, or give its YAML file with --file", param_hint="--name"
        )
    spec = load_with_flags(BatchEndpoint, file, set_, name=name).spec
    with connect() as client:
        emit(client.batch_endpoints.create(spec), output, query)


@batch_endpoint_app.command("update")
def endpoint_update(
    name: OptionalNameOpt = None,
    file: OptionalFileOpt = None,
    no_wait: InstantNoWaitOpt = False,
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Change a batch endpoint: the file's fields and --set (e.g. --set defaults.deployment_name=green)."""
    if file is not None:
        spec = load_with_flags(BatchEndpoint, file, set_, name=name).spec
        changes = {k: v for k, v in spec.model_dump(mode="json", exclude_unset=True).items() if k != "name"}
        name = spec.name
    elif name is not None and set_:
        with connect() as client:
            current = client.batch_endpoints.get(name)
        merged = apply_overrides(current, set_, source=f"batch endpoint '{name}'", kind=BatchEndpoint)
        changes = {k: v for k, v in merged.items() if k not in ("name", "scoring_uri", "kind")}
    else:
        raise typer.BadParameter("give --file, or --name with --set changes")
    with connect() as client:
        emit(client.batch_endpoints.update(name, changes), output, query)


@batch_endpoint_app.command("show")
def endpoint_show(name: NameOpt, output: OutputOpt = OutputFormat.json, query: QueryOpt = None) -> None:
    """Show a batch endpoint: scoring_uri, defaults.deployment_name, auth_mode..."""
    with connect() as client:
        emit(client.batch_endpoints.get(name), output, query)


@batch_endpoint_app.command("list")
def endpoint_list(output: OutputOpt = OutputFormat.json, query: QueryOpt = None) -> None:
    """List batch endpoints."""
    with connect() as client:
        emit(client.batch_endpoints.list(), output, query)


@batch_endpoint_app.command("delete")
def endpoint_delete(name: NameOpt, yes: YesOpt = False, no_wait: InstantNoWaitOpt = False) -> None:
    """Delete a batch endpoint and its deployments (jobs stay, as history; unfinished ones are canceled)."""
    with connect() as client:
        client.batch_endpoints.get(name)
        confirm_delete(f"batch endpoint '{name}' and all its deployments", yes)
        client.batch_endpoints.delete(name)


@batch_endpoint_app.command("invoke")
def endpoint_invoke(
    name: NameOpt,
    input: Annotated[
        str,
        typer.Option(
            "--input",
            "-i",
            help="A folder, a file or a glob pattern of input files; a registered data asset (azureml:NAME@latest, "
            "azureml:NAME:VERSION); azureml://datastores/NAME/paths/PATH; or an http(s):// file URL.",
        ),
    ],
    input_type: Annotated[
        str | None, typer.Option("--input-type", help="uri_folder or uri_file (default: what --input is).")
    ] = None,
    deployment_name: Annotated[
        str | None, typer.Option("--deployment-name", "-d", help="Run on this deployment, not the default.")
    ] = None,
    job_name: Annotated[
        str | None, typer.Option("--job-name", help="Name the job: letters, digits, - and _ (default: generated).")
    ] = None,
    mini_batch_size: Annotated[
        int | None, typer.Option("--mini-batch-size", min=1, help="Files (or rows) per mini-batch, for this job.")
    ] = None,
    instance_count: Annotated[int | None, typer.Option("--instance-count", min=1, help="Workers for this job.")] = None,
    output_path: Annotated[
        str | None, typer.Option("--output-path", help="Folder to write the output file into (default: the job's).")
    ] = None,
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Start a batch scoring job and print it at once (follow it with `tiffin job stream -n NAME`).

    --set inputs.NAME=VALUE passes literal inputs, given to the scoring code as AZUREML_BI_<NAME>. Any other
    --set changes a deployment setting for this job only, as on Azure: --set output_file_name=scores.csv,
    --set max_concurrency_per_instance=4, --set retry_settings.max_retries=1, --set error_threshold=10.
    """
    literals: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for item in set_ or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or key == "inputs.":
            raise typer.BadParameter(f"expected NAME=VALUE, not {item!r}", param_hint="--set")
        if key.startswith("inputs."):
            literals[key[len("inputs.") :]] = value
        else:  # read as YAML (20 is a number), as --set is everywhere else
            settings[key] = apply_overrides({}, [f"value={value}"], source="--set")["value"]
    if mini_batch_size is not None:
        settings["mini_batch_size"] = mini_batch_size
    if instance_count is not None:
        settings["instance_count"] = instance_count
    with connect() as client:
        job = client.batch_endpoints.invoke(
            name, input, deployment_name=deployment_name, input_type=input_type, inputs=literals or None,
            job_name=job_name, settings=settings or None, output_path=output_path,
        )  # fmt: skip
    emit(job, output, query)


@batch_endpoint_app.command("list-jobs")
def endpoint_list_jobs(name: NameOpt, output: OutputOpt = OutputFormat.json, query: QueryOpt = None) -> None:
    """List a batch endpoint's jobs, oldest first."""
    with connect() as client:
        emit(client.batch_endpoints.list_jobs(name), output, query)


@batch_endpoint_app.command("get-credentials")
def endpoint_get_credentials(name: NameOpt, output: OutputOpt = OutputFormat.json, query: QueryOpt = None) -> None:
    """Keys or a token for invoking the endpoint over REST (tiffin's addition: Azure uses Entra tokens)."""
    with connect() as client:
        emit(client.batch_endpoints.get_keys(name), output, query)


# --- batch-deployment ----------------------------------------------------------------------------


NoWaitOpt = Annotated[
    bool,
    typer.Option("--no-wait", help="Return without waiting for the deployment's environment to be built (then "
                 "`show` it)."),
]  # fmt: skip


def _put(spec: dict[str, Any], *, create: bool, set_default: bool, no_wait: bool = False) -> dict[str, Any]:
    name, endpoint = spec["name"], spec.get("endpoint_name")
    if not endpoint:
        raise TiffinError(f"say which batch endpoint deployment '{name}' belongs to: pass --endpoint-name E")
    with connect() as client:
        try:
            client.batch_deployments.get(name, endpoint)
            exists = True
        except NotFoundError:
            exists = False
        if create and exists:
            raise ConflictError(
                f"batch deployment '{name}' already exists on endpoint '{endpoint}'; change it with "
                f"`tiffin batch-deployment update -f FILE -n {name} -e {endpoint}`"
            )
        if not create and not exists:
            raise NotFoundError(f"batch deployment '{name}' not found on endpoint '{endpoint}'; create it first")
        return client.batch_deployments.create_or_update(spec, set_default=set_default, wait=not no_wait)


@batch_deployment_app.command("create")
def deployment_create(
    file: FileOpt,
    name: OptionalNameOpt = None,
    endpoint_name: OptionalEndpointOpt = None,
    set_default: SetDefaultOpt = False,
    no_wait: NoWaitOpt = False,
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Create a batch deployment (the endpoint's first becomes its default; --set-default makes any one so)."""
    spec = load_with_flags(BatchDeployment, file, set_, name=name, endpoint_name=endpoint_name).spec
    emit(_put(spec.to_yaml_dict(), create=True, set_default=set_default, no_wait=no_wait), output, query)


@batch_deployment_app.command("update")
def deployment_update(
    file: OptionalFileOpt = None,
    name: OptionalNameOpt = None,
    endpoint_name: OptionalEndpointOpt = None,
    set_default: SetDefaultOpt = False,
    no_wait: NoWaitOpt = False,
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Replace a batch deployment's spec (from --file, or its current one with --set changes)."""
    if file is not None:
        data = load_with_flags(BatchDeployment, file, set_, name=name, endpoint_name=endpoint_name).spec.to_yaml_dict()
    elif name is not None and endpoint_name is not None:
        with connect() as client:
            current = client.batch_deployments.get(name, endpoint_name)
        data = changed_here(current, set_, BatchDeployment, f"batch deployment '{name}'")
    else:
        raise typer.BadParameter("without --file, name the deployment with --name and --endpoint-name")
    emit(_put(data, create=False, set_default=set_default, no_wait=no_wait), output, query)


@batch_deployment_app.command("show")
def deployment_show(
    name: DeploymentNameOpt, endpoint_name: EndpointOpt, output: OutputOpt = OutputFormat.json, query: QueryOpt = None
) -> None:
    """Show a batch deployment."""
    with connect() as client:
        emit(client.batch_deployments.get(name, endpoint_name), output, query)


@batch_deployment_app.command("list-jobs")
def deployment_list_jobs(
    name: DeploymentNameOpt, endpoint_name: EndpointOpt, output: OutputOpt = OutputFormat.json, query: QueryOpt = None
) -> None:
    """List the jobs a batch deployment ran or will run, oldest first."""
    with connect() as client:
        emit(client.batch_deployments.list_jobs(name, endpoint_name), output, query)


@batch_deployment_app.command("list")
def deployment_list(endpoint_name: EndpointOpt, output: OutputOpt = OutputFormat.json, query: QueryOpt = None) -> None:
    """List a batch endpoint's deployments."""
    with connect() as client:
        emit(client.batch_deployments.list(endpoint_name), output, query)


@batch_deployment_app.command("delete")
def deployment_delete(
    name: DeploymentNameOpt, endpoint_name: EndpointOpt, yes: YesOpt = False, no_wait: InstantNoWaitOpt = False
) -> None:
    """Delete a batch deployment (make another the default first)."""
    with connect() as client:
        client.batch_deployments.get(name, endpoint_name)
        confirm_delete(f"batch deployment '{name}' of endpoint '{endpoint_name}'", yes)
        client.batch_deployments.delete(name, endpoint_name)


# --- job -----------------------------------------------------------------------------------------


@job_app.command("show")
def job_show(
    name: JobNameOpt,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
    web: Annotated[
        bool, typer.Option("--web", "-w", help="Print the studio page of the job's endpoint (Azure opens its studio).")
    ] = False,
) -> None:
    """Show a job: status, progress, outputs and mini-batch errors."""
    with connect() as client:
        job = client.jobs.get(name)
        if web:  # Azure's scripts pass --web; the job is still shown, as there
            # Printed, not opened: a server shell has no browser, and Python's webbrowser would start a text one.
            err.print(
                f"studio: {client.url}/studio/#/batch (sign in with the admin token); "
                f"follow the job here with `tiffin job stream -n {name}`",
                highlight=False,
            )
        emit(job, output, query)


@job_app.command("list")
def job_list(
    endpoint_name: Annotated[
        str | None, typer.Option("--endpoint-name", "-e", help="Only this batch endpoint's jobs.")
    ] = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """List jobs, oldest first."""
    with connect() as client:
        emit(client.jobs.list(endpoint_name), output, query)


@job_app.command("cancel")
def job_cancel(name: JobNameOpt, no_wait: InstantNoWaitOpt = False) -> None:
    """Cancel a queued or running job."""
    with connect() as client:
        client.jobs.cancel(name)


@job_app.command("download")
def job_download(
    name: JobNameOpt,
    download_path: Annotated[Path, typer.Option("--download-path", "-p", help="Folder to write into.")] = Path("."),
    output_name: Annotated[
        str | None,
        typer.Option("--output-name", help="Which output (Azure's: score), into DIR/named-outputs/NAME/ as az does."),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Every output of the job and its log (job.log), as Azure's --all.")
    ] = False,
) -> None:
    """Write a completed job's output file (output_file_name, default predictions.csv) into --download-path.

    With --output-name score, as `az ml job download --output-name score`: into
    DIR/named-outputs/score/predictions.csv. With --all: every output of an ended job, and its log as job.log.
    """
    with connect() as client:
        written = (
            _download_all(client, name, download_path)
            if all_
            else [client.jobs.download(name, download_path, output_name)]
        )
    for target in written:
        err.print(f"downloaded {target}", highlight=False)


def _download_all(client: Any, name: str, folder: Path) -> list[Path]:
    """Every output file of an ended job into ``folder``, and its log as ``job.log``; the files written."""
    job = client.jobs.get(name)
    status = job["status"]
    if status not in ("Completed", "Failed", "Canceled"):
        raise ConflictError(f"job '{name}' is {status}; download it once it has ended (`tiffin job stream`)")
    written = []
    if status != "Completed":
        err.print(f"job '{name}' is {status}: it has no outputs, only its log", highlight=False)
    for output in job.get("outputs") or {} if status == "Completed" else {}:
        try:
            written.append(client.jobs.save_output(name, output, folder))
        except NotFoundError:  # summary_only writes no output file: the log is all there is
            err.print(f"job '{name}' wrote no file for output '{output}'", highlight=False)
    log_path = folder / "job.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as log:
        offset = 0
        while True:  # the server answers at most 1 MiB at a time
            text, offset = client.jobs.read_log(name, offset)
            if not text:
                break
            log.write(text)
    written.append(log_path)
    return written


@job_app.command("stream")
def job_stream(name: JobNameOpt) -> None:
    """Follow a job to its end: its log, and a progress bar on a terminal. Exits 0 if it Completed, else 1."""
    with connect() as client, _JobProgress(name) as bar:
        job = client.jobs.stream(name, out=sys.stdout, on_progress=bar)
    status = job["status"]
    err.print(f"job '{name}': {status}" + (f": {job['error']}" if job.get("error") else ""), highlight=False)
    raise typer.Exit(0 if status == "Completed" else 1)


class _JobProgress:
    """Mini-batches done (and failed) of total, rows/s and time left, on stderr; a line per change elsewhere."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.monotonic()
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"),
            TimeRemainingColumn(), console=err, transient=False,
        )  # fmt: skip
        self.task = self.progress.add_task(f"job {name}", total=None, detail="")
        self.last: tuple[Any, ...] | None = None

    def __enter__(self) -> _JobProgress:
        if err.is_terminal:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, job: dict[str, Any]) -> None:
        p = job.get("progress") or {}
        total, done, failed = (
            p.get("mini_batches_total"),
            p.get("mini_batches_completed", 0),
            p.get("mini_batches_failed", 0),
        )
        rows = p.get("rows_scored", 0)
        rate = rows / max(1e-6, time.monotonic() - self.started)
        detail = f"{job['status']}, {failed} failed, {rows} rows ({rate:,.0f} rows/s)"
        self.progress.update(self.task, total=total or None, completed=done + failed, detail=detail)
        state = (job["status"], done, failed, total)
        if not err.is_terminal and state != self.last:
            err.print(f"job '{self.name}': {job['status']}, mini-batches {done + failed}/{total or '?'} "
                      f"({failed} failed), {rows} rows", highlight=False)  # fmt: skip
        self.last = state
