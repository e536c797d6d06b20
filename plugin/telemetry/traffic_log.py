"""The traffic log: one JSON line per gateway request in ``TIFFIN_HOME/logs/traffic.log`` (Azure's
AmlOnlineEndpointTrafficLog), rotated by size.

The gateway only appends a tuple of what it already holds to a bounded deque (thread-safe, no lock taken
by the caller); a writer thread turns them into JSON lines and writes them in batches, so the hot path never
formats or touches the file. What is written: time, endpoint, deployment, method, the path without its query
string, status, latency, the request ids of the answer, body sizes and the client address. Never headers
(keys, tokens), bodies or query strings.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

__all__ = ["TrafficLog", "traffic_log_path"]

logger = logging.getLogger("tiffin.telemetry")

_MAX_PENDING = 100_000
"""Entries waiting for the writer; past this (the disk cannot keep up) new ones are dropped and counted."""
_FLUSH_EVERY_S = 0.05
_FRAGMENTS = 4096
_ID_LIMIT = 128  # a request id is the client's text: bounded in the log as the replica bounds it

Headers = Sequence[tuple[bytes, bytes]]
# (time, endpoint, deployment, method, path, status, seconds, request headers, response headers, bytes in, out, client)
Entry = tuple[float, str, str, str, str, int, float, Headers, Headers, int, int, Any]


def traffic_log_path(home: Path) -> Path:
    """Where ``tiffin serve`` writes its traffic log."""
    return home / "logs" / "traffic.log"


_PLAIN = re.compile(r'[^\x20-\x7e]|["\\]')
"""What a JSON string may not hold as is (quotes, backslashes, control and non-ASCII characters)."""


def _ids(headers: Headers) -> tuple[str | None, str | None]:
    """``x-request-id`` and ``x-ms-request-id`` among ``headers`` (bounded, as the replica bounds them)."""
    request_id = ms_request_id = None
    for key, value in headers:
        if len(key) in (12, 15):  # the two names' lengths: most headers are skipped without lower()
            name = key.lower()
            if name == b"x-request-id":
                request_id = value[:_ID_LIMIT].decode("latin-1")
            elif name == b"x-ms-request-id":
                ms_request_id = value[:_ID_LIMIT].decode("latin-1")
    return request_id, ms_request_id


def _string(value: str | None) -> str:
    if value is None:
        return "null"
    return json.dumps(value) if _PLAIN.search(value) else f'"{value}"'


class _Clock:
    """ISO 8601 UTC times to the millisecond, the date-and-seconds part formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""
        self.fragments: dict[tuple[str, str, str, str, int], str] = {}
        """Formatted endpoint .. status parts of recent lines (the writer thread's own)."""

    def iso(self, when: float) -> str:
        second = int(when)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{self._prefix}.{int((when - second) * 1000):03d}Z"


def format_entry(entry: Entry, clock: _Clock | None = None) -> str:
    """One JSON line (without its newline); the same as ``json.dumps`` of the record, made faster since the
    writer thread shares the gateway's interpreter (and its GIL)."""
    when, endpoint, deployment, method, path, status, seconds, request, response, bytes_in, bytes_out, client = entry
    request_id, ms_request_id = _ids(response)
    if request_id is None or ms_request_id is None:  # refused by the gateway: the caller's own ids, if any
        asked, asked_ms = _ids(request)
        request_id = request_id or asked
        ms_request_id = ms_request_id or asked_ms
    clock = clock or _Clock()
    # Endpoint and deployment names are validated names and the method an HTTP token: safe in JSON as they
    # are. The path and the request ids are the caller's text: escaped when they need it. The part that
    # repeats from request to request is made once (the writer's cache, bounded).
    key = (endpoint, deployment, method, path, status)
    middle = clock.fragments.get(key)
    if middle is None:
        if len(clock.fragments) >= _FRAGMENTS:
            clock.fragments.clear()
        middle = clock.fragments[key] = (
            f'"endpoint":"{endpoint}","deployment":{f"{chr(34)}{deployment}{chr(34)}" if deployment else "null"},'
            f'"method":"{method}","path":{_string(path)},"status":{status},'
        )
    ids = _string(request_id)
    ms_ids = ids if ms_request_id == request_id else _string(ms_request_id)
    return (
        f'{{"time":"{clock.iso(when)}",{middle}"latency_ms":{seconds * 1000:.3f},"request_id":{ids},'
        f'"ms_request_id":{ms_ids},"bytes_in":{bytes_in},"bytes_out":{bytes_out},'
        f'"client":{f"{chr(34)}{client[0]}:{client[1]}{chr(34)}" if client else "null"}}}'
    )


class TrafficLog:
    """Appends entries from the event loop; a daemon thread writes them to ``path``, rotating at
    ``max_bytes`` and keeping ``backups`` older files (``traffic.log.1`` newest)."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max(1024, max_bytes)
        self.backups = max(0, backups)
        self.pending: deque[Entry] = deque()
        self.dropped = 0
        self._stop = threading.Event()
        self._ready = threading.Event()  # set when an entry arrives in an empty queue: an idle writer sleeps
        self._file: IO[str] | None = None
        self._size = 0
        self._clock = _Clock()
        self._thread = threading.Thread(target=self._run, name="tiffin-traffic-log", daemon=True)

    def start(self) -> None:
        """Open the file (0600, as everything under TIFFIN_HOME) and start the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()
        self._thread.start()

    def add(self, entry: Entry) -> None:
        """Queue one request's entry (called on the hot path: an append, nothing else)."""
        pending = self.pending
        if not pending:  # the first of a batch wakes the writer (once per batch, not per request)
            pending.append(entry)
            self._ready.set()
        elif len(pending) < _MAX_PENDING:
            pending.append(entry)
        else:
            self.dropped += 1

    def close(self) -> None:
        """Write what is queued and stop the writer."""
        self._stop.set()
        self._ready.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self._drain()
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self._size = self._file.tell()

    def _run(self) -> None:
        # Asleep until an entry arrives (an idle server wakes no thread), then a batch's worth of requests is let
        # gather for _FLUSH_EVERY_S and written at once. The event is cleared before the drain, so an entry added
        # after the queue was emptied sets it again.
        while True:
            self._ready.wait()
            if self._stop.wait(_FLUSH_EVERY_S):
                return  # close() drains what is left
            self._ready.clear()
            try:
                self._drain()
            except Exception:  # a full disk must not end the writer: the next batch tries again
                logger.exception("could not write the traffic log %s", self.path)

    def _drain(self) -> None:
        pending = self.pending
        if not pending or self._file is None:
            return
        chunk: list[str] = []
        size = self._size
        while pending:
            line = format_entry(pending.popleft(), self._clock) + "\n"
            if size and size + len(line) > self.max_bytes:  # this file is full: write what it takes, rotate
                self._write(chunk)
                self._rotate()
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        self._write(chunk)

    def _write(self, lines: list[str]) -> None:
        assert self._file is not None
        if lines:
            text = "".join(lines)
            self._file.write(text)
            self._file.flush()
            self._size += len(text)

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        if self.backups:
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._open()
