"""Image deployments (Azure's custom containers) on a container engine: the image found or built, the command line
of one container replica, and the removal of containers that a killed ``tiffin serve`` left behind.

A replica of such a deployment is tiffin's BYOC forwarder (:mod:`tiffin.runners.byoc`) in front of one container
that it runs in the foreground (``docker run --rm --init``): the container's exit is the server's exit, its output
the replica's log, and the replica's stop stops it. Azure's layout is kept: the model is mounted read-only at
``/var/azureml-app/azureml-models/NAME/VERSION`` (``AZUREML_MODEL_DIR``), and the container's port (the scoring
route's) is published on 127.0.0.1 only, on a port tiffin picks. Every container carries the labels
:data:`~tiffin.containers.engine.MANAGED_LABEL`, :data:`~tiffin.containers.engine.HOME_LABEL` and
:data:`SUPERVISOR_LABEL` (the pid of the ``tiffin serve`` whose replica started it), so that the next start of
``tiffin serve`` on that home removes what a killed one left (:func:`remove_leftovers`), and leaves alone the
containers of a server that still runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from tiffin.containers.engine import HOME_LABEL, MANAGED_LABEL, ContainerEngineError, Engine, detect, home_digest
from tiffin.errors import SpecError
from tiffin.pids import pid_alive

__all__ = [
    "APP_ROOT",
    "SUPERVISOR_LABEL",
    "byoc_image",
    "container_command",
    "container_name",
    "engine_for",
    "model_mount_path",
    "prepare_byoc_image",
    "remove_leftovers",
]

logger = logging.getLogger("tiffin.containers")

APP_ROOT = "/var/azureml-app"
"""Where Azure puts a deployment's files in its container (the code; the models under ``azureml-models``)."""
SUPERVISOR_LABEL = "ai.tiffin.supervisor"
"""The pid of the ``tiffin serve`` whose replica runs the container: a leftover when that process is gone."""
BYOC_REPOSITORY = "tiffin/byoc"
"""Images built from an ``environment.build`` context are tagged ``tiffin/byoc:DIGEST`` (the context's digest)."""


def model_mount_path(name: str | None, version: str | None, root: str | None = None) -> str:
    """Azure's ``AZUREML_MODEL_DIR`` in a custom container: ``/var/azureml-app/azureml-models/NAME/VERSION``, or
    ``ROOT/NAME/VERSION`` under the deployment's ``model_mount_path`` (as Azure's custom-container guide says)."""
    if root is not None and not root.startswith("/"):
        raise SpecError(f"model_mount_path {root!r} is not an absolute path; give one such as /var/model-mount")
    return f"{(root or APP_ROOT + '/azureml-models').rstrip('/')}/{name or 'model'}/{version or '1'}"


def context_digest(context: Path, dockerfile: str) -> str:
    """sha256 over the build context's file names and contents and the Dockerfile's path in it."""
    digest = hashlib.sha256(dockerfile.encode() + b"\0")
    for file in sorted(p for p in context.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(context)).encode() + b"\0")
        with file.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def byoc_image(
    engine: Engine,
    *,
    image: str | None,
    context: Path | None,
    dockerfile: str = "Dockerfile",
    log: TextIO | None = None,
) -> str:
    """The image a custom-container deployment runs: built from ``context`` (``environment.build``; the build's
    output goes to ``log``, else to this process's stdout) unless an image of the same context digest exists,
    else ``image`` as given, which must already be in the engine: tiffin never pulls one."""
    if context is not None:
        return _build(engine, context, dockerfile, log)
    if not image:
        raise ContainerEngineError("a custom-container deployment needs environment.image or environment.build")
    if not engine.image_exists(image):
        raise ContainerEngineError(
            f"image {image!r} is not in {engine.kind}'s image store, and tiffin never pulls images: run "
            f"`{engine.kind} pull {image}` (or `{engine.kind} load`) first, or give environment.build (a Docker "
            "build context) instead"
        )
    return image


def _build(engine: Engine, context: Path, dockerfile: str, log: TextIO | None) -> str:
    context = context.resolve()
    if not context.is_dir():
        raise ContainerEngineError(f"environment.build.path {context} is not a folder; give the Docker build context")
    file = (context / dockerfile).resolve()
    if not file.is_file() or not file.is_relative_to(context):
        raise ContainerEngineError(
            f"environment.build.dockerfile_path {dockerfile!r} is not a file in the build context {context}"
        )
    tag = f"{BYOC_REPOSITORY}:{context_digest(context, dockerfile)[:16]}"
    if engine.image_exists(tag):
        logger.info("image %s of build context %s is already built", tag, context)
        return tag
    print(f"[tiffin] building {tag} from {context} ({dockerfile}) with {engine.kind}", file=log, flush=True)
    labels = {MANAGED_LABEL: "true", HOME_LABEL: _home_digest()}
    label_args = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
    # The build's steps go to the log as they happen; its errors end in the exception.
    output = None if log is None else log.fileno()
    engine.run(["build", *label_args, "-t", tag, "-f", str(file), str(context)], timeout=1800.0, stdout=output)
    return tag


