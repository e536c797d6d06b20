"""Build a replica's ASGI app from a deployment YAML: spec → model layout → runner → app."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tiffin.config import tiffin_home
from tiffin.paths import deployment_dir, local_mount_identity, model_mounts_dir, online_mount_identity
from tiffin.replica.app import ReplicaApp
from tiffin.replica.layout import stage_model
from tiffin.runners import runner_for
from tiffin.runners.factory import serves_model_itself
from tiffin.specs import LoadedSpec, OnlineDeployment, load_spec

__all__ = ["app_from_file", "replica_settings"]


def replica_settings(environment: Mapping[str, str]) -> dict[str, int]:
    """Server settings a deployment may set through Azure's inference-server variables.

    ``WORKER_COUNT`` (azmlinfsrv's name) is the number of worker processes, each running ``init()``.
    """

    def number(name: str, default: int) -> int:
        value = environment.get(name)
        return int(value) if value and str(value).isdigit() else default

    return {
        "workers": max(1, number("WORKER_COUNT", 1)),
        "max_body_bytes": number("TIFFIN_MAX_REQUEST_BYTES", 100 * 1024 * 1024),
        "scoring_threads": number("TIFFIN_SCORING_THREADS", 1),
    }


def app_from_file(
    path: str | Path, overrides: Sequence[str] = (), *, home: Path | None = None
) -> tuple[ReplicaApp, LoadedSpec[OnlineDeployment]]:
    """The replica app for the deployment in ``path`` (not yet loaded: call ``startup``), and the spec."""
    loaded = load_spec(path, OnlineDeployment, overrides=overrides)
    deployment = loaded.spec
    home = home or tiffin_home()
    identity = _mount_identity(home, Path(loaded.source), deployment.endpoint_name, deployment.name)
    # Azure's AZUREML_MODEL_DIR layout is for scoring scripts; MLflow and Triton load from the model's path/URI.
    mounts = model_mounts_dir(home)
    model_dir = None if serves_model_itself(deployment) else stage_model(deployment, mounts, identity=identity)
    aliases = frozenset(n for n in (deployment.endpoint_name,) if n)
    runner = runner_for(deployment, model_dir=model_dir, source=str(loaded.source), aliases=aliases)
    settings = replica_settings({**os.environ, **(deployment.environment_variables or {})})
    app = ReplicaApp(
        runner,
        name=deployment.name,
        model_names=aliases,
        version=str(getattr(deployment.model, "version", None) or "1"),
        max_body_bytes=settings["max_body_bytes"],
        scoring_threads=settings["scoring_threads"],
    )
    return app, loaded


def _mount_identity(home: Path, source: Path, endpoint: str | None, deployment: str) -> str:
    """The deployment's own model mount: ``tiffin serve``'s replicas (their spec is in the deployment's folder)
    share one per deployment; a spec run from anywhere else gets one per file, so it never swaps the model of
    a served deployment of the same names."""
    if endpoint and source.resolve().parent == deployment_dir(home, endpoint, deployment).resolve():
        return online_mount_identity(endpoint, deployment)
    return local_mount_identity(source, deployment)
