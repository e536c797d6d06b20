"""A deployment's log files kept bounded, and its event log (Azure's ``AmlOnlineEndpointEventLog``).

Replicas append to their ``replica-N.log`` themselves (O_APPEND, no pipe through the supervisor), on whatever
Python their environment has, and uvicorn's workers share the file, so none of them can rotate it. The supervisor
does, from outside: past ``TIFFIN_LOG_MAX_BYTES`` it copies the file to ``FILE.1`` (older copies shifted up to
``TIFFIN_LOG_BACKUPS``) and truncates it; the replicas' next appends start the file again (logrotate's
``copytruncate``: a line written between the copy and the truncation is lost, nothing else).

The event log is one JSON object a line (``time``, ``name``, ``message``, ``instance`` when about one replica),
written by the supervisor and the control plane of this server, rotated on write.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tiffin import config, paths
from tiffin.errors import TiffinError

__all__ = ["EVENTS", "read_events", "record_event", "record_traffic_change", "rotate_file", "rotate_logs"]

logger = logging.getLogger("tiffin.supervisor")

EVENTS = (
    "DeploymentCreated",
    "DeploymentUpdated",
    "DeploymentSucceeded",
    "DeploymentFailed",
    "EnvironmentReady",
    "EnvironmentFailed",
    "InstancesChanged",
    "TrafficChanged",
    "ReplicaStarted",
    "ReplicaReady",
    "ReplicaUnready",
    "ReplicaFailed",
    "ReplicaRestarting",
    "ReplicaStopped",
)
"""Every event ``name`` written (the studio and the docs list them)."""

_lock = threading.Lock()  # the supervisor (event loop) and the control plane (threads) write one file


def rotate_file(path: Path, max_bytes: int, backups: int) -> bool:
    """If ``path`` is larger than ``max_bytes``: copy it to ``path.1`` (shifting older copies, at most ``backups``)
    and truncate it in place, so processes appending to it carry on in the emptied file. Whether it rotated."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except OSError:
        return False
    for number in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{number}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{number + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with open(path, "r+b") as file:
        file.truncate(0)
    return True


def rotate_logs(home: Path, max_bytes: int, backups: int) -> list[Path]:
    """Rotate every deployment's replica and environment logs under ``home`` that grew past ``max_bytes``."""
    rotated = []
    for path in sorted((home / "logs").glob("*/*/*.log")):
        if path.name != "events.log":  # rotated as it is written
            try:
                if rotate_file(path, max_bytes, backups):
                    rotated.append(path)
            except OSError as exc:
                logger.warning("could not rotate %s: %s", path, exc)
    return rotated


def record_event(
    home: Path, endpoint: str, deployment: str, name: str, message: str, *, instance: str | None = None
) -> None:
    """Append one event to the deployment's ``events.log`` (never raises: an event is not worth a failure)."""
    event: dict[str, Any] = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "name": name}
    if instance is not None:
        event["instance"] = instance
    event["message"] = message
    line = json.dumps(event, ensure_ascii=False) + "\n"
    try:
        path = paths.events_log_path(home, endpoint, deployment)
        limit = max(4096, config.log_max_bytes() // 10)  # events are few and small: a tenth of the size
        with _lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Rotated before the write that would take it past the limit, so no file ever holds more.
            rotate_file(path, limit - len(line.encode()), config.log_backups())
            with open(path, "a", encoding="utf-8") as file:
                file.write(line)
    except (OSError, ValueError, TiffinError) as exc:
        logger.warning("could not record event %s of %s/%s: %s", name, endpoint, deployment, exc)


def read_events(home: Path, endpoint: str, deployment: str, limit: int) -> list[dict[str, Any]]:
    """The deployment's last ``limit`` events, oldest first (rotated copies read as far as needed)."""
    current = paths.events_log_path(home, endpoint, deployment)
    found: list[dict[str, Any]] = []
    for path in [current, *(current.with_name(f"events.log.{n}") for n in range(1, config.log_backups() + 1))]:
        with contextlib.suppress(FileNotFoundError):
            found = [*_parse(path.read_text(encoding="utf-8", errors="replace").splitlines()), *found]
        if len(found) >= limit:
            break
    return found[-limit:] if limit > 0 else []


def _parse(lines: Iterable[str]) -> list[dict[str, Any]]:
    events = []
    for line in lines:
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


Split = tuple[dict[str, int], dict[str, int]]


def record_traffic_change(home: Path, endpoint: str, before: Split, after: Split) -> None:
    """A ``TrafficChanged`` event for each deployment whose live or mirror share changed (the control plane)."""
    for deployment in sorted({*before[0], *before[1], *after[0], *after[1]}):
        changes = [
            f"{what} {old.get(deployment, 0)}% -> {new.get(deployment, 0)}%"
            for what, old, new in (("traffic", before[0], after[0]), ("mirror traffic", before[1], after[1]))
            if old.get(deployment, 0) != new.get(deployment, 0)
        ]
        if changes:
            record_event(home, endpoint, deployment, "TrafficChanged", "; ".join(changes))
