"""An OCI image per deployment: its code, model and environment, served by tiffin's lean replica server.

The image is built with the engine's classic builder from a Dockerfile tiffin writes (not BentoML's template,
which needs BentoML and a base with its own Python layout; see docs/containers.md), on tiffin's base image
(:mod:`tiffin.containers.base_image`):

* ``/opt/venv``: a virtual environment on the base's Python with the deployment's requirements (its conda file's
  pip translation, or its MLflow model's own) and tiffin's runtime requirements (uvicorn, httptools, uvloop),
  installed by uv in one resolution, as ``tiffin serve`` builds environments;
* ``/opt/tiffin/runtime``: a copy of tiffin's package, on ``PYTHONPATH`` (what a replica imports of tiffin is the
  standard library and uvicorn: :mod:`tiffin.environments.runtime`), so the image needs no wheel of tiffin and
  none of its server-side dependencies;
* ``/var/azureml-app``: the code (``code/``), the model as Azure lays it out (``model/`` is ``AZUREML_MODEL_DIR``)
  and ``plan.json``, the replica plan written on the build machine with paths inside the image.

The container runs ``python -m tiffin.replica.run --plan /var/azureml-app/plan.json --host 0.0.0.0 --port 5001``
(through ``/opt/tiffin/serve``, which sends its output to ``$TIFFIN_REPLICA_LOG`` when set) as user ``tiffin``
(uid 1000): Azure's contract (``GET /``, ``/score``, swagger, V2) on one port; uvicorn stops on
SIGTERM. Layers go from the least to the most often changed (uv, requirements, runtime, app), so a rebuild after a
code change reuses the environment's layer. Requirements are installed and tiffin's runtime and the code compiled
to bytecode at build time: the container, whose files are read-only to its user, starts without compiling.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tiffin.containers.base_image import BASE_PYTHON, ensure_base_image
from tiffin.containers.engine import HOME_LABEL, IMAGE_LABEL, Engine, detect, home_digest
from tiffin.containers.naming import CONTAINER_PORT, image_reference

__all__ = ["APP_DIR", "CONTAINER_PORT", "build_image", "write_image_context"]

APP_DIR = "/var/azureml-app"

_DOCKERFILE = """\
FROM {base}
COPY uv /usr/local/bin/uv
COPY requirements.txt /opt/tiffin/requirements.txt
RUN python3 -m venv --without-pip /opt/venv \\
 && uv pip install --no-cache --compile-bytecode --python /opt/venv/bin/python -r /opt/tiffin/requirements.txt
