"""Where a job's mini-batches run: worker processes on this machine (:class:`LocalPool`), or Ray actors on a
Ray cluster (:class:`tiffin.batch.ray_pool.RayPool`). Both speak :class:`Pool`, which the job runner drives.

A pool has ``size`` slots, each holding one worker that has run ``init()`` (or is still starting). The
runner submits a mini-batch to an idle slot, waits for :class:`Event` s, and restarts a slot whose worker
overran its timeout or died. Workers exist only while their job runs.

A deployment that declares an environment has its local workers started on that environment's interpreter
(``LocalPool.python``); Ray actors run in the Ray cluster's own Python, whatever the deployment declares.
Such workers import MLflow, pandas and the model's flavour themselves (seconds), so when a job of such a
deployment ends, or it is provisioned (:mod:`tiffin.batch.provision`), spares for its next job are started
(:meth:`LocalPool.keep_spares`): they do those imports while no job waits, then idle until a job of the same
interpreter, variables and model takes them. A forked worker still imports its MLflow model's flavour: such a
deployment gets forked spares the same way.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal, Protocol

__all__ = ["PRELOAD", "Event", "LocalPool", "Pool", "spares_wanted", "stop_spares", "take_spare", "warm_fork_server"]

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
# No tiffin.specs: the pool sends workers their scorer's settings ready-made (tiffin.batch.launch).
PRELOAD = ["tiffin.batch.worker", "tiffin.runners.batch", "tiffin.runners.script", "pandas", "pyarrow.csv",
           "mlflow.pyfunc"]  # fmt: skip


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


class _Child:
    """A worker started as a process of its own (``Popen``), with the join/kill/exitcode of a multiprocessing
    ``Process``, so the pool treats both kinds alike."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process
        self.pid = process.pid

    @property
    def exitcode(self) -> int | None:
        return self._process.poll()

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout)

    def kill(self) -> None:
        self._process.kill()


@dataclass
class _Slot:
    process: Any = None  # a multiprocessing Process, or a _Child
    conn: Connection | None = None
    index: int | None = None  # the mini-batch it runs, if any


@dataclass
class LocalPool:
    """``size`` worker processes on this machine (no model, no user code: each worker runs ``init()`` itself, as
    on Azure).

    With no ``python``, workers are forked from a fork server that has tiffin, pandas and MLflow imported already
    (fast to start, on tiffin's own Python). With ``python`` (a deployment environment's interpreter), each is
    ``python -m tiffin.batch.worker_main`` with ``process_env`` as its environment
    (:meth:`tiffin.environments.runtime.PreparedEnvironment.process_env`, the deployment's variables in it), and
    the settings as its first message.

    Each worker runs in a session of its own, so stopping it also stops what the scoring code started, and
    writes its output to the job log at ``log``. Its pid is in ``workers/SLOT.pid`` of the job's folder.
    ``settings`` (:data:`tiffin.batch.worker.WorkerSettings`) and ``env`` (the deployment's variables) go to
    each worker.
    """

    size: int
    job: str
    settings: dict
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    pid_dir: Path | None = None
    python: str | None = None
    process_env: dict[str, str] | None = None
    warm_mlflow: str | None = None  # an MLflow model folder whose flavour's imports spares warm (keep_spares)
    spares_taken: int = 0  # workers that were spares (started before the job: by the last job, or provisioning)
    _slots: list[_Slot] = field(default_factory=list)

    def start(self) -> None:
        """Start every slot's worker."""
        if self.pid_dir is not None:
            self.pid_dir.mkdir(parents=True, exist_ok=True)
        self._slots = [_Slot() for _ in range(self.size)]
        for slot in range(self.size):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        if self.python is not None:
            process, ours = self._start_in_environment(self.python)
        elif (spare := take_spare(self._spare_key(None, self.env))) is not None:
            # Forked ahead of the job with the model's flavour imported (keep_spares): it runs the job's settings.
            process, ours = spare
            self.spares_taken += 1
            with contextlib.suppress(OSError):  # it died meanwhile: wait() reads the end of the connection
                ours.send(("settings", self.settings, str(self.log)))
        else:
            from tiffin.batch.worker import run_worker

            context = _context()
            ours, theirs = context.Pipe(duplex=True)
            process = context.Process(
                target=run_worker, args=(theirs, self.settings, str(self.log), self.env),
                name=f"tiffin-batch-{self.job}",
            )  # fmt: skip
            process.start()
            theirs.close()
        self._slots[slot] = _Slot(process, ours)
        if self.pid_dir is not None:
            (self.pid_dir / f"{slot}.pid").write_text(f"{process.pid}\n")

    def _start_in_environment(self, python: str) -> tuple[_Child, Connection]:
        """``python -m tiffin.batch.worker_main`` in a session of its own, output appended to the job log, talking
        over one end of a socket pair (the connection's wire format is the same on every Python 3). A spare started
        for the same interpreter, variables and model (:meth:`keep_spares`) is taken instead when there is one: its
        imports are done, and they are most of a worker's start."""
        env = self.process_env if self.process_env is not None else {**os.environ, **self.env}
        spare = take_spare(self._spare_key(python, env))
        if spare is not None:
            child, conn = spare
            self.spares_taken += 1
            with contextlib.suppress(OSError):  # it died meanwhile: wait() reads the end of the connection
                conn.send(("settings", self.settings, str(self.log)))
            return child, conn
        with open(self.log, "ab") as log:
            child, conn = _start_worker(python, env, [], log)
        with contextlib.suppress(OSError):  # it died at once: wait() reads the end of the connection and says so
            conn.send(("settings", self.settings))
        return child, conn

    def _spare_key(self, python: str | None, env: dict[str, str]) -> tuple:
        return (python or "forkserver", tuple(sorted(env.items())), self.warm_mlflow or "")

    def keep_spares(self, *, ready_within: float | None = None) -> None:
        """Have ``size`` spare workers ready for this deployment's next job. In an environment, its workers are not
        forked from the preloaded fork server and import MLflow and pandas themselves (seconds): each spare imports
        :data:`PRELOAD` and warms the MLflow model's flavour. On tiffin's own Python, spares are forked (the fork
        server's imports) only for a local MLflow model, whose flavour (scikit-learn...) they import. Then each
        waits, idle, for a job to take it.

        With ``ready_within`` (a deployment being provisioned, :mod:`tiffin.batch.provision`), returns once the
        spares' imports are done (at most that many seconds): a job then takes workers that are ready."""
        if not spares_wanted():
            return
        # Forked workers start with the fork server's imports: a spare of theirs is worth it only for a model's.
        if self.python is None and not self.warm_mlflow:
            return
        if self.python is None:
            env = self.env
            start: Callable[[], tuple[Any, Connection]] = lambda: self._fork_spare(ready_within is not None)  # noqa: E731
        else:
            env = self.process_env if self.process_env is not None else {**os.environ, **self.env}
            options = ["--spare", "--preload", ",".join(PRELOAD)]
            if self.warm_mlflow:
                options += ["--warm-mlflow", self.warm_mlflow]
            if ready_within is not None:
                options.append("--say-warm")
            python = self.python
            start = lambda: _start_worker(python, env, options, subprocess.DEVNULL)  # noqa: E731
        key = self._spare_key(self.python, env)
        with _SPARES_LOCK:
            others = [k for k in _SPARES if k != key]
            stale = others[: max(0, len(others) - _MAX_SPARE_KINDS + 1)]
            dropped = [c for k in stale for c in _SPARES.pop(k)]
            have = len(_SPARES.get(key, []))
        for child, conn in dropped:
            conn.close()
            _kill(child)
        started = []
        for _ in range(max(0, self.size - have)):
            try:
                started.append(start())
            except OSError:  # the environment went away: the next job starts its workers itself
                break
        if ready_within is not None:
            _wait_warm(started, ready_within)
        with _SPARES_LOCK:
            _SPARES.setdefault(key, []).extend(started)

    def _fork_spare(self, say_warm: bool) -> tuple[Any, Connection]:
        from tiffin.batch.worker import run_spare

        context = _context()
        ours, theirs = context.Pipe(duplex=True)
        process = context.Process(
            target=run_spare, args=(theirs, self.env, self.warm_mlflow, say_warm), name="tiffin-batch-spare"
        )
        process.start()
        theirs.close()
        return process, ours

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


