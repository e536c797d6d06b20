"""``tiffin containerize`` and ``tiffin online-deployment package``: a deployment as an OCI image (issue 16).

``containerize -f deployment.yml`` builds the image of a deployment YAML; ``online-deployment package -n D -e E``
builds the image of a deployment ``tiffin serve`` already has (its spec as ``online-deployment show`` gives it;
Azure's CLI has no such command: ``az ml online-deployment`` creates from images, it does not make them, and
"package" is Azure's name for making a model's image in its SDK). Both print the image's tag, size and build time
as JSON, and the requirements it was built with; the build's own output goes to ``--log`` when given.
See docs/containers.md.
"""

# No `from __future__ import annotations`: Typer reads the options' types from the annotations.

import tempfile
from pathlib import Path
from typing import Annotated

import typer
import yaml

from tiffin.cli.online import online_deployment_app
from tiffin.cli.options import DeploymentNameOpt, EndpointOpt, OutputOpt, QueryOpt, SetOpt, warn
from tiffin.cli.output import OutputFormat, emit

__all__ = ["containerize_app", "online_deployment_app"]

containerize_app = typer.Typer(
    help="Build a deployment's OCI image (its code, model and environment on tiffin's replica server).",
)

TagOpt = Annotated[
    str | None,
    typer.Option("--tag", "-t", help="Image name:tag (default: tiffin-ENDPOINT-NAME:DIGEST, also tagged :latest)."),
]
LogOpt = Annotated[Path | None, typer.Option("--log", help="Append the engine's build output to this file.")]
ServerOpt = Annotated[
    str,
    typer.Option(
        "--server",
        help="replica: tiffin's lean replica server (default); bentoml: `bentoml serve` (adds BentoML and tiffin's "
        "dependencies to the image).",
    ),
]


def _build(file: Path, tag: str | None, overrides: list[str] | None, log: Path | None, server: str) -> dict:
    from tiffin.containers.image import build_image

    if server not in ("replica", "bentoml"):
        raise typer.BadParameter("replica or bentoml", param_hint="--server")
    result = build_image(file, tag=tag, overrides=overrides or (), log=log, server=server)
    for note in result.get("notes", ()):
        warn(note)
    return result


@containerize_app.callback(invoke_without_command=True)
def containerize(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="The deployment's Azure ML YAML file.")] = None,
    tag: TagOpt = None,
    log: LogOpt = None,
    server: ServerOpt = "replica",
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Build the OCI image of a deployment YAML (needs Docker or Podman: see docs/containers.md)."""
    if ctx.invoked_subcommand is not None:
        return
    if file is None:
        raise typer.BadParameter("give the deployment's YAML file with --file", param_hint="--file")
    emit(_build(file, tag, set_, log, server), output, query)


@containerize_app.command("prune")
def prune(
    images: Annotated[bool, typer.Option("--images", help="Remove the images too, not only containers.")] = False,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Remove the containers (and with --images the images) this TIFFIN_HOME's tiffin made; a running tiffin
    serve's replica containers are kept."""
    from tiffin.config import tiffin_home
    from tiffin.containers.engine import HOME_LABEL, detect, home_digest
    from tiffin.containers.run import supervised_containers

    engine = detect()
    assert engine is not None
    home = tiffin_home()
    labels = {HOME_LABEL: home_digest(home)}
    # A running tiffin serve's replica containers are its deployments': deleting them is `online-deployment delete`.
    serving = {container for container, alive in supervised_containers(home, engine) if alive}
    stale = [container for container in engine.containers(labels) if container not in serving]
    if stale:
        engine.run(["rm", "-f", *stale], timeout=60)
    removed: dict[str, list[str]] = {"containers": stale, "images": [], "kept_serving": sorted(serving)}
    if images:
        removed["images"] = engine.remove_images(labels)
    emit(removed, output, query)


@online_deployment_app.command("package")
def deployment_package(
    name: DeploymentNameOpt,
    endpoint_name: EndpointOpt,
    tag: TagOpt = None,
    log: LogOpt = None,
    server: ServerOpt = "replica",
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Build the OCI image of a deployment tiffin serve has (as `tiffin containerize -f` for its spec)."""
    from tiffin.cli.online import _current_spec

    spec = _current_spec(name, endpoint_name, set_)
    spec.setdefault("endpoint_name", endpoint_name)
    with tempfile.TemporaryDirectory(prefix="tiffin-package-") as tmp:
        file = Path(tmp) / "deployment.yml"
        file.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        emit(_build(file, tag, None, log, server), output, query)
