"""Which environment a deployment runs in, read from where Azure reads it, in Azure's order of precedence.

1. The deployment's ``environment``: its ``conda_file`` (a path, or the mapping inline; a registered or curated
   environment arrives inlined so by :func:`tiffin.assets.resolve.inline_assets`); an ``image`` with it is not
   run (a scoring script runs in tiffin's replica) and only the conda file counts. An ``image`` alone that is one
   of Azure's curated images stands for that curated environment; any other image alone (without
   ``inference_config``) runs in tiffin's own environment, as before (the spec reports ``image`` as ignored).
   ``build`` (a Docker context) is built and run as a custom container (:mod:`tiffin.containers.run`; with
   ``inference_config``, no scoring script); with a scoring script it is refused with a message saying so.
2. With no ``environment``, an MLflow model's own files, as ``mlflow models serve`` reads them:
   ``python_env.yaml``; else ``requirements.txt`` with the python version of ``conda.yaml`` (or of ``MLmodel``);
   else ``conda.yaml``.
3. Neither: None, tiffin's own environment (as before issue 13).

Which runner serves the deployment is decided elsewhere (:func:`tiffin.runners.factory.runner_kind`); the
caller passes the MLflow model's folder when that runner is MLflow, so the question is not asked twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from tiffin.assets.curated import CURATED_REGISTRY, curated_environment, is_curated, known
from tiffin.assets.references import Reference, is_reference, parse_reference
from tiffin.errors import SpecError
from tiffin.specs.strict_yaml import load_yaml

from .conda import MAX_REQUIREMENTS_BYTES, pip_lines, translate
from .spec import EnvironmentSpec

__all__ = ["RUNS_IN_ENVIRONMENT", "curated_for_image", "deployment_environment", "environment_of", "mlflow_environment"]

_MAX_CONDA_BYTES = 1 << 20
"""A conda file, python_env.yaml or MLmodel is a few KiB of YAML."""


def deployment_environment(
    environment: Mapping[str, Any] | str | Any | None,
    *,
    owner: str,
    mlflow_model: Path | None = None,
    base_dir: Path | None = None,
) -> EnvironmentSpec | None:
    """The environment the deployment named ``owner`` (``"deployment 'blue'"``, for messages) runs in.

    ``environment`` is its ``environment`` field (a mapping, an :class:`~tiffin.specs.Environment`, or a curated
    reference string); ``mlflow_model`` the local folder of the MLflow model its runner serves, if that is the
    runner; ``base_dir`` the folder a relative ``conda_file`` path is read against (paths are absolute once a
    spec is loaded). None: tiffin's own environment. :class:`SpecError` for what cannot be built.
    """
    if environment is not None and hasattr(environment, "model_dump"):
        environment = environment.model_dump(exclude_none=True)
    if isinstance(environment, str):
        return _reference(environment, owner)
    if environment:
        if not isinstance(environment, Mapping):
            raise SpecError(f"the environment of {owner} is neither a mapping nor a reference", field="environment")
        found = _inline(environment, owner, base_dir)
        if found is not None:
            return found
    if mlflow_model is not None:
        return mlflow_environment(mlflow_model, owner=owner)
    return None


RUNS_IN_ENVIRONMENT = frozenset({"script", "mlflow"})
"""The runner kinds whose code runs in the deployment's environment. A Triton model runs in tritonserver's own
Python, and a server of the user's own (``environment.command``) is the user's to start."""


def environment_of(deployment: Any, *, kind: str, owner: str) -> EnvironmentSpec | None:
    """The environment a loaded deployment spec (online or batch, its references inlined) runs in, for the runner
    ``kind`` that serves it (:func:`tiffin.runners.factory.runner_kind`); None: tiffin's own."""
    if kind not in RUNS_IN_ENVIRONMENT:
        return None
    mlflow_model = None
    if kind == "mlflow":
        model = deployment.model
        path = model if isinstance(model, str) else getattr(model, "path", None)
        if path and not path.startswith(("runs:/", "models:/")):
            local = Path(path[len("file://") :] if path.startswith("file://") else path)
            if local.is_dir():
                mlflow_model = local
    return deployment_environment(deployment.environment, owner=owner, mlflow_model=mlflow_model)


def mlflow_environment(model_dir: Path, *, owner: str) -> EnvironmentSpec | None:
    """An MLflow model's own environment, found as ``mlflow models serve`` finds it (the file names as its
    ``MLmodel`` gives them); None when the model has none of the files."""
    mlmodel = model_dir / "MLmodel"
    # MLmodel only names the files; a folder given as an MLflow model without one is read with MLflow's defaults.
    flavors = (_read_yaml(mlmodel, owner).get("flavors") or {}) if mlmodel.is_file() else {}
    pyfunc = flavors.get("python_function") or {}
    env = pyfunc.get("env")
    conda_name = env.get("conda", "conda.yaml") if isinstance(env, Mapping) else (env or "conda.yaml")
    python_env_name = env.get("virtualenv", "python_env.yaml") if isinstance(env, Mapping) else "python_env.yaml"
    python_env, conda_file = model_dir / python_env_name, model_dir / conda_name
    requirements = model_dir / "requirements.txt"
    label = f"{{}} (the MLflow model of {owner})"
    if python_env.is_file():
        return _python_env(python_env, label.format(python_env))
    if requirements.is_file():
        python = pyfunc.get("python_version")
        notes: tuple[str, ...] = ()
        if conda_file.is_file():
            from_conda = translate(_read_yaml(conda_file, owner), source=label.format(conda_file), base_dir=model_dir)
            python, notes = from_conda.python, from_conda.notes
        lines = pip_lines([f"-r {requirements}"], source=label.format(requirements), base_dir=model_dir)
        return EnvironmentSpec(
            python=str(python) if python else None,  # MLmodel's python_version: "3.10.12", quoted or not
            requirements=tuple(dict.fromkeys(lines)),
            source=label.format(requirements),
            notes=notes,
        )
    if conda_file.is_file():
        return translate(_read_yaml(conda_file, owner), source=label.format(conda_file), base_dir=model_dir)
    return None


