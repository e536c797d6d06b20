"""Choose the runner for a deployment spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from tiffin.errors import SpecError
from tiffin.runners.byoc import ByocRunner, ByocRunnerConfig
from tiffin.runners.mlflow import MLflowRunner, MLflowRunnerConfig
from tiffin.runners.protocol import Runner
from tiffin.runners.script import ScriptRunner, ScriptRunnerConfig
from tiffin.runners.triton import TritonRunner, TritonRunnerConfig

__all__ = ["RunnerKind", "is_mlflow_model", "is_triton_model", "runner_for", "runner_kind", "serves_model_itself"]

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


def runner_for(
    deployment: Any, *, model_dir: Path | None, source: str | None = None, aliases: frozenset[str] = frozenset()
) -> Runner:
    """The runner that serves ``deployment`` (an online or batch deployment spec).

    ``model_dir`` is the directory laid out as Azure's ``AZUREML_MODEL_DIR`` (see
    :func:`tiffin.replica.layout.stage_model`); ``aliases`` are the V2 model names (the endpoint's) that
    a runner serving several models of its own (Triton) maps to its default model.
    """
    kind = runner_kind(deployment, source=source)
    code = deployment.code_configuration
    env = {str(k): str(v) for k, v in (deployment.environment_variables or {}).items()}
    if kind == "script":
        return ScriptRunner(
            ScriptRunnerConfig(
                code_dir=Path(code.code),
                scoring_script=code.scoring_script,
                model_dir=model_dir,
                environment_variables=env,
            )
        )
    if kind == "triton":
        path = deployment.model.path
        remote = path.startswith(("http://", "https://"))
        return TritonRunner(
            TritonRunnerConfig(
                repository=None if remote else Path(path),
                url=path if remote else None,
                model_aliases=aliases | {deployment.name},
                environment_variables=env,
            )
        )
    if kind == "byoc":
        return ByocRunner(_byoc_config(deployment, model_dir, env))
    model = deployment.model
    uri = model if isinstance(model, str) else model.path
    return MLflowRunner(MLflowRunnerConfig(model_uri=uri, environment_variables=env))


def _has_own_server(deployment: Any) -> bool:
    """The user's own server: ``environment.command``, or an image with ``inference_config``."""
    environment = deployment.environment
    if environment is None or isinstance(environment, str):
        return False
    return bool(environment.command or (environment.image and environment.inference_config))


def _byoc_config(deployment: Any, model_dir: Path | None, env: dict[str, str]) -> ByocRunnerConfig:
    """How to run and reach the user's own server (see :func:`_has_own_server`)."""
    environment = deployment.environment
    routes = environment.inference_config
    scoring = routes.scoring_route if routes else None
    readiness = (routes.readiness_route or routes.liveness_route) if routes else None
    return ByocRunnerConfig(
        command=environment.command,
        image=None if environment.command else environment.image,
        scoring_path=scoring.path if scoring else "/score",
        readiness_path=readiness.path if readiness else "/",
        liveness_path=routes.liveness_route.path if routes and routes.liveness_route else None,
        container_port=scoring.port if scoring else None,
        model_dir=model_dir,
        environment_variables=env,
    )
