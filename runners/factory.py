"""Choose the runner for a deployment spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tiffin.errors import SpecError
from tiffin.runners.protocol import Runner
from tiffin.runners.script import ScriptRunner, ScriptRunnerConfig

__all__ = ["runner_for"]


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
    raise SpecError(
        "a deployment needs code_configuration (code + scoring_script) to be served by a scoring script; "
        "MLflow, Triton and custom-container deployments come with their own runners",
        source=source,
        field="code_configuration",
    )
