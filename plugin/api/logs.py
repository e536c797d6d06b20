"""A deployment's logs and events over REST, as ``az ml online-deployment get-logs`` shows Azure's.

``GET .../deployments/D/logs``: the last ``lines`` lines (at most :data:`MAX_LINES`) of ``container``
``inference-server`` (replica ``instance``'s console log: the scoring code's output and ``logging``, each line
stamped with its time and instance) or ``storage-initializer`` (what readied the deployment before its replicas
started: its environment's resolution and build), both (first the second) when no container is named. The answer's
``X-Tiffin-Log-Offset`` header is where the console log ends; ``?offset=N`` returns what was written after byte
``N`` (at most :data:`MAX_CHUNK` bytes) and the next offset, which is how ``get-logs --follow`` polls.

``GET .../deployments/D/events``: the deployment's last ``limit`` lifecycle events (:mod:`tiffin.supervisor.logfiles`).

Both need the admin token (the route table's default); the names in the path are validated by
:func:`tiffin.paths.safe_name` before any file is opened, so no request reaches outside ``TIFFIN_HOME/logs``.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tiffin.errors import BadRequestError, NotFoundError
from tiffin.paths import environment_log_path, replica_log_path

from .control import ControlPlane, tail_lines
from .operations import LOG_INSTANCE, Operation, QueryParam

__all__ = [
    "CONTAINERS",
    "LOG_OPERATIONS",
    "LOG_SCHEMAS",
    "MAX_CHUNK",
    "MAX_LINES",
    "Choice",
    "LogHandlers",
]

Handler = Callable[[Request], Awaitable[Any]]

MAX_LINES = 10_000
"""The most lines one answer holds (``lines`` or ``limit`` above it: 400)."""
MAX_CHUNK = 1024 * 1024
"""The most bytes one ``?offset=`` answer holds; the next asks from where it stopped."""
OFFSET_HEADER = "X-Tiffin-Log-Offset"

CONTAINERS = ("inference-server", "storage-initializer")
"""Azure's ``--container`` values: the replica's console, and what prepared the deployment."""


@dataclass(frozen=True, slots=True)
class Choice:
    """An optional query parameter with a fixed set of string values (``?container=inference-server``)."""

    name: str
    choices: tuple[str, ...]
    description: str


LINES = QueryParam("lines", 100, 1, f"How many lines, from the end (at most {MAX_LINES}).")
LIMIT = QueryParam("limit", 100, 1, f"How many events, the newest (at most {MAX_LINES}).")
OFFSET = QueryParam("offset", 0, 0, f"Only what the console log holds after this byte (the last {OFFSET_HEADER}).")
CONTAINER = Choice(
    "container",
    CONTAINERS,
    "inference-server: the replica's console log; storage-initializer: the environment's preparation. "
    "Neither: both, that one first.",
)

_DEP = "/online-endpoints/{name}/deployments/{deployment}"

LOG_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        _DEP + "/logs",
        "get_logs",
        "The last lines of a deployment's logs, as `az ml online-deployment get-logs` (container, lines, instance).",
        returns="text",
        query=(LINES, LOG_INSTANCE, CONTAINER, OFFSET),  # type: ignore[arg-type]  # Choice: openapi.py knows it
    ),
    Operation(
        "GET",
        _DEP + "/events",
        "get_events",
        "A deployment's lifecycle events, oldest first: created, environment, replicas started/ready/failed, "
        "instances and traffic changed.",
        returns="EventList",
        query=(LIMIT,),
    ),
)

LOG_SCHEMAS: dict[str, dict[str, Any]] = {
    "Event": {
        "type": "object",
        "required": ["time", "name", "message"],
        "properties": {
            "time": {"type": "string", "format": "date-time"},
            "name": {"type": "string", "description": "ReplicaStarted, ReplicaReady, ReplicaFailed, TrafficChanged…"},
            "instance": {"type": "string", "description": "The replica it is about (DEPLOYMENT-N), if one."},
            "message": {"type": "string"},
        },
    },
    "EventList": {"type": "array", "items": {"$ref": "#/components/schemas/Event"}},
}


def _int(request: Request, param: QueryParam, maximum: int | None = None) -> int | None:
    raw = request.query_params.get(param.name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError(f"query parameter '{param.name}' must be a whole number, not {raw!r}") from None
    if value < param.minimum or (maximum is not None and value > maximum):
        top = "" if maximum is None else f" and at most {maximum}"
        raise BadRequestError(f"query parameter '{param.name}' must be at least {param.minimum}{top}, not {value}")
    return value


def _choice(request: Request, param: Choice) -> str | None:
    raw = request.query_params.get(param.name)
    if raw is not None and raw not in param.choices:
        raise BadRequestError(f"query parameter '{param.name}' must be one of {', '.join(param.choices)}, not {raw!r}")
    return raw


def _tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of ``path`` and, when it has fewer, of its last rotated copy before them."""
    text = tail_lines(path, lines) if path.is_file() else ""
    older = path.with_name(path.name + ".1")
    if text.count("\n") < lines and older.is_file():
        text = tail_lines(older, lines - text.count("\n")) + text
    return text


