"""What a batch job's workers are started with, worked out on tiffin's own Python before the pool starts.

* :func:`worker_settings`: the model laid out as ``AZUREML_MODEL_DIR`` (once per job, not once per worker), the
  scorer's settings (:func:`tiffin.runners.batch.scorer_settings`) and the job's own (output folder, logging
  level), as plain values: a worker in the deployment's environment reads no spec.
* :func:`job_environment`: the environment the deployment declares (its ``environment``, or an MLflow model's
  own files), resolved as online deployments resolve theirs (:func:`tiffin.environments.sources.environment_of`)
  and built if need be (:func:`tiffin.environments.runtime.prepare`), uv's output and ``[tiffin]`` lines saying
  what was resolved and skipped appended to the job's log. None: the workers run on tiffin's own Python.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tiffin.environments.runtime import PreparedEnvironment, describe, prepare
from tiffin.environments.spec import EnvironmentSpec
from tiffin.errors import EnvironmentBuildError
from tiffin.paths import model_mounts_dir
from tiffin.replica.layout import stage_model
from tiffin.runners.batch import scorer_settings

__all__ = ["RAY_ADDRESS_ENV", "BuildInterrupted", "job_environment", "ray_address", "warm_model", "worker_settings"]

RAY_ADDRESS_ENV = "TIFFIN_RAY_ADDRESS"
"""Names a Ray cluster (``ray://host:10001``, ``auto``, or ``local`` for a Ray started here): mini-batches
then run on Ray actors. Read from the deployment's environment_variables first, then tiffin serve's."""


def worker_settings(deployment: Any, *, home: Path, identity: str, output_path: Path) -> dict[str, Any]:
    """The settings every worker of a job gets (:data:`tiffin.batch.worker.WorkerSettings`); stages the model
    (a scoring script's, under the batch mount ``identity``; an MLflow model is loaded from its own path)."""
    scorer = scorer_settings(deployment, model_dir=None)
    if scorer["kind"] == "script":
        model_dir = stage_model(deployment, model_mounts_dir(home), identity=identity)
        scorer["model_dir"] = str(model_dir) if model_dir is not None else None
    return {
        "scorer": scorer,
        "output_path": str(output_path),
        "logging_level": str(deployment.settings.logging_level or "info").upper(),
    }


def ray_address(deployment: Any, environ: Mapping[str, str] = os.environ) -> str | None:
    """The Ray cluster the deployment's mini-batches run on (:data:`RAY_ADDRESS_ENV`); None: workers here."""
    overrides = {str(k): str(v) for k, v in deployment.environment_variables.items()}
    return overrides.get(RAY_ADDRESS_ENV) or environ.get(RAY_ADDRESS_ENV) or None


def warm_model(scorer: Mapping[str, Any]) -> str | None:
    """The local MLflow model folder whose flavour's imports spare workers warm (:meth:`tiffin.batch.pool.
    LocalPool.keep_spares`); None for a scoring script or a ``runs:/``/``models:/`` URI (nothing local to read)."""
    model = str(scorer.get("model_uri") or "") if scorer.get("kind") == "mlflow" else ""
    if not model or model.startswith(("runs:/", "models:/")):
        return None
    return model[len("file://") :] if model.startswith("file://") else model


class BuildInterrupted(Exception):
    """The job was canceled, taken over or the server stops while its environment was being built."""


def job_environment(
    spec: EnvironmentSpec,
    *,
    home: Path,
    log_path: Path,
    title: str,
    interrupted: Callable[[], bool] = lambda: False,
    environ: Mapping[str, str] = os.environ,
    poll_s: float = 0.5,
) -> PreparedEnvironment:
    """``spec``'s environment, built now unless it already is; what was resolved and uv's output appended to the
    job's log at ``log_path`` under a ``--- title ---`` line.

    The build runs in a thread of its own so that ``interrupted`` is polled meanwhile: when it says so,
    :class:`BuildInterrupted` is raised at once and the build goes on to its end in the background (its result
    is kept in ``envs/`` for the next job; ``tiffin serve`` stopping ends it with :func:`~tiffin.environments.
    builder.stop_builds`). A build or interpreter error raises :class:`~tiffin.errors.EnvironmentBuildError`
    with uv's message."""
    result: dict[str, Any] = {}

    def build() -> None:
        try:
            with open(log_path, "a", encoding="utf-8", buffering=1) as log:  # beside the runner's own lines
                describe(spec, title, log)
                result["prepared"] = prepare(spec, home, log=log, environ=environ)
        except BaseException as exc:  # handed to the job's thread, which reports it
            result["error"] = exc

    thread = threading.Thread(target=build, name="tiffin-batch-environment", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(poll_s)
        if thread.is_alive() and interrupted():
            raise BuildInterrupted
    error = result.get("error")
    if error is not None:
        raise error
    prepared = result.get("prepared")
    if prepared is None:  # pragma: no cover - prepare returns or raises
        raise EnvironmentBuildError(f"building the environment of {spec.source} ended without a result")
    return prepared
