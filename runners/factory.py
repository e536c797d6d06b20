"""Choose the runner for a deployment spec."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from tiffin.containers.run import model_mount_path
from tiffin.errors import SpecError
from tiffin.runners.byoc import ByocRunner, ByocRunnerConfig
from tiffin.runners.mlflow import MLflowRunner, MLflowRunnerConfig
from tiffin.runners.protocol import Runner
from tiffin.runners.script import ScriptRunner, ScriptRunnerConfig
from tiffin.runners.triton import TritonRunner, TritonRunnerConfig
from tiffin.specs import is_remote_path

__all__ = [
    "RunnerKind",
    "check_model",
    "is_mlflow_model",
    "is_triton_model",
    "runner_config_for",
    "runner_for",
    "runner_kind",
    "serves_model_itself",
]

RunnerKind = Literal["script", "triton", "byoc", "mlflow"]


def is_mlflow_model(deployment: Any) -> bool:
    """An MLflow model served without a scoring script: ``type: mlflow_model``, an ``MLmodel`` file in
    the model folder, or an MLflow URI (``runs:/``, ``models:/``), and no code_configuration."""
    model = deployment.model
    code = deployment.code_configuration
    if model is None or (code is not None and code.scoring_script):
        return False
    path = model if isinstance(model, str) else getattr(model, "path", None)
    if getattr(model, "type", None) == "mlflow_model":
        return True
    return bool(path) and (path.startswith(("runs:/", "models:/")) or (Path(path) / "MLmodel").is_file())


def is_triton_model(deployment: Any) -> bool:
    """A Triton model repository (or a Triton server's URL) served without a scoring script
    (``model.type: triton_model``, Azure's no-code Triton deployment)."""
    code = deployment.code_configuration
    return getattr(deployment.model, "type", None) == "triton_model" and not (code is not None and code.scoring_script)


def serves_model_itself(deployment: Any) -> bool:
    """Whether the runner loads the model from its own path or URI (MLflow, Triton), so it needs no
    ``AZUREML_MODEL_DIR`` laid out for a scoring script."""
    return is_mlflow_model(deployment) or is_triton_model(deployment)


def runner_kind(deployment: Any, *, source: str | None = None) -> RunnerKind:
    """Which runner serves ``deployment``, decided in one place: a scoring script, a Triton model, the
    user's own server (BYOC), or an MLflow model; SpecError naming code_configuration when none can.

    The control plane asks at create, so a deployment nothing can run is refused there (422) rather than
    stored and failing when its replicas start.
    """
    code = deployment.code_configuration
    if code is not None and code.scoring_script:
        return "script"
    if is_triton_model(deployment):
        return "triton"
    if code is None and _has_own_server(deployment):
        return "byoc"
    if is_mlflow_model(deployment):
        return "mlflow"
    raise SpecError(
        "a deployment needs code_configuration (code + scoring_script), an MLflow model "
        "(model.type: mlflow_model) or a Triton model repository (model.type: triton_model) served without one, "
        "or a server of its own (environment.command, or "
        "environment.image with inference_config)",
        source=source,
        field="code_configuration",
    )


def check_model(deployment: Any, *, source: str | None = None) -> None:
    """Refuse (SpecError naming ``model.path``) a model that is not there, at create rather than when replicas
    or a job's workers start: a local path that does not exist, or an MLflow ``models:/``/``runs:/`` URI that
    does not resolve against the tracking and registry URIs the runner will load it with (the deployment's
    ``environment_variables`` first, then this process's environment, as :class:`MLflowRunner` does).

    Only the registry's records are read, never the model. The control plane hands this the deployment with its
    ``azureml:`` references resolved (:func:`tiffin.assets.resolve.inline_assets`), so a registered model is
    checked as its stored files; a reference still here is one nothing resolved (``tiffin validate`` reads files
    without a server) and is left alone, as are other URIs (a Triton server's ``http://``, ``s3://``...), which
    the runner says what it makes of.
    """
    model = deployment.model
    if model is None or (isinstance(model, str) and model.startswith("azureml:")):
        return
    path, field = (model, "model") if isinstance(model, str) else (model.path, "model.path")
    if path.startswith(("models:/", "runs:/")):
        if runner_kind(deployment, source=source) != "mlflow":
            raise SpecError(
                f"{path} is an MLflow URI, which only an MLflow deployment (no scoring script) loads itself; a "
                "scoring script is given its model as files: download it (`mlflow artifacts download -u URI`) and "
                "give the folder, or drop code_configuration",
                source=source,
                field=field,
            )
        env = {**os.environ, **{str(k): str(v) for k, v in (deployment.environment_variables or {}).items()}}
        _check_mlflow_uri(path, env, source=source, field=field)
        return
    if is_remote_path(path):
        return
    local = Path(path.removeprefix("file://") if path.startswith("file://") else path.removeprefix("file:"))
    if not local.exists():
        where = "" if local.is_absolute() else f" (a relative path is read from {Path.cwd()})"
        raise SpecError(
            f"{local} does not exist on this machine{where}; give the file or folder that holds the model",
            source=source,
            field=field,
        )


def runner_config_for(
    deployment: Any, *, model_dir: Path | None, source: str | None = None, aliases: frozenset[str] = frozenset()
) -> Any:
    """The config (a runner's config dataclass) of the runner that serves ``deployment`` (an online or batch
    deployment spec): what :func:`runner_for` builds, and what a replica plan carries as JSON
    (:mod:`tiffin.runners.kinds`).

    ``model_dir`` is the directory laid out as Azure's ``AZUREML_MODEL_DIR`` (see
    :func:`tiffin.replica.layout.stage_model`); ``aliases`` are the V2 model names (the endpoint's) that
    a runner serving several models of its own (Triton) maps to its default model.
    """
    kind = runner_kind(deployment, source=source)
    code = deployment.code_configuration
    env = {str(k): str(v) for k, v in (deployment.environment_variables or {}).items()}
    if kind == "script":
        return ScriptRunnerConfig(
            code_dir=Path(code.code),
            scoring_script=code.scoring_script,
            model_dir=model_dir,
            environment_variables=env,
        )
    if kind == "triton":
        path = deployment.model.path
        remote = path.startswith(("http://", "https://"))
        return TritonRunnerConfig(
            repository=None if remote else Path(path),
            url=path if remote else None,
            model_aliases=aliases | {deployment.name},
            environment_variables=env,
        )
    if kind == "byoc":
        return _byoc_config(deployment, model_dir, env)
    model = deployment.model
    uri = model if isinstance(model, str) else model.path
    return MLflowRunnerConfig(model_uri=uri, environment_variables=env)


def runner_for(
    deployment: Any, *, model_dir: Path | None, source: str | None = None, aliases: frozenset[str] = frozenset()
) -> Runner:
    """The runner that serves ``deployment`` (see :func:`runner_config_for`)."""
    config = runner_config_for(deployment, model_dir=model_dir, source=source, aliases=aliases)
    runner_type = {
        ScriptRunnerConfig: ScriptRunner,
        TritonRunnerConfig: TritonRunner,
        ByocRunnerConfig: ByocRunner,
        MLflowRunnerConfig: MLflowRunner,
    }[type(config)]
    return runner_type(config)


def _has_own_server(deployment: Any) -> bool:
    """The user's own server: ``environment.command``, or an image (or a build context) with ``inference_config``."""
    environment = deployment.environment
    if environment is None or isinstance(environment, str):
        return False
    return bool(environment.command or ((environment.image or environment.build) and environment.inference_config))


def _byoc_config(deployment: Any, model_dir: Path | None, env: dict[str, str]) -> ByocRunnerConfig:
    """How to run and reach the user's own server (see :func:`_has_own_server`)."""
    environment = deployment.environment
    routes = environment.inference_config
    scoring = routes.scoring_route if routes else None
    readiness = (routes.readiness_route or routes.liveness_route) if routes else None
    build = None if environment.command else environment.build
    model = deployment.model
    return ByocRunnerConfig(
        command=environment.command,
        image=None if environment.command or build else environment.image,
        build_context=Path(build.path) if build else None,
        dockerfile=build.dockerfile_path if build else "Dockerfile",
        model_mount=model_mount_path(
            getattr(model, "name", None),
            str(getattr(model, "version", None) or "1"),
            getattr(deployment, "model_mount_path", None),
        ),
        scoring_path=scoring.path if scoring else "/score",
        readiness_path=readiness.path if readiness else "/",
        liveness_path=routes.liveness_route.path if routes and routes.liveness_route else None,
        container_port=scoring.port if scoring else None,
        model_dir=model_dir,
        environment_variables=env,
    )


# --- MLflow URIs, resolved at create ---------------------------------------------------------------------

MLFLOW_CHECK_TIMEOUT = 10.0
"""Seconds the registry look-up of one deployment's model may take before create gives up and says so."""


def _shown(text: str) -> str:
    """``text`` without the password or token of a URI in it (``https://user:secret@host``), for messages,
    which end in the CLI's output and in logs."""
    return re.sub(r"//[^/@\s]+@", "//***@", text)


_POINT = "point MLFLOW_TRACKING_URI (and MLFLOW_REGISTRY_URI) at the store that holds the model, in the deployment's "
_POINT += "environment_variables or tiffin serve's environment"


def _store_problem(uri: str) -> str | None:
    """Why the tracking store ``uri`` cannot hold the model, found without creating it (MLflow would: an empty
    SQLite database or ``mlruns`` folder, wherever tiffin serve runs); None when it may be looked in."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme == "sqlite":
        database = re.sub(r"^sqlite:///", "", uri, flags=re.IGNORECASE).split("?", 1)[0]
        if database and database != ":memory:" and not Path(database).is_file():
            return f"no MLflow tracking store at {_shown(uri)} (the file does not exist); {_POINT}"
    elif scheme in ("", "file"):
        if not Path(urlsplit(uri).path if scheme else uri).is_dir():
            return f"no MLflow tracking store at {_shown(uri)} (the folder does not exist); {_POINT}"
    elif scheme in ("http", "https"):
        import httpx

        try:  # any answer will do: MLflow's own client retries for minutes against a server that is not there
            httpx.get(uri.rstrip("/") + "/health", timeout=3.0)
        except httpx.HTTPError as exc:
            reason = type(exc).__name__
            return f"cannot reach the MLflow tracking server at {_shown(uri)} ({reason}): start it, or {_POINT}"
    return None


def _lookup(uri: str, tracking: str, registry: str) -> tuple[Callable[[Any], Any], str]:
    """The registry (or tracking store) call that fails when ``uri`` names nothing, and what it names."""
    rest = uri.split(":/", 1)[1].lstrip("/")
    if uri.startswith("runs:/"):
        run_id = rest.split("/", 1)[0]
        return (lambda client: client.get_run(run_id)), f"run '{run_id}' (in the MLflow tracking store at {tracking})"
    where = f"in the MLflow registry at {registry}"
    name, at, alias = rest.partition("@")
    if at:
        return (
            lambda client: client.get_model_version_by_alias(name, alias)
        ), f"alias '{alias}' of registered model '{name}' ({where})"
    name, slash, version = rest.partition("/")
    if not slash:  # models:/<model_id>, MLflow 3's logged model
        return (lambda client: client.get_logged_model(name)), f"logged model '{name}' ({where})"
    if version.isdigit():
        return (
            lambda client: client.get_model_version(name, version)
        ), f"version {version} of registered model '{name}' ({where})"
    stages = None if version.lower() == "latest" else [version]  # models:/NAME/latest or models:/NAME/STAGE

    def latest(client: Any) -> None:
        if not client.get_latest_versions(name, stages=stages):
            raise LookupError

    return latest, f"a {'' if stages is None else version + ' '}version of registered model '{name}' ({where})"


def _check_mlflow_uri(uri: str, env: Mapping[str, str], *, source: str | None, field: str) -> None:
    """Refuse ``uri`` (``models:/``, ``runs:/``) unless the registry or tracking store ``env`` names knows it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    tracking = env.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    registry = env.get("MLFLOW_REGISTRY_URI") or tracking
    hint = f"; check the name, or {_POINT}"
    for store in dict.fromkeys((tracking, registry)):
        problem = _store_problem(store)
        if problem:
            raise SpecError(f"{uri} cannot be resolved: {problem}", source=source, field=field)
    call, what = _lookup(uri, _shown(tracking), _shown(registry))
    # MLflow's HTTP client retries and waits on its own terms: create waits this long, and the look-up's thread
    # ends by MLflow's own timeouts.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiffin-mlflow-check")
    try:
        pool.submit(call, mlflow.MlflowClient(tracking_uri=tracking, registry_uri=registry)).result(
            timeout=MLFLOW_CHECK_TIMEOUT
        )
    except LookupError:
        raise SpecError(f"{uri}: {what} does not exist{hint}", source=source, field=field) from None
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or "not found" in exc.message.lower():
            raise SpecError(f"{uri}: {what} does not exist{hint}", source=source, field=field) from None
        raise SpecError(f"{uri} cannot be resolved: {_shown(exc.message)}", source=source, field=field) from None
    except FutureTimeout:
        raise SpecError(
            f"{uri} cannot be resolved: the MLflow store at {_shown(registry)} did not answer within "
            f"{MLFLOW_CHECK_TIMEOUT:g} s",
            source=source,
            field=field,
        ) from None
    finally:
        pool.shutdown(wait=False)
