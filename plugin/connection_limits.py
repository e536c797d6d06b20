"""The public port's limits on what one connection may hold: time, header bytes, and how many connections.

``tiffin serve`` answers anyone who can reach its port, before any credential is checked, so nothing a
client sends may hold the server's memory, file descriptors or connection slots for long:

* the request head (request line and headers) must arrive within ``header_timeout`` seconds of its first
  byte (of the connection, for a new one), and be at most ``max_header_bytes`` long (431 otherwise);
* a request body must make progress at least every ``body_timeout`` seconds and, after the first
  ``body_timeout``, arrive at ``min_body_rate`` bytes/s on average (408 otherwise);
* an idle keep-alive connection is closed after ``keep_alive_timeout`` seconds (uvicorn's own timer);
* at most ``max_connections`` connections are open; a new one over the cap closes the connection that has
  been waiting longest between requests (idle, or still sending its head), and only when every
  connection is busy with a request is the new one answered 503 and closed.

The protocol that applies them is :class:`tiffin.http_protocol.LimitedHttpToolsProtocol`; this module
holds the settings and the state its connections share (:class:`ConnectionGuard`). Replicas do not use
them: their only client is the gateway, whose pooled connections must stay open long.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

from tiffin.errors import TiffinError

__all__ = [
    "ENVIRONMENT",
    "ConnectionGuard",
    "ConnectionLimits",
    "default_max_connections",
    "raise_open_files_limit",
    "response",
]

ENVIRONMENT = {
    "max_connections": "TIFFIN_MAX_CONNECTIONS",
    "max_header_bytes": "TIFFIN_MAX_HEADER_BYTES",
    "header_timeout": "TIFFIN_HEADER_TIMEOUT",
    "body_timeout": "TIFFIN_BODY_TIMEOUT",
    "min_body_rate": "TIFFIN_MIN_BODY_RATE",
    "keep_alive_timeout": "TIFFIN_KEEP_ALIVE_TIMEOUT",
}
"""Each setting's environment variable; a ``tiffin serve`` option of the same name wins over it."""

# Above this many, idle connections cost more memory (some KiB each) than a single server should give them.
_MOST_CONNECTIONS = 65536


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (connections are files); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a platform that refuses: keep what we have
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def default_max_connections(open_files: int) -> int:
    """80% of the open-files limit, leaving the rest to replicas' sockets, the store and logs."""
    return max(16, min(_MOST_CONNECTIONS, open_files * 4 // 5))


@dataclass(frozen=True)
class ConnectionLimits:
    """The limits of one public server (see the module's docstring); defaults are ``tiffin serve``'s."""

    max_connections: int = 1024
    max_header_bytes: int = 65536
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    min_body_rate: float = 500.0
    keep_alive_timeout: float = 15.0

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] = os.environ, *, open_files: int | None = None, **options: Any
    ) -> ConnectionLimits:
        """The limits from ``options`` (``None`` = not given), else the environment, else the defaults.

        ``max_connections`` defaults to :func:`default_max_connections` of ``open_files`` when given.
        """
        values: dict[str, Any] = {}
        for field in fields(cls):
            raw = options.get(field.name)
            name = "--" + field.name.replace("_", "-")
            if raw is None:
                name = ENVIRONMENT[field.name]
                raw = environ.get(name) or None
            if raw is None:
                continue
            kind = int if field.type in (int, "int") else float
            try:
                value = kind(raw)
            except (TypeError, ValueError):
                raise TiffinError(f"{name}={raw!r} is not a number; set it to a positive {kind.__name__}") from None
            if not value > 0:
                raise TiffinError(f"{name}={raw} must be more than 0")
            values[field.name] = value
        if "max_connections" not in values and open_files is not None:
            values["max_connections"] = default_max_connections(open_files)
        return cls(**values)


class LimitedConnection(Protocol):
    """What :class:`ConnectionGuard` needs of a connection (the protocol in tiffin.http_protocol)."""

    deadline: float

    def expire(self) -> None: ...

    def evict(self) -> None: ...

    def refuse(self, body: bytes, *, linger: bool) -> None: ...


def response(status: int, reason: str, message: str, *extra: bytes) -> bytes:
    """A whole ``connection: close`` response whose JSON body is ``{"message": message}``."""
    body = json.dumps({"message": message}).encode()
    head = [
        f"HTTP/1.1 {status} {reason}".encode(),
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
        *extra,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class ConnectionGuard:
    """The connections of one server: their count, which may be evicted first, and their deadlines.

    Deadlines are checked by one periodic sweep over the open connections rather than a timer each, so
    that a request costs a few attribute writes, not timers created and cancelled.
    """

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.connections: set[LimitedConnection] = set()
        # Connections between requests (idle or sending a head), longest-waiting first: a dict keeps order.
        self.waiting: dict[LimitedConnection, None] = {}
        # Refused connections kept open a moment so the 503 is read, not reset; a few, not a flood of them.
        self.lingering: set[LimitedConnection] = set()
        self._most_lingering = max(16, limits.max_connections // 10)
        self.evicted = 0
        self.refused = 0
        self.accepted = 0  # connections let in since start: /metrics' tiffin_connections_total
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._interval = min(1.0, max(0.05, min(limits.header_timeout, limits.body_timeout) / 4))
        self._refusal = response(
            503,
            "Service Unavailable",
            f"the server is at its limit of {limits.max_connections} connections, all busy; retry in a moment",
            b"retry-after: 1",
        )

    def admit(self, connection: LimitedConnection, loop: asyncio.AbstractEventLoop) -> bool:
        """Count a new connection in, closing the longest-waiting one if over the cap; False: refused."""
        if len(self.connections) >= self.limits.max_connections:
            if self.waiting:
                victim = next(iter(self.waiting))
                self.forget(victim)
                self.evicted += 1
                victim.evict()
            else:
                self.refused += 1
                linger = len(self.lingering) < self._most_lingering
                if linger:
                    self.lingering.add(connection)
                connection.refuse(self._refusal, linger=linger)
                return False
        self.connections.add(connection)
        self.accepted += 1
        self.waiting[connection] = None
        if self._timer is None:
            self._loop = loop
            self._timer = loop.call_later(self._interval, self._sweep)
        return True

    def forget(self, connection: LimitedConnection) -> None:
        """The connection is closed (or closing): it no longer counts."""
        self.connections.discard(connection)
        self.waiting.pop(connection, None)
        self.lingering.discard(connection)

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        expired = [c for c in self.connections if 0.0 < c.deadline <= now]
        for connection in expired:
            connection.expire()
        self._timer = loop.call_later(self._interval, self._sweep) if self.connections else None
