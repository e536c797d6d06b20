"""Runners: one module per kind of model server behind a deployment.

Every runner implements :class:`Runner` (load / predict / health / close / schema). The replica
does not know which kind it holds; :func:`runner_for` picks one from a deployment spec.
"""

from tiffin.runners.byoc import ByocRunner, ByocRunnerConfig
from tiffin.runners.factory import is_mlflow_model, is_triton_model, runner_for
from tiffin.runners.mlflow import MLflowRunner, MLflowRunnerConfig
from tiffin.runners.protocol import JSON_CONTENT_TYPE, Runner, RunnerSchema, ScoreRequest, ScoreResponse
from tiffin.runners.script import ScriptRunner, ScriptRunnerConfig
from tiffin.runners.triton import TritonRunner, TritonRunnerConfig

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
