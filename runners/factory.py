"""Choose the runner for a deployment spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tiffin.errors import SpecError
from tiffin.runners.byoc import ByocRunner, ByocRunnerConfig
from tiffin.runners.mlflow import MLflowRunner, MLflowRunnerConfig
from tiffin.runners.protocol import Runner
from tiffin.runners.script import ScriptRunner, ScriptRunnerConfig

__all__ = ["is_mlflow_model", "runner_for"]


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


def runner_for(deployment: Any, *, model_dir: Path | None, source: str | None = None) -> Runner:
    """The runner that serves ``deployment`` (an online or batch deployment spec).

    ``model_dir`` is the directory laid out as Azure's ``AZUREML_MODEL_DIR`` (see
    :func:`tiffin.replica.layout.stage_model`).
    """
    code = deployment.code_configuration
    env = {str(k): str(v) for k, v in (deployment.environment_variables or {}).items()}
    if code is not None and code.scoring_script:
        return ScriptRunner(
            ScriptRunnerConfig(
                code_dir=Path(code.code),
                scoring_script=code.scoring_script,
                model_dir=model_dir,
                environment_variables=env,
            )
        )
    byoc = _byoc_config(deployment, model_dir, env) if code is None else None
    if byoc is not None:
        return ByocRunner(byoc)
    if is_mlflow_model(deployment):
        model = deployment.model
        uri = model if isinstance(model, str) else model.path
        return MLflowRunner(MLflowRunnerConfig(model_uri=uri, environment_variables=env))
    raise SpecError(
        "a deployment needs code_configuration (code + scoring_script), an MLflow model "
        "(model.type: mlflow_model) served without one, or a server of its own (environment.command, or "
        "environment.image with inference_config)",
        source=source,
        field="code_configuration",
    )


def _byoc_config(deployment: Any, model_dir: Path | None, env: dict[str, str]) -> ByocRunnerConfig | None:
    """The user's own server: ``environment.command``, or an image with ``inference_config``."""
    environment = deployment.environment
    if environment is None or isinstance(environment, str):
        return None
    routes = environment.inference_config
    if not (environment.command or (environment.image and routes)):
        return None
    scoring = routes.scoring_route if routes else None
    readiness = (routes.readiness_route or routes.liveness_route) if routes else None
    return ByocRunnerConfig(
        command=environment.command,
        image=None if environment.command else environment.image,
        scoring_path=scoring.path if scoring else "/score",
        readiness_path=readiness.path if readiness else "/",
        container_port=scoring.port if scoring else None,
        model_dir=model_dir,
        environment_variables=env,
    )
