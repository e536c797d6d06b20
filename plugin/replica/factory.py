"""A replica's plan (and app) from a deployment YAML: spec → model layout → runner config → plan."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from tiffin.config import tiffin_home
from tiffin.paths import deployment_dir, local_mount_identity, model_mounts_dir, online_mount_identity
from tiffin.replica.app import ReplicaApp
from tiffin.replica.layout import stage_model
from tiffin.replica.plan import ReplicaPlan
from tiffin.replica.run import app_from_plan
from tiffin.runners.factory import runner_config_for, serves_model_itself
from tiffin.runners.kinds import runner_to_json
from tiffin.specs import LoadedSpec, OnlineDeployment, load_spec
from tiffin.telemetry.settings import TelemetrySettings

__all__ = ["app_from_file", "plan_for", "plan_from_file", "replica_settings"]


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


def plan_for(
    loaded: LoadedSpec[OnlineDeployment], *, home: Path | None = None, environ: Mapping[str, str] = os.environ
) -> ReplicaPlan:
    """The plan of a replica of the loaded deployment: its model laid out (for a scoring script), its runner's
    config, its server settings. What a replica needs of the spec, so it reads no YAML itself."""
    deployment = loaded.spec
    home = home or tiffin_home()
    identity = _mount_identity(home, Path(loaded.source), deployment.endpoint_name, deployment.name)
    # Azure's AZUREML_MODEL_DIR layout is for scoring scripts; MLflow and Triton load from the model's path/URI.
    mounts = model_mounts_dir(home)
    model_dir = None if serves_model_itself(deployment) else stage_model(deployment, mounts, identity=identity)
    aliases = frozenset(n for n in (deployment.endpoint_name,) if n)
    config = runner_config_for(deployment, model_dir=model_dir, source=str(loaded.source), aliases=aliases)
    kind, runner = runner_to_json(config)
    settings = replica_settings({**environ, **(deployment.environment_variables or {})})
    # The server's exporter (not the deployment's variables) says where spans go; the YAML whether to send them.
    telemetry = TelemetrySettings.from_environment(environ)
    tracing = None
    if telemetry.otlp_endpoint and telemetry.traces(deployment.app_insights_enabled):
        tracing = {
            "traces_url": telemetry.otlp_endpoint,
            "endpoint": deployment.endpoint_name,
            "deployment": deployment.name,
        }
    return ReplicaPlan(
        kind=kind,
        runner=runner,
        name=deployment.name,
        version=str(getattr(deployment.model, "version", None) or "1"),
        model_names=tuple(sorted(aliases)),
        workers=settings["workers"],
        max_body_bytes=settings["max_body_bytes"],
        scoring_threads=settings["scoring_threads"],
        warnings=tuple(f"{Path(loaded.source).name}: {line}" for line in loaded.warnings()),
        tracing=tracing,
    )


def plan_from_file(path: str | Path, overrides: Sequence[str] = (), *, home: Path | None = None) -> ReplicaPlan:
    """The replica plan of the deployment YAML at ``path`` (:func:`plan_for`)."""
    return plan_for(load_spec(path, OnlineDeployment, overrides=overrides), home=home)


def app_from_file(
    path: str | Path, overrides: Sequence[str] = (), *, home: Path | None = None
) -> tuple[ReplicaApp, LoadedSpec[OnlineDeployment]]:
    """The replica app for the deployment in ``path`` (not yet loaded: call ``startup``), and the spec."""
    loaded = load_spec(path, OnlineDeployment, overrides=overrides)
    return app_from_plan(plan_for(loaded, home=home)), loaded


def _mount_identity(home: Path, source: Path, endpoint: str | None, deployment: str) -> str:
    """The deployment's own model mount: ``tiffin serve``'s replicas (their spec is in the deployment's folder)
    share one per deployment; a spec run from anywhere else gets one per file, so it never swaps the model of
    a served deployment of the same names."""
    if endpoint and source.resolve().parent == deployment_dir(home, endpoint, deployment).resolve():
        return online_mount_identity(endpoint, deployment)
    return local_mount_identity(source, deployment)
