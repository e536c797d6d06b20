"""Choose the runner for a deployment spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tiffin.errors import SpecError
from tiffin.runners.byoc import ByocRunner, ByocRunnerConfig
from tiffin.runners.mlflow import MLflowRunner, MLflowRunnerConfig
from tiffin.runners.protocol import Runner
from tiffin.runners.script import ScriptRunner, ScriptRunnerConfig
from tiffin.runners.triton import TritonRunner, TritonRunnerConfig

__all__ = ["is_mlflow_model", "is_triton_model", "runner_for", "serves_model_itself"]


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


def runner_for(
    deployment: Any, *, model_dir: Path | None, source: str | None = None, aliases: frozenset[str] = frozenset()
) -> Runner:
    """The runner that serves ``deployment`` (an online or batch deployment spec).

    ``model_dir`` is the directory laid out as Azure's ``AZUREML_MODEL_DIR`` (see
    :func:`tiffin.replica.layout.stage_model`); ``aliases`` are the V2 model names (the endpoint's) that
    a runner serving several models of its own (Triton) maps to its default model.
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
    if is_triton_model(deployment):
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
    byoc = _byoc_config(deployment, model_dir, env) if code is None else None
    if byoc is not None:
        return ByocRunner(byoc)
    if is_mlflow_model(deployment):
        model = deployment.model
        uri = model if isinstance(model, str) else model.path
        return MLflowRunner(MLflowRunnerConfig(model_uri=uri, environment_variables=env))
    raise SpecError(
        "a deployment needs code_configuration (code + scoring_script), an MLflow model "
        "(model.type: mlflow_model) or a Triton model repository (model.type: triton_model) served without one, "
        "or a server of its own (environment.command, or "
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
