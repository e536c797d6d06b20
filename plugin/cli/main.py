"""The ``tiffin`` command. Exit codes: 0 ok, 1 user error (the message says what to fix), 2 usage."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from tiffin.cli.lazy import LazyGroup
from tiffin.cli.options import FileOpt, OutputOpt, QueryOpt, SetOpt, err, warn
from tiffin.cli.output import OutputFormat, emit
from tiffin.errors import TiffinError

__all__ = ["app", "main"]

app = typer.Typer(
    name="tiffin",
    help="Azure-ML-style endpoints and deployments for BentoML. Commands mirror `az ml`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # The command groups below serve, build and validate (online-endpoint, model, ...) are imported only when
    # run: see tiffin.cli.lazy.
    cls=LazyGroup,
)
replica_app = typer.Typer(help="Run one deployment replica (what the supervisor starts).", no_args_is_help=True)
app.add_typer(replica_app, name="replica")
triton_app = typer.Typer(help="NVIDIA Triton Inference Server for triton_model deployments.", no_args_is_help=True)
app.add_typer(triton_app, name="triton")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"tiffin {version('tiffin')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print tiffin's version and exit.")
    ] = False,
) -> None:
    """Azure-ML-style endpoints and deployments for BentoML. Commands mirror `az ml`."""


@replica_app.command("serve")
def replica_serve(
    file: FileOpt,
    host: Annotated[str, typer.Option(help="Interface to bind; loopback unless you mean otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 5001,
    uds: Annotated[str | None, typer.Option(help="Serve on this Unix socket instead of a port.")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: WORKER_COUNT from the deployment, else 1).")
    ] = None,
    set_: SetOpt = None,
) -> None:
    """Serve a deployment YAML with Azure's scoring contract (GET /, POST /score, GET /swagger.json)."""
    from tiffin.replica.server import serve

    raise typer.Exit(serve(file, host=host, port=port, uds=uds, workers=workers, overrides=set_ or ()))


