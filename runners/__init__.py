"""Runners: one module per kind of model server behind a deployment.

Every runner implements :class:`Runner` (load / predict / health / close / schema). The replica
does not know which kind it holds; :func:`runner_for` picks one from a deployment spec.

Names are imported on first use (PEP 562): a replica in a deployment's environment imports
``tiffin.runners.protocol`` and its one runner, never :mod:`tiffin.runners.factory` (which reads specs with
pydantic) nor the other runners' clients (see :mod:`tiffin.environments.runtime`).
"""

from typing import TYPE_CHECKING

from tiffin._lazy import lazy_attributes

_WHERE = {
    **dict.fromkeys(("ByocRunner", "ByocRunnerConfig"), "tiffin.runners.byoc"),
    **dict.fromkeys(("is_mlflow_model", "is_triton_model", "runner_for"), "tiffin.runners.factory"),
    **dict.fromkeys(("MLflowRunner", "MLflowRunnerConfig"), "tiffin.runners.mlflow"),
    **dict.fromkeys(
        ("JSON_CONTENT_TYPE", "Runner", "RunnerSchema", "ScoreRequest", "ScoreResponse"), "tiffin.runners.protocol"
    ),
    **dict.fromkeys(("ScriptRunner", "ScriptRunnerConfig"), "tiffin.runners.script"),
    **dict.fromkeys(("TritonRunner", "TritonRunnerConfig"), "tiffin.runners.triton"),
}

if TYPE_CHECKING:
    from tiffin.runners.byoc import ByocRunner, ByocRunnerConfig
    from tiffin.runners.factory import is_mlflow_model, is_triton_model, runner_for
    from tiffin.runners.mlflow import MLflowRunner, MLflowRunnerConfig
    from tiffin.runners.protocol import JSON_CONTENT_TYPE, Runner, RunnerSchema, ScoreRequest, ScoreResponse
    from tiffin.runners.script import ScriptRunner, ScriptRunnerConfig
    from tiffin.runners.triton import TritonRunner, TritonRunnerConfig

__getattr__ = lazy_attributes("tiffin.runners", globals(), _WHERE)

__all__ = [
    "JSON_CONTENT_TYPE",
    "ByocRunner",
    "ByocRunnerConfig",
    "MLflowRunner",
    "MLflowRunnerConfig",
    "Runner",
    "RunnerSchema",
    "ScoreRequest",
    "ScoreResponse",
    "ScriptRunner",
    "ScriptRunnerConfig",
    "TritonRunner",
    "TritonRunnerConfig",
    "is_mlflow_model",
    "is_triton_model",
    "runner_for",
]