def prepare_byoc_image(runner: Mapping[str, Any], log: TextIO, environ: Mapping[str, str] = os.environ) -> str | None:
    """Before a custom-container deployment's replicas start (``runner``: its BYOC runner config as JSON): the
    engine found and the image built (its output in ``log``) or found, so that a missing engine, a missing image or a
    failed build fails the deployment at once with the reason; its tag. None for a server run as a command."""
    if runner.get("command") or not (runner.get("image") or runner.get("build_context")):
        return None
    engine = engine_for(runner.get("image"), environ)
    context = runner.get("build_context")
    image = byoc_image(
        engine,
        image=runner.get("image"),
        context=Path(context) if context else None,
        dockerfile=runner.get("dockerfile") or "Dockerfile",
        log=log,
    )
    print(f"[tiffin] image: {image} ({engine.kind}, {engine.client})", file=log, flush=True)
    return image


def _home_digest() -> str:
    from tiffin.config import tiffin_home

    return home_digest(tiffin_home())


def engine_for(image: str | None, environ: Mapping[str, str] = os.environ) -> Engine:
    """The engine that runs the image deployment (of ``image``, None: of a build context); otherwise the clear error
    tiffin has always given, which says what to do instead."""
    engine = detect(environ, require=False)
    if engine is None:
        what = f"environment.image {image}" if image else "environment.build"
        raise ContainerEngineError(
            f"{what} needs a container engine (docker or podman) and none runs here (or TIFFIN_CONTAINER_ENGINE is "
            "none); start one, or give environment.command (a command serving HTTP on $PORT) instead"
        )
    return engine


def container_name() -> str:
    """A fresh container name: ``tiffin-`` and 12 random hex digits (a replica's restart never meets its
    predecessor's name while the engine still removes it)."""
    return f"tiffin-{uuid.uuid4().hex[:12]}"


def container_command(
    engine: Engine,
    *,
    image: str,
    name: str,
    host_port: int,
    container_port: int,
    env_names: Sequence[str],
    mounts: Mapping[Path, str],
    labels: Mapping[str, str],
) -> list[str]:
    """``run --rm --init`` of ``image`` in the foreground: ``container_port`` published on 127.0.0.1:``host_port``,
    each of ``env_names`` passed from the client's environment (so values never show on a command line),
    ``mounts`` (host folder → container path) read-only, and tiffin's labels (home, supervisor) added."""
    every = {MANAGED_LABEL: "true", HOME_LABEL: _home_digest(), SUPERVISOR_LABEL: str(os.getppid()), **labels}
    command = [engine.client, "run", "--rm", "--init", "--name", name]
    for key, value in every.items():
        command += ["--label", f"{key}={value}"]
    command += ["--publish", f"127.0.0.1:{host_port}:{container_port}"]
    for env_name in env_names:
        command += ["--env", env_name]
    for host, inside in mounts.items():
        command += ["--volume", f"{os.path.realpath(host)}:{inside}:ro"]
    return [*command, image]


def remove_leftovers(home: Path, engine: Engine | None = None) -> list[str]:
    """Remove the containers of ``home`` whose ``tiffin serve`` is gone (killed before it could stop them); their
    ids. A no-op (``[]``) where no engine answers or ``TIFFIN_CONTAINER_ENGINE=none``."""
    try:
        engine = engine or detect(require=False)
    except ContainerEngineError:  # a bad TIFFIN_CONTAINER_ENGINE: the deployments that need one say so
        return []
    if engine is None:
        return []
    gone = [container for container, alive in supervised_containers(home, engine) if not alive]
    if gone:
        logger.warning("removing %d container(s) left behind by an earlier tiffin serve", len(gone))
        engine.run(["rm", "--force", *gone], timeout=60, check=False)
    return gone


def supervised_containers(home: Path, engine: Engine) -> list[tuple[str, bool]]:
    """The replica containers of ``home`` (full ids), each with whether the ``tiffin serve`` that runs it (this
    one, or another on this home) is alive."""
    listing = engine.run(
        [
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            f"label={MANAGED_LABEL}=true",
            "--filter",
            f"label={HOME_LABEL}={home_digest(home)}",
            "--filter",
            f"label={SUPERVISOR_LABEL}",
            "--format",
            '{{.ID}} {{.Label "' + SUPERVISOR_LABEL + '"}}',
        ],
        timeout=30,
    )
    found = []
    for line in listing.stdout.decode().splitlines():
        container, _, owner = line.partition(" ")
        found.append((container, owner.strip().isdigit() and pid_alive(int(owner))))
    return found