def _read_from(path: Path, offset: int) -> tuple[bytes, int]:
    """What ``path`` holds after byte ``offset`` (from its start if it was rotated below that) and the next offset."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            start = offset if offset <= size else 0
            file.seek(start)
            data = file.read(MAX_CHUNK)
    except FileNotFoundError:
        return b"", 0
    end = data.rfind(b"\n") + 1 if len(data) == MAX_CHUNK else len(data)  # whole lines when cut short
    return data[:end] if end else data, start + (end or len(data))


class LogHandlers:
    """The coroutines of :data:`LOG_OPERATIONS` over one control plane (for its deployments) and ``home``."""

    def __init__(self, control: ControlPlane, home: Path) -> None:
        self.control = control
        self.home = home

    def handler(self, op: Operation) -> Handler:
        """The coroutine serving ``op``."""
        handler: Handler = getattr(self, op.name)
        return handler

    async def get_logs(self, request: Request) -> Any:
        params = request.path_params
        lines = _int(request, LINES, MAX_LINES) or LINES.default
        instance = _int(request, LOG_INSTANCE) or 0
        container = _choice(request, CONTAINER)
        offset = _int(request, OFFSET)
        return await run_in_threadpool(
            self._logs, params["name"], params["deployment"], lines, instance, container, offset
        )

    def _logs(
        self, endpoint: str, name: str, lines: int, instance: int, container: str | None, offset: int | None
    ) -> Response:
        self.control.get_deployment(endpoint, name)  # 404 for a deployment that does not exist
        console = replica_log_path(self.home, endpoint, name, instance)
        if offset is not None:
            data, next_offset = _read_from(console, offset)
            return _text(data, next_offset)
        files = {
            "storage-initializer": [environment_log_path(self.home, endpoint, name)],
            "inference-server": [console],
            None: [environment_log_path(self.home, endpoint, name), console],
        }[container]
        found = [path for path in files if path.is_file()]
        if not found:
            what = "the environment's preparation" if container == "storage-initializer" else f"replica {instance}"
            raise NotFoundError(
                f"no log yet of {what} of deployment '{name}' on endpoint '{endpoint}': it appears once the replica "
                f"starts; check its state with `tiffin online-deployment show -n {name} -e {endpoint}`"
                + (
                    " (a deployment that runs on tiffin's own Python has no environment to prepare)"
                    if container
                    else ""
                )
            )
        text = "".join(_tail(path, lines) for path in found)
        text = "".join(text.splitlines(keepends=True)[-lines:])
        try:
            end = console.stat().st_size
        except OSError:
            end = 0
        return _text(text.encode("utf-8"), end)

    async def get_events(self, request: Request) -> Any:
        from tiffin.supervisor.logfiles import read_events

        params = request.path_params
        limit = _int(request, LIMIT, MAX_LINES) or LIMIT.default
        await run_in_threadpool(self.control.get_deployment, params["name"], params["deployment"])
        return await run_in_threadpool(read_events, self.home, params["name"], params["deployment"], limit)


def _text(data: bytes, offset: int) -> Response:
    return Response(data, media_type="text/plain; charset=utf-8", headers={OFFSET_HEADER: str(offset)})