def curated_for_image(image: str) -> str | None:
    """The curated environment whose image ``image`` is (any tag or digest), or None."""
    name = image.split("@", 1)[0]
    repository, _, tag = name.rpartition(":")
    return _curated_images().get(repository if repository and "/" not in tag else name)


# --- helpers ---------------------------------------------------------------------------------------


def _inline(environment: Mapping[str, Any], owner: str, base_dir: Path | None) -> EnvironmentSpec | None:
    if environment.get("build"):
        raise SpecError(
            f"the environment of {owner} is a Docker build context (build:), which needs a container engine and "
            "runs only as a custom container (with inference_config routes, without a scoring script); give the "
            "environment as a conda_file (with or without image:), or use a curated environment "
            "(azureml://registries/azureml/environments/NAME/labels/latest)",
            field="environment.build",
        )
    conda_file = environment.get("conda_file")
    name = environment.get("name")
    described = f"environment {name!r} of {owner}" if name else f"the environment of {owner}"
    if isinstance(conda_file, Mapping):
        return translate(conda_file, source=f"conda_file of {described}", base_dir=base_dir)
    if isinstance(conda_file, str) and conda_file:
        path = Path(conda_file).expanduser()
        if not path.is_absolute():
            if base_dir is None:
                raise SpecError(
                    f"conda_file {conda_file!r} of {described} is a relative path; give it relative to the deployment "
                    "YAML, which tiffin makes absolute when it loads the file",
                    field="environment.conda_file",
                )
            path = base_dir / path
        return translate(_read_yaml(path, owner), source=f"{path} (conda_file of {described})", base_dir=path.parent)
    if conda_file is not None:
        raise SpecError(f"conda_file of {described} is a path or a conda mapping", field="environment.conda_file")
    image = environment.get("image")
    curated = curated_for_image(image) if isinstance(image, str) else None
    if curated is not None:
        return _curated(curated, owner, f"image {image!r}")
    return None


def _reference(text: str, owner: str) -> EnvironmentSpec:
    reference = parse_reference(text, "environment") if is_reference(text) else None
    if reference is None or not is_curated(reference):
        # A registered environment is inlined (tiffin.assets.resolve.inline_assets) before the deployment runs.
        raise SpecError(
            f"the environment of {owner} is the reference {text!r}, not resolved; resolve the deployment's references "
            "(tiffin.assets.resolve.inline_assets) before reading its environment",
            field="environment",
        )
    return _curated(reference.name, owner, repr(text), version=reference.version)


def _curated(name: str, owner: str, via: str, version: str | None = None) -> EnvironmentSpec:
    reference = Reference(text=name, name=name, kind="environment", version=version, registry=CURATED_REGISTRY)
    curated = curated_environment(reference, "environment")
    return translate(curated.conda_file(), source=f"curated environment {curated.name} ({via}) of {owner}")


@cache
def _curated_images() -> dict[str, str]:
    images: dict[str, str] = {}
    for name in known():
        reference = Reference(text=name, name=name, kind="environment", registry=CURATED_REGISTRY)
        images[curated_environment(reference).image] = name
    return images


def _python_env(path: Path, source: str) -> EnvironmentSpec:
    """MLflow's ``python_env.yaml``: ``python``, ``build_dependencies`` (pip, setuptools, wheel), ``dependencies``
    (``-r requirements.txt``, relative to the model's folder)."""
    data = _read_yaml(path, source)
    build = data.get("build_dependencies") or []
    dependencies = data.get("dependencies") or []
    if not isinstance(build, list) or not isinstance(dependencies, list):
        raise SpecError("build_dependencies and dependencies are lists of pip requirements", source=source)
    # uv installs without pip, so pip's own pin is not needed; setuptools and wheel can be, at run time too.
    skipped = tuple(str(line) for line in build if str(line).split("=")[0].split("<")[0].strip().lower() == "pip")
    kept = [line for line in build if str(line) not in skipped]
    lines = pip_lines([*kept, *dependencies], source=source, base_dir=path.parent)
    python = data.get("python")
    if python is not None and not isinstance(python, str):
        raise SpecError(
            f"python is the number {python!r}; quote it: python: '3.10' (YAML reads an unquoted 3.10 as 3.1)",
            source=source,
        )
    return EnvironmentSpec(
        python=python,
        requirements=tuple(dict.fromkeys(lines)),
        skipped=skipped,
        source=source,
    )


def _read_yaml(path: Path, owner: str) -> dict[str, Any]:
    """A small YAML mapping read with the spec loader's strict rules; :class:`SpecError` naming the file."""
    label = str(path)
    try:
        size = path.stat().st_size
        if size > max(_MAX_CONDA_BYTES, MAX_REQUIREMENTS_BYTES):
            raise SpecError(f"is {size} bytes; this file is a few KiB of YAML", source=label)
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SpecError(f"does not exist; the environment of {owner} names it", source=label) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = "is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else (exc.strerror or str(exc)).lower()
        raise SpecError(f"cannot be read ({reason})", source=label) from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"is not valid YAML: {exc}", source=label) from None
    if not isinstance(data, dict):
        raise SpecError("is not a YAML mapping", source=label)
    return data
