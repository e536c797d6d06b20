"""A replica's console log: each line of the scoring code's output stamped with the time and the instance id.

Azure's console log (``AmlOnlineEndpointConsoleLog``) is what the inference server and the scoring script write,
``init()`` included, with the time and the instance each line came from. A replica's stdout and stderr go straight
to its ``replica-N.log`` (see :mod:`tiffin.supervisor.process`); :func:`install` wraps ``sys.stdout`` and
``sys.stderr`` so each line written through Python starts with ``TIME INSTANCE |`` (replicas ``tiffin serve``
starts; one started by hand writes as it always did), and sets the root logger to
INFO with azmlinfsrv's format, so ``logging.info()`` in ``score.py`` shows as it does under Azure's server.
Output written to the file descriptors directly (C libraries, child processes) is kept, unstamped.

Runs inside the deployment's environment: standard library only, Python 3.8+.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

__all__ = ["INSTANCE_ENV", "StampedStream", "install", "stamp"]

INSTANCE_ENV = "TIFFIN_INSTANCE_ID"
"""The replica's instance id (``DEPLOYMENT-N``), set by the supervisor for each replica it starts."""

_LOG_FORMAT = "%(levelname).1s [%(process)d] %(name)s - %(message)s"
"""azmlinfsrv's format less its time (the stream stamps every line)."""


_second: list = [None, ""]  # the last whole second formatted, and its text: strftime once a second, not a line


def stamp(instance: str, now: float | None = None) -> str:
    """``2026-12-01T23:19:20.123Z blue-0 | ``: what starts each console line."""
    now = time.time() if now is None else now
    second = int(now)
    if _second[0] != second:
        _second[:] = [second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))]
    return f"{_second[1]}.{int((now - second) * 1000):03d}Z {instance} | "


class StampedStream:
    """A text stream that writes ``stamp(instance)`` before every line to the stream it wraps.

    A line may arrive in several writes (``print`` writes the text, then the newline): only the first write
    of a line is stamped. Everything else (``buffer``, ``fileno``, ``encoding``) is the wrapped stream's.
    """

    def __init__(self, stream: Any, instance: str) -> None:
        self._stream = stream
        self._instance = instance
        self._at_line_start = True
        self._lock = threading.Lock()  # scoring threads print at once: one line's stamp and text stay together

    @property
    def wrapped(self) -> Any:
        """The stream written to."""
        return self._stream

    def write(self, text: str) -> int:
        if not text:
            return 0
        with self._lock:
            pieces = []
            start = 0
            while start < len(text):
                end = text.find("\n", start)
                end = len(text) if end < 0 else end + 1
                if self._at_line_start:
                    pieces.append(stamp(self._instance))
                pieces.append(text[start:end])
                self._at_line_start = text[end - 1] == "\n"
                start = end
            self._stream.write("".join(pieces))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install(instance: str | None = None) -> str | None:
    """Stamp this process's stdout and stderr with ``instance`` (default ``$TIFFIN_INSTANCE_ID``) and log the root
    logger at INFO through stderr; once per process. Returns the instance id.

    A replica started by hand (no instance id: not under ``tiffin serve``) writes unstamped, as it always did,
    and its ``logging`` lines carry their own time in azmlinfsrv's full format.
    """
    instance = instance or os.environ.get(INSTANCE_ENV) or None
    if instance is not None:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, StampedStream):
                setattr(sys, name, StampedStream(stream, instance))
    formatter = logging.Formatter(_LOG_FORMAT if instance is not None else "%(asctime)s " + _LOG_FORMAT)
    root = logging.getLogger()
    if not any(getattr(handler, "_tiffin_console", False) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        handler._tiffin_console = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    if instance is not None:
        # tiffin's own replica messages: the same stamped stream, no second time of day.
        for handler in logging.getLogger("tiffin").handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sys.stderr)
                handler.setFormatter(formatter)
    return instance