COPY wheels/ /opt/tiffin/wheels/
RUN if ls /opt/tiffin/wheels/*.whl >/dev/null 2>&1; then \\
      uv pip install --no-cache --no-deps --python /opt/venv/bin/python /opt/tiffin/wheels/*.whl; fi
COPY runtime/ /opt/tiffin/runtime/
COPY app/ {app}/
COPY serve /opt/tiffin/serve
RUN /opt/venv/bin/python -m compileall -q /opt/tiffin/runtime {app}/code
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    VIRTUAL_ENV=/opt/venv PYTHONPATH=/opt/tiffin/runtime PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \\
    AZUREML_MODEL_DIR={app}/model TIFFIN_SERVER={server}
USER 1000:1000
WORKDIR {app}
EXPOSE {port}
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/tiffin/serve"]
CMD ["--host", "0.0.0.0", "--port", "{port}"]
"""

# The container's entry point (arguments: the replica's; `--host 0.0.0.0 --port 5001` by default). Its output (the
# scoring script's logging included) goes to the engine's log (`docker logs`) unless TIFFIN_REPLICA_LOG names a
# file: a script that logs per request halves the container's throughput on a 2-core machine when every line
# travels through the engine's log pipe (docs/containers.md has the figures). `exec`: the replica is PID 1 and
# gets SIGTERM itself.
# TIFFIN_SERVER=bentoml (an image built with server="bentoml") serves the same app with `bentoml serve` instead.
_SERVE = """\
#!/bin/sh
if [ "${{TIFFIN_SERVER:-replica}}" = bentoml ]; then
  set -- bentoml serve service:Deployment "$@"
else
  set -- python -m tiffin.replica.run --plan {app}/plan.json "$@"
fi
if [ -n "${{TIFFIN_REPLICA_LOG:-}}" ]; then
  exec "$@" >>"$TIFFIN_REPLICA_LOG" 2>&1
fi
exec "$@"
"""


def write_image_context(
    path: str | Path, target: Path, overrides: Sequence[str] = (), *, server: str = "replica"
) -> dict[str, Any]:
    """Write the build context of the deployment YAML ``path``'s image into ``target`` (Dockerfile, uv, the
    requirements, tiffin's runtime copy, the app); what was decided (requirements, notes). ``server="bentoml"``
    adds BentoML and a wheel of tiffin with all its dependencies, and the service ``bentoml serve`` runs."""
    from tiffin.config import tiffin_home
    from tiffin.environments.runtime import RUNTIME_REQUIREMENTS, runtime_path
    from tiffin.replica.bento import environment_of_spec, lay_out
    from tiffin.replica.factory import replica_settings
    from tiffin.replica.plan import ReplicaPlan
    from tiffin.runners.factory import runner_config_for, serves_model_itself
    from tiffin.runners.kinds import runner_to_json
    from tiffin.specs import OnlineDeployment, load_spec

    app = target / "app"
    laid = lay_out(path, app, overrides, copy_registered=True)
    original = laid.loaded.spec
    environment = environment_of_spec(laid.loaded)
    notes: list[str] = list(environment.notes) if environment else []
    if environment is not None and environment.python_minor != BASE_PYTHON:
        notes.append(
            f"the environment asks for Python {environment.python_minor}; the image runs Python {BASE_PYTHON} "
            "(Debian bookworm's, its base): pin python=3.11 in the conda file to match"
        )
    requirements = [*(environment.requirements if environment else ()), *RUNTIME_REQUIREMENTS]
    (target / "wheels").mkdir(parents=True, exist_ok=True)
    if server == "bentoml":
        from tiffin.replica.bento import _SERVICE_PY, _tiffin_requirement

        tiffin = _tiffin_requirement(target)  # a wheel of this checkout in wheels/, else the release
        if tiffin.get("wheels"):
            # tiffin's dependencies with the environment's (a layer that changes when they do); the wheel itself,
            # which changes with every edit of tiffin, in a small layer of its own after them.
            requirements += _dependencies_of_tiffin()
        requirements += tiffin.get("packages", [])
        (app / "service.py").write_text(_SERVICE_PY, encoding="utf-8")
    elif server != "replica":
        raise ValueError(f"server is replica or bentoml, not {server!r}")
    (target / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    # The plan is made from the copy, so its paths are the copy's; then moved under APP_DIR.
    copied = load_spec(app / "deployment.yml", OnlineDeployment).spec
    model_dir = None if serves_model_itself(copied) else (app / "model")
    aliases = frozenset(n for n in (copied.endpoint_name,) if n)
    kind, runner = runner_to_json(runner_config_for(copied, model_dir=model_dir, source=str(path), aliases=aliases))
    settings = replica_settings(dict(copied.environment_variables or {}))
    plan = ReplicaPlan(
        kind=kind,
        runner=_moved(runner, str(app), APP_DIR),
        name=copied.name,
        version=str(getattr(copied.model, "version", None) or "1"),
        model_names=tuple(sorted(aliases)),
        workers=settings["workers"],
        max_body_bytes=settings["max_body_bytes"],
        scoring_threads=settings["scoring_threads"],
    )
    (app / "plan.json").write_text(plan.to_json(), encoding="utf-8")
    shutil.copytree(runtime_path(tiffin_home()), target / "runtime")
    shutil.copy2(_uv_binary(), target / "uv")
    return {
        "deployment": original.name,
        "endpoint": original.endpoint_name,
        "requirements": requirements,
        "python": BASE_PYTHON,
        "notes": notes,
        "ignored": laid.loaded.ignored,
    }


def build_image(
    path: str | Path,
    *,
    tag: str | None = None,
    engine: Engine | None = None,
    overrides: Sequence[str] = (),
    log: Path | None = None,
    timeout: float = 1800.0,
    no_cache: bool = False,
    server: str = "replica",
) -> dict[str, Any]:
    """Build the image of the deployment YAML ``path``; its tag, size and build time, and what was decided.
    ``no_cache``: build every layer again (a cold build, as benchmarks/bench_container.py measures it)."""
    from tiffin.config import tiffin_home

    engine = engine or detect()
    assert engine is not None
    base = ensure_base_image(engine)
    work = Path(tempfile.mkdtemp(prefix="tiffin-image-"))
    try:
        info = write_image_context(path, work, overrides, server=server)
        (work / "serve").write_text(_SERVE.format(app=APP_DIR), encoding="utf-8")
        (work / "serve").chmod(0o755)  # COPY keeps the mode (the classic builder has no --chmod)
        (work / "Dockerfile").write_text(
            _DOCKERFILE.format(base=base, app=APP_DIR, port=CONTAINER_PORT, server=server), encoding="utf-8"
        )
        tags = [tag] if tag else []
        if tag is None:  # the names `tiffin export kubernetes` writes into its manifests (tiffin.containers.naming)
            endpoint, deployment = str(info["endpoint"] or "local"), str(info["deployment"])
            tag = image_reference(endpoint, deployment, _context_digest(work)[:12])
            tags = [tag, image_reference(endpoint, deployment)]  # and :latest, export kubernetes' default tag
        labels = {
            IMAGE_LABEL: "deployment",
            HOME_LABEL: home_digest(tiffin_home()),
            "ai.tiffin.deployment": str(info["deployment"]),
            "ai.tiffin.endpoint": str(info["endpoint"] or ""),
        }
        label_args = [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]
        started = time.monotonic()
        with log.open("ab") if log else tempfile.TemporaryFile() as output:
            cache = ["--no-cache"] if no_cache else []
            names = [arg for name in tags for arg in ("-t", name)]
            command = ["build", "--quiet", *cache, *label_args, *names, str(work)]
            engine.run(command, timeout=timeout, stdout=output.fileno())
        info.update(
            server=server,
            tag=tag,
            tags=tags,
            base=base,
            seconds=round(time.monotonic() - started, 1),
            size=engine.image_size(tag),
        )
        return info
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _moved(value: Any, old: str, new: str) -> Any:
    """``value`` (the runner's JSON) with every path under ``old`` moved under ``new``."""
    if isinstance(value, str):
        return new + value[len(old) :] if value == old or value.startswith(old + "/") else value
    if isinstance(value, list):
        return [_moved(item, old, new) for item in value]
    if isinstance(value, dict):
        return {key: _moved(item, old, new) for key, item in value.items()}
    return value


def _dependencies_of_tiffin() -> list[str]:
    """tiffin's own requirements (not its extras'), as its installed metadata lists them."""
    from importlib import metadata

    return [line for line in metadata.requires("tiffin") or [] if "extra ==" not in line]


def _uv_binary() -> Path:
    from uv import find_uv_bin

    return Path(find_uv_bin())


def _context_digest(root: Path) -> str:
    """sha256 over the context's file names and contents: equal contexts get equal tags."""
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with file.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
