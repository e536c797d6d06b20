"""What one replica runs, decided before it starts: the runner and its settings, as plain JSON.

tiffin's own Python reads the deployment's YAML (pydantic models, asset references, the model laid out as
``AZUREML_MODEL_DIR``) and writes a :class:`ReplicaPlan`; the replica reads the plan. So a replica needs none of
tiffin's spec machinery and runs in a deployment's own environment on Python 3.8 to 3.13 (see
:mod:`tiffin.environments.runtime`): this module, :mod:`tiffin.replica.run` and the runners they start import
only the standard library and uvicorn.

``tiffin serve``'s supervisor writes one plan per deployment template (``deployment-GEN.plan.json``) and
starts replicas with ``python -m tiffin.replica.run --plan FILE``; ``tiffin replica serve -f deployment.yml`` and
the BentoML service make the plan in their own process (:func:`tiffin.replica.factory.plan_from_file`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["PLAN_ENV", "ReplicaPlan", "read_plan", "runner_config_from_json", "runner_config_to_json", "write_plan"]

PLAN_ENV = "TIFFIN_REPLICA_PLAN"
"""Holds the plan's JSON for uvicorn's worker processes, which build the app from it (``create_app``)."""

_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class ReplicaPlan:
    """One replica's runner (``kind`` and its config as JSON) and server settings."""

    kind: str
    """``script``, ``mlflow``, ``triton`` or ``byoc`` (:data:`tiffin.runners.factory.RunnerKind`)."""
    runner: dict[str, Any]
    """The runner's config dataclass as JSON (:func:`runner_config_to_json`)."""
    name: str
    version: str = "1"
    model_names: tuple[str, ...] = ()
    workers: int = 1
    max_body_bytes: int = 100 * 1024 * 1024
    scoring_threads: int = 1
    warnings: tuple[str, ...] = ()
    """Printed by the replica as it starts (fields tiffin ignores, and the like)."""
    tracing: dict[str, Any] | None = None
    """``traces_url``, ``endpoint``, ``deployment`` when replicas trace scoring (:mod:`tiffin.telemetry.replica`)."""

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["format"] = _FORMAT
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ReplicaPlan:
        data = json.loads(text)
        if data.pop("format", None) != _FORMAT:
            raise ValueError("this replica plan was written by another version of tiffin; restart tiffin serve")
        for name in ("model_names", "warnings"):
            data[name] = tuple(data.get(name) or ())
        return cls(**data)


def write_plan(plan: ReplicaPlan, path: Path) -> None:
    """Write ``plan`` to ``path`` whole (a replica never reads half a plan)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(plan.to_json(), encoding="utf-8")
    os.replace(partial, path)


def read_plan(path: str | Path) -> ReplicaPlan:
    return ReplicaPlan.from_json(Path(path).read_text(encoding="utf-8"))


def runner_config_to_json(config: Any) -> dict[str, Any]:
    """A runner's config dataclass as JSON: paths as strings, sets and tuples as lists."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, (frozenset, set)):
            value = sorted(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, dict) or (hasattr(value, "keys") and hasattr(value, "items")):
            value = dict(value)
        out[field.name] = value
    return out


def runner_config_from_json(config_type: Any, data: dict[str, Any]) -> Any:
    """``config_type`` (a runner's config dataclass) from :func:`runner_config_to_json`'s JSON; fields are
    converted back by their declared type (``Path``, ``frozenset``, ``tuple``/``Sequence``)."""
    kwargs: dict[str, Any] = {}
    for field in dataclasses.fields(config_type):
        if field.name not in data:
            continue
        value = data[field.name]
        declared = str(field.type)  # a string under `from __future__ import annotations`
        # Only the JSON forms that to_json writes are converted: a str stays a str where a Sequence[str] may hold
        # one (a BYOC command line, given as a string), rather than becoming a tuple of its characters.
        if isinstance(value, str) and "Path" in declared:
            value = Path(value)
        elif isinstance(value, list) and declared.startswith("frozenset"):
            value = frozenset(value)
        elif isinstance(value, list) and declared.startswith(("Sequence", "tuple")):
            value = tuple(value)
        kwargs[field.name] = value
    return config_type(**kwargs)
