"""Built environments, and which are in use: what ``tiffin environment list-built`` lists and ``prune`` keeps.

An environment (``$TIFFIN_HOME/envs/KEY``) is in use when a stored online or batch deployment, or a queued or
running batch job, resolves to its key, resolved as the supervisor resolves it before starting replicas
(references inlined, the runner kind decided, :func:`~tiffin.environments.sources.environment_of`,
:func:`~tiffin.environments.runtime.runtime_key`), or when a live process runs in it (a replica of an older
generation still draining, a batch worker). A deployment whose environment no longer resolves (a conda file
deleted, a registered environment gone) uses nothing and is reported, so the user learns why its environment
was not kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tiffin.assets.resolve import AssetStore, inline_assets
from tiffin.environments.builder import MARKER, envs_dir
from tiffin.environments.runtime import runtime_key
from tiffin.environments.sources import environment_of
from tiffin.environments.spec import EnvironmentSpec
from tiffin.errors import TiffinError
from tiffin.runners.factory import runner_kind
from tiffin.specs import BatchDeployment, OnlineDeployment, parse_spec
from tiffin.store.records import DeploymentRecord, JobRecord

__all__ = [
    "ACTIVE_JOB_STATUSES",
    "Usage",
    "built_environments",
    "deployment_environment_spec",
    "describe_built",
    "environments_in_use",
    "live_environments",
    "read_marker",
]

ACTIVE_JOB_STATUSES = frozenset({"Queued", "Running"})
"""A job in one of these statuses will run (or runs) its workers in the environment it was frozen with."""


@dataclass(frozen=True)
class Usage:
    """What uses which environment."""

    users: dict[str, list[str]] = field(default_factory=dict)
    """key -> who uses it (``"online deployment 'ep/blue'"``, ``"batch job 'j1'"``, ``"process 1234"``)."""
    unresolved: list[dict[str, str]] = field(default_factory=list)
    """``{"user": ..., "message": ...}`` for each deployment or job whose environment cannot be resolved."""
    own: list[str] = field(default_factory=list)
    """Those that run in tiffin's own environment (no environment of their own, or a runner that uses none)."""

    @property
    def keys(self) -> set[str]:
        """The keys in use."""
        return set(self.users)


def deployment_environment_spec(
    spec: Mapping[str, Any], kind: str, assets: AssetStore, *, name: str, endpoint: str | None = None
) -> EnvironmentSpec | None:
    """The environment a deployment spec (Azure's YAML shape, references pinned or not) runs in, as the
    supervisor resolves it: references inlined, the spec validated, the runner decided; None: tiffin's own.

    ``kind`` is ``"online"`` or ``"batch"``. Raises :class:`~tiffin.errors.TiffinError` (a :class:`SpecError`
    naming the field) when it cannot be resolved.
    """
    model = OnlineDeployment if kind == "online" else BatchDeployment
    source = f"{kind} deployment '{name}'"
    data = {**spec, "name": name, **({"endpoint_name": endpoint} if endpoint is not None else {})}
    runnable = parse_spec(inline_assets(assets, data, source=source), model, source).spec
    return environment_of(runnable, kind=runner_kind(runnable, source=source), owner=f"deployment '{name}'")


def environments_in_use(
    deployments: Iterable[DeploymentRecord],
    jobs: Iterable[JobRecord],
    assets: AssetStore,
    *,
    envs: Path | None = None,
) -> Usage:
    """The environments ``deployments`` (every stored one, whatever its state) and the queued or running
    ``jobs`` resolve to; with ``envs`` (``$TIFFIN_HOME/envs``), also those a live process runs in."""
    usage = Usage()
    for record in deployments:
        user = f"{record.kind} deployment '{record.endpoint_name}/{record.name}'"
        _add(usage, user, assets, record.spec, record.kind, record.name, record.endpoint_name)
    for job in jobs:
        # A job without a frozen spec predates freezing at invoke; its deployment, listed above, counts.
        if job.status in ACTIVE_JOB_STATUSES and job.spec is not None:
            name = job.deployment_name or job.name
            _add(usage, f"batch job '{job.name}'", assets, job.spec, "batch", name, job.endpoint_name)
    if envs is not None:
        for key, pids in live_environments(envs).items():
            usage.users.setdefault(key, []).extend(f"process {pid}" for pid in pids)
    return usage


def _add(
    usage: Usage, user: str, assets: AssetStore, spec: Mapping[str, Any], kind: str, name: str, endpoint: str
) -> None:
    try:
        found = deployment_environment_spec(spec, kind, assets, name=name, endpoint=endpoint)
    except TiffinError as exc:
        usage.unresolved.append({"user": user, "message": exc.message})
        return
    except (OSError, ValueError) as exc:  # a file the environment names that cannot be read as expected
        usage.unresolved.append({"user": user, "message": f"{type(exc).__name__}: {exc}"})
        return
    if found is None:
        usage.own.append(user)
    else:
        usage.users.setdefault(runtime_key(found), []).append(user)


def live_environments(envs: Path, proc: Path = Path("/proc")) -> dict[str, list[int]]:
    """key -> pids of this user's live processes whose ``VIRTUAL_ENV`` is ``envs/KEY`` (what
    :meth:`~tiffin.environments.runtime.PreparedEnvironment.process_env` sets): replicas of an older generation
    still draining after an update, batch workers, a server sharing this home. Empty where ``/proc`` is not."""
    root = os.path.realpath(envs)
    found: dict[str, list[int]] = {}
    try:
        entries = [entry for entry in os.scandir(proc) if entry.name.isdigit()]
    except OSError:
        return found
    for entry in entries:
        try:
            raw = Path(entry.path, "environ").read_bytes()  # another user's: PermissionError, skipped
        except OSError:
            continue
        for item in raw.split(b"\0"):
            if item.startswith(b"VIRTUAL_ENV="):
                folder = os.path.realpath(os.fsdecode(item[len(b"VIRTUAL_ENV=") :]))
                if os.path.dirname(folder) == root:
                    found.setdefault(os.path.basename(folder), []).append(int(entry.name))
                break
    return found


def built_environments(home: Path) -> list[Path]:
    """The complete environments under ``home/envs`` (a marker and an interpreter), by key."""
    root = envs_dir(home)
    if not root.is_dir():
        return []
    return sorted(
        child
        for child in root.iterdir()
        if not child.name.startswith(".") and (child / MARKER).is_file() and (child / "bin" / "python").exists()
    )


def read_marker(folder: Path) -> dict[str, Any]:
    """The marker (``tiffin-env.json``) of the environment in ``folder``; empty when it cannot be read."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_built(folder: Path) -> dict[str, Any]:
    """One built environment as the answers list it, from its marker."""
    marker = read_marker(folder)
    spec = marker.get("spec") if isinstance(marker.get("spec"), dict) else {}
    interpreter = marker.get("interpreter") if isinstance(marker.get("interpreter"), dict) else {}
    return {
        "key": folder.name,
        "path": str(folder),
        "python": interpreter.get("version"),
        "source": spec.get("source"),
        "built_at": marker.get("built_at"),
        "size_bytes": _size(folder),
    }


def _size(folder: Path) -> int:
    """Bytes the folder's files take, each file once (uv hard-links from its cache, so removing an environment
    may free less than this; what it frees of the environment's own files is this)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for parent, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            try:
                info = os.lstat(os.path.join(parent, name))
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_size
    return total