@triton_app.command("install")
def triton_install(
    path: Annotated[
        Path | None, typer.Option("--path", help="Install here (default: $TIFFIN_HOME/triton, where tiffin looks).")
    ] = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Install tritonserver (from NVIDIA's nvidia-pytriton wheel, with the Python backend) for Triton deployments.

    It goes into a virtual environment of its own (the wheel pins numpy<2). Installed elsewhere than the
    default, point TIFFIN_TRITONSERVER at the folder. Running it again keeps a working install.
    """
    from tiffin.config import tiffin_home
    from tiffin.runners.tritonserver import TRITONSERVER_ENV, install_tritonserver

    target = (path or tiffin_home() / "triton").expanduser().resolve()
    err.print(f"installing tritonserver into {target} ...", highlight=False)
    install = install_tritonserver(target)
    emit(
        {"path": str(target), "tritonserver": str(install.binary), "backend_directory": str(install.backend_directory),
         "environment": {TRITONSERVER_ENV: str(target)}},
        output,
        query,
    )  # fmt: skip


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Interface to bind; loopback unless you mean otherwise.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port of the control plane and the gateway.")] = 7700,
    replica_cpus: Annotated[
        str | None,
        typer.Option(
            "--replica-cpus",
            help="Run replicas on these CPUs only (taskset syntax, e.g. 1-3) and the gateway on the others.",
        ),
    ] = None,
    max_jobs_per_deployment: Annotated[
        int,
        typer.Option("--max-jobs-per-deployment", min=1, help="Batch jobs of one deployment run at a time; more wait."),
    ] = 1,
    max_connections: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Open connections at most; over it the longest-idle one is closed, else 503 "
            "(env TIFFIN_MAX_CONNECTIONS; default 80% of the open-files limit, at most 65536).",
        ),
    ] = None,
    max_header_bytes: Annotated[
        int | None,
        typer.Option(min=1, help="Request line + headers at most; larger: 431 (env TIFFIN_MAX_HEADER_BYTES; 65536)."),
    ] = None,
    header_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds a request head may take to arrive; then 408 (env TIFFIN_HEADER_TIMEOUT; 10)."),
    ] = None,
    body_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds a request body may make no progress; then 408 (env TIFFIN_BODY_TIMEOUT; 30)."),
    ] = None,
    min_body_rate: Annotated[
        float | None,
        typer.Option(help="Bytes/s a request body must average after --body-timeout (env TIFFIN_MIN_BODY_RATE; 500)."),
    ] = None,
    keep_alive_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds an idle keep-alive connection stays open (env TIFFIN_KEEP_ALIVE_TIMEOUT; 15)."),
    ] = None,
) -> None:
    """Run the control plane (/api), the gateway (/endpoints/NAME) and the supervisor on one port.

    State lives in $TIFFIN_HOME (default ~/.tiffin), SQLite unless TIFFIN_STORE_URL names another
    database. Prints a line with 'ready' once it accepts requests; SIGINT/SIGTERM stop everything it started.
    """
    import os

    from tiffin.config import configure_logging, tiffin_home
    from tiffin.paths import prepare_home, server_log_path
    from tiffin.server import serve

    store_url = os.environ.get("TIFFIN_STORE_URL")
    home = tiffin_home()
    # The log file before anything is logged; the home made private first, as serve() would.
    configure_logging(server_log_path(prepare_home(home)))
    # Where to look when something goes wrong: one line, at start (it must not say "ready": scripts wait for that).
    err.print(
        f"tiffin serve logs to stderr and {server_log_path(home)}; replicas to {home / 'logs'}/ENDPOINT/DEPLOYMENT/"
        f"replica-N.log and events.log (`tiffin online-deployment get-logs`), batch jobs to {home / 'jobs'}/JOB/"
        "job.log (`tiffin job stream`)",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(
        serve(
            home=home, host=host, port=port, store_url=store_url, replica_cpus=replica_cpus,
            max_jobs_per_deployment=max_jobs_per_deployment,
            connection_limits={
                "max_connections": max_connections, "max_header_bytes": max_header_bytes,
                "header_timeout": header_timeout, "body_timeout": body_timeout, "min_body_rate": min_body_rate,
                "keep_alive_timeout": keep_alive_timeout,
            },
        )
    )  # fmt: skip


@app.command("build")
def build(
    file: FileOpt,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="Keep the generated BentoML build context here.")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Bento version (default: generated).")] = None,
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Package a deployment (code + model + spec) into a Bento that `bentoml serve TAG` serves."""
    from tiffin.replica.bento import build_bento

    result = build_bento(file, output_dir=output_dir, version=version, overrides=set_ or ())
    emit(result, output, query)


@app.command("validate")
def validate(
    file: FileOpt,
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Load an Azure ML YAML file and print it as tiffin reads it (fields ignored locally are listed).

    A deployment's model is checked as `create` checks it: a local path must exist, an MLflow URI resolve."""
    from tiffin.runners.factory import check_model
    from tiffin.specs import BatchDeployment, OnlineDeployment, load_spec

    loaded = load_spec(file, overrides=set_ or ())
    if isinstance(loaded.spec, OnlineDeployment | BatchDeployment):
        check_model(loaded.spec, source=str(file))
    for line in loaded.warnings():
        warn(line)
    emit(
        {
            "kind": type(loaded.spec).__name__,
            "spec": loaded.spec.to_yaml_dict(),
            "ignored": loaded.ignored,
            "unknown": loaded.unknown,
        },
        output,
        query,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tiffin`` script; returns the exit code.

    Typer reports usage errors itself (exit 2); tiffin's own errors are printed here as one line that
    says what to fix (exit 1), never as a traceback.
    """
    try:
        app(args=argv, prog_name="tiffin", standalone_mode=True)
    except TiffinError as exc:
        from rich.markup import escape  # a message naming [/PATH] or [extra] is text, not markup

        err.print(f"[red]ERROR[/]: {escape(exc.message)}", highlight=False, markup=True)
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
