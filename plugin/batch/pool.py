"""Where a job's mini-batches run: worker processes on this machine (:class:`LocalPool`), or Ray actors on a
Ray cluster (:class:`tiffin.batch.ray_pool.RayPool`). Both speak :class:`Pool`, which the job runner drives.

A pool has ``size`` slots, each holding one worker that has run ``init()`` (or is still starting). The
runner submits a mini-batch to an idle slot, waits for :class:`Event` s, and restarts a slot whose worker
overran its timeout or died. Workers exist only while their job runs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal, Protocol

__all__ = ["PRELOAD", "Event", "LocalPool", "Pool", "warm_fork_server"]

EventKind = Literal["ready", "load_failed", "done", "error", "died"]


@dataclass(frozen=True, slots=True)
class Event:
    """Something a slot's worker did: became ready, failed to load, finished or failed a mini-batch, died."""

    kind: EventKind
    slot: int
    index: int | None = None
    rows: int = 0
    failed_items: int = 0
    message: str = ""


class Pool(Protocol):
    """The runner's view of a set of workers."""

    size: int

    def start(self) -> None:
        """Start every slot's worker (without waiting for them to be ready)."""

    def submit(self, slot: int, index: int, items: list[str], part: str | None) -> None:
        """Give an idle, ready slot a mini-batch; its output part goes to ``part`` (None: no output)."""

    def wait(self, timeout: float) -> list[Event]:
        """What happened within ``timeout`` seconds (an empty list if nothing did)."""

    def restart(self, slot: int) -> None:
        """Kill the slot's worker (a timeout, or it died) and start a fresh one, which runs ``init()`` again."""

    def close(self) -> None:
        """Stop every worker."""


# Imported once by the fork server that worker processes are forked from (see LocalPool), so a job's workers
# start with them loaded: MLflow and pandas alone take a second and a half to import on this project's
# machines, a second and a half before a job's first row. Modules that are not installed are skipped.
PRELOAD = ["tiffin.batch.worker", "tiffin.runners.batch", "tiffin.specs", "pandas", "pyarrow.csv", "mlflow.pyfunc"]


def _context() -> Any:
    """The multiprocessing context workers start in: a fork server that preloaded :data:`PRELOAD` (POSIX)."""
    global _CONTEXT
    if _CONTEXT is None:
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(PRELOAD)
        else:  # pragma: no cover - Windows
            context = multiprocessing.get_context("spawn")
        _CONTEXT = context
    return _CONTEXT


_CONTEXT: Any = None


def warm_fork_server() -> None:
    """Start the fork server (and its imports) now, so the next job's workers need not wait for it."""
    if _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


@dataclass
class _Slot:
    process: Any = None  # a multiprocessing Process
    conn: Connection | None = None
    index: int | None = None  # the mini-batch it runs, if any


@dataclass
class LocalPool:
    """``size`` worker processes on this machine, forked from a fork server that has tiffin, pandas and MLflow
    imported already (no model, no user code: each worker runs ``init()`` itself, as on Azure).

    Each worker runs in a session of its own, so stopping it also stops what the scoring code started, and
    writes its output to the job log at ``log``. Its pid is in ``workers/SLOT.pid`` of the job's folder.
    ``settings`` and ``env`` (the deployment's variables) go to each worker (see :mod:`tiffin.batch.worker`).
    """

    size: int
    job: str
    settings: dict
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    pid_dir: Path | None = None
    _slots: list[_Slot] = field(default_factory=list)

    def start(self) -> None:
        """Start every slot's worker."""
        if self.pid_dir is not None:
            self.pid_dir.mkdir(parents=True, exist_ok=True)
        self._slots = [_Slot() for _ in range(self.size)]
        for slot in range(self.size):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        from tiffin.batch.worker import run_worker

        context = _context()
        ours, theirs = context.Pipe(duplex=True)
        process = context.Process(
            target=run_worker, args=(theirs, self.settings, str(self.log), self.env), name=f"tiffin-batch-{self.job}"
        )
        process.start()
        theirs.close()
        self._slots[slot] = _Slot(process, ours)
        if self.pid_dir is not None:
            (self.pid_dir / f"{slot}.pid").write_text(f"{process.pid}\n")

    def submit(self, slot: int, index: int, items: list[str], part: str | None) -> None:
        """Send the mini-batch to the slot's worker."""
        state = self._slots[slot]
        assert state.conn is not None and state.index is None, "submit to an idle slot"
        state.index = index
        with contextlib.suppress(OSError):  # it died: wait() reports that
            state.conn.send(("run", index, items, part))

    def wait(self, timeout: float) -> list[Event]:
        """Events from the workers' pipes; a pipe at its end is a worker that died."""
        by_conn = {s.conn: n for n, s in enumerate(self._slots) if s.conn is not None}
        events = []
        for conn in wait(list(by_conn), timeout):
            slot = by_conn[conn]  # type: ignore[index]
            state = self._slots[slot]
            try:
                message = conn.recv()  # type: ignore[union-attr]
            except (EOFError, OSError):
                state.process.join(10)
                events.append(Event("died", slot, state.index, message=_exit_text(state.process.exitcode)))
                self._forget(slot)
                continue
            kind = message[0]
            if kind in ("done", "error"):
                state.index = None
            if kind == "done":
                events.append(Event("done", slot, message[1], rows=message[2], failed_items=message[3]))
            elif kind == "error":
                events.append(Event("error", slot, message[1], message=message[2]))
            elif kind == "load_failed":
                events.append(Event("load_failed", slot, message=message[1]))
            else:
                events.append(Event("ready", slot))
        return events

    def _forget(self, slot: int) -> None:
        state = self._slots[slot]
        if state.conn is not None:
            state.conn.close()
        self._slots[slot] = _Slot()

    def restart(self, slot: int) -> None:
        """Kill the slot's worker and its session; start a new one."""
        _kill(self._slots[slot].process)
        self._forget(slot)
        self._spawn(slot)

    def close(self) -> None:
        """Ask every worker to stop, give them a moment, then kill what is left."""
        for state in self._slots:
            if state.conn is not None:
                with contextlib.suppress(OSError):
                    state.conn.send(("stop",))
        deadline = time.monotonic() + 2
        for state in self._slots:
            if state.process is not None:
                state.process.join(max(0.0, deadline - time.monotonic()))
                _kill(state.process)
        for slot in range(len(self._slots)):
            self._forget(slot)


def _kill(process: Any) -> None:
    if process is None:
        return
    # Its session (and what the scoring code started in it); the process alone if it has not made one yet.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        process.kill()
    process.join(10)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "the worker process stopped answering"
    if code < 0:
        try:
            return f"the worker process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the worker process was killed by signal {-code}"
    return f"the worker process exited with code {code}"