SPARES_ENV = "TIFFIN_BATCH_SPARE_WORKERS"
"""``0`` keeps no spare workers (each idles with MLflow and pandas imported: memory, no CPU)."""
_SPARES: dict[tuple, list[tuple[Any, Connection]]] = {}  # a _Child, or a forked multiprocessing Process
_SPARES_LOCK = threading.Lock()
_MAX_SPARE_KINDS = 4  # interpreter + variables + model combinations kept warm; the least recently used go first


def spares_wanted() -> bool:
    """Whether spare workers are kept (:data:`SPARES_ENV`)."""
    return os.environ.get(SPARES_ENV, "1").strip() != "0"


def take_spare(key: tuple) -> tuple[Any, Connection] | None:
    """A live spare worker started for ``key``, taken out of the spares; None if there is none."""
    while True:
        with _SPARES_LOCK:
            spares = _SPARES.pop(key, None)
            if not spares:
                return None
            child, conn = spares.pop(0)
            if spares:  # put back last: the most recently used kind, dropped last by keep_spares
                _SPARES[key] = spares
        if child.exitcode is None:
            return child, conn
        conn.close()


def stop_spares(which: Callable[[str], bool] | None = None) -> None:
    """Stop every spare worker (the server stops), or those whose interpreter path ``which`` accepts (idle
    spares of environments about to be pruned: a spare is not a use)."""
    with _SPARES_LOCK:
        kinds = [key for key in _SPARES if which is None or which(key[0])]
        spares = [s for key in kinds for s in _SPARES.pop(key)]
    for child, conn in spares:
        conn.close()
        _kill(child)


def _wait_warm(spares: list[tuple[Any, Connection]], timeout: float) -> None:
    """Wait until each spare (started with ``--say-warm``, not yet where a job can take it) says its imports are
    done, or has died, or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    waiting = {conn: child for child, conn in spares}
    while waiting and time.monotonic() < deadline:
        for conn in wait(list(waiting), max(0.0, deadline - time.monotonic())):
            with contextlib.suppress(EOFError, OSError):  # it died: take_spare skips it
                conn.recv()  # ("warm",)
            waiting.pop(conn, None)  # type: ignore[call-overload]


def _start_worker(python: str, env: dict[str, str], options: list[str], out: Any) -> tuple[_Child, Connection]:
    """``python -m tiffin.batch.worker_main --fd N [options]`` in a session of its own, its output to ``out``."""
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [python, "-m", "tiffin.batch.worker_main", "--fd", str(theirs.fileno()), *options],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            pass_fds=(theirs.fileno(),), start_new_session=True, close_fds=True,
        )  # fmt: skip
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return _Child(process), Connection(ours.detach())


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
