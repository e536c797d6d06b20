"""A runner from its kind and config as JSON, importing only that runner's module.

A replica started from a plan (:mod:`tiffin.replica.plan`) builds its runner here: in a deployment's own
environment that is the script or MLflow runner alone, never Triton's client or tiffin's spec models.
"""

from __future__ import annotations

import importlib
from typing import Any

from tiffin.replica.plan import runner_config_from_json, runner_config_to_json

__all__ = ["runner_from_json", "runner_to_json"]

_KINDS = {
    "script": ("tiffin.runners.script", "ScriptRunner", "ScriptRunnerConfig"),
    "mlflow": ("tiffin.runners.mlflow", "MLflowRunner", "MLflowRunnerConfig"),
    "triton": ("tiffin.runners.triton", "TritonRunner", "TritonRunnerConfig"),
    "byoc": ("tiffin.runners.byoc", "ByocRunner", "ByocRunnerConfig"),
}


def runner_to_json(config: Any) -> tuple[str, dict[str, Any]]:
    """(kind, JSON) of a runner config dataclass."""
    for kind, (module, _, config_name) in _KINDS.items():
        if type(config).__name__ == config_name and type(config).__module__ == module:
            return kind, runner_config_to_json(config)
    raise TypeError(f"{type(config).__qualname__} is not the config of one of tiffin's runners")


def runner_from_json(kind: str, data: dict[str, Any]) -> Any:
    """The runner of ``kind`` with the config ``data`` (not yet loaded)."""
    try:
        module_name, runner_name, config_name = _KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown runner kind {kind!r}; expected one of {', '.join(_KINDS)}") from None
    module = importlib.import_module(module_name)
    config = runner_config_from_json(getattr(module, config_name), data)
    return getattr(module, runner_name)(config)
