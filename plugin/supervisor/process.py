"""One replica process: start it, notice its 'ready' line and its exit, stop its whole process group.

Each replica runs in a process group (session) of its own, so that stopping it also stops any worker
processes it forked (``WORKER_COUNT``) and a signal sent to the supervisor's terminal does not reach
it. Its stdout and stderr are appended to its log file directly (not piped through the supervisor),
so a replica never blocks on, or dies with, a full pipe; the replica stamps its lines itself
(:mod:`tiffin.replica.console`) and the supervisor rotates the file (:mod:`.logfiles`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from tiffin.pids import pid_alive
from tiffin.replica.run import READY_FD_ENV

from .policy import LOG_TAIL_LINES, STOP_TIMEOUT_S
from .sockets import unix_url

__all__ = [
    "READY_MARKER",
    "ReplicaProcess",
    "log_header",
    "read_tail",
    "reap_orphans",
    "spawn_replica",
]

logger = logging.getLogger("tiffin.supervisor")

READY_MARKER = b"ready"
"""A replica prints a line containing this once it accepts requests (``tiffin replica ready: URL``)."""

_PIDFILE_GLOB = "deployments/*/*/replica-*.pid"


class ReplicaProcess:
    """A started replica process (the leader of its own process group) and what is known of it."""

    def __init__(self, popen: subprocess.Popen[bytes], socket: Path, log_path: Path, log_offset: int) -> None:
        self.popen = popen
        self.socket = socket
        self.log_path = log_path
        self.started_at = time.monotonic()
        self.pidfile: Path | None = None
        # Where this start's output begins in the (appended-to) log, so an earlier start's 'ready'
        # line is not mistaken for this one's.
        self._scan_from = log_offset
        self._ready_seen = False
        self._pidfd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # The read end of the pipe the replica writes to once it accepts requests (READY_FD_ENV).
        self.ready_pipe: int | None = None
        self._ready_loop: asyncio.AbstractEventLoop | None = None

    @property
    def pid(self) -> int:
        """The process id, which is also its process group id."""
        return self.popen.pid

    @property
    def url(self) -> str:
        """Where the replica serves HTTP: ``unix:/path/to.sock`` (see :class:`tiffin.http_client.UpstreamPool`)."""
        return unix_url(self.socket)

    def poll(self) -> int | None:
        """The exit code once the process has exited (negative: killed by that signal), else None."""
        return self.popen.poll()

    def saw_ready_line(self) -> bool:
        """Whether the replica has printed its 'ready' line since this start (reads only new log bytes)."""
        if self._ready_seen:
            return True
        try:
            with open(self.log_path, "rb") as log:
                if log.seek(0, os.SEEK_END) < self._scan_from:
                    self._scan_from = 0  # rotated (copied and truncated) since the last look
                log.seek(self._scan_from)
                chunk = log.read()
        except OSError:
            return False
        if READY_MARKER in chunk:
            self._ready_seen = True
        else:
            # Keep a marker's worth of bytes: the line may be half written right now.
            self._scan_from += max(0, len(chunk) - len(READY_MARKER))
        return self._ready_seen

    def watch_exit(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> bool:
        """Call ``callback`` on ``loop`` as soon as the process exits (Linux pidfd); False if unsupported.

        Without it a crash is noticed on the next reconcile pass; with it the replica leaves routing
        at once, so the gateway stops sending requests to a closed port sooner.
        """
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is None:
            return False
        try:
            fd = pidfd_open(self.pid)
        except OSError:  # ENOSYS on old kernels, ESRCH if it is already gone (poll() sees that)
            return False

        def on_readable() -> None:
            self.unwatch()
            callback()

        try:
            loop.add_reader(fd, on_readable)
        except (NotImplementedError, OSError, ValueError):  # a loop without add_reader (Windows proactor)
            os.close(fd)
            return False
        self._pidfd, self._loop = fd, loop
        return True

    def watch_ready(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> bool:
        """Call ``callback`` on ``loop`` the moment the replica reports that it accepts requests.

        The replica writes to a pipe (:data:`READY_FD_ENV`) as it prints its 'ready' line, so the first
        readiness probe goes at once instead of on the next look at the log. False if the pipe cannot be
        watched; the log is then polled as before (it also is for a replica that never writes the pipe).
        """
        fd = self.ready_pipe
        if fd is None:
            return False

        def on_readable() -> None:
            try:
                data = os.read(fd, 64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            self.unwatch_ready()
            if data:  # EOF (the replica exited or closed it unsaid) is the exit watcher's business
                self._ready_seen = True
                callback()

        try:
            loop.add_reader(fd, on_readable)
        except (NotImplementedError, OSError, ValueError):
            self.unwatch_ready()
            return False
        self._ready_loop = loop
        return True

    def unwatch_ready(self) -> None:
        """Stop watching the ready pipe and close it."""
        fd, self.ready_pipe = self.ready_pipe, None
        if fd is None:
            return
        loop, self._ready_loop = self._ready_loop, None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(fd)
        os.close(fd)

    def unwatch(self) -> None:
        """Stop watching for the exit and release the pidfd."""
        self.unwatch_ready()
        if self._pidfd is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = self._loop = None

    async def terminate(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the process group, wait up to ``timeout`` s, then SIGKILL it; returns the exit code.

        The async twin of :func:`tiffin.testing.stop_process_group`: the supervisor shares its event loop
        with the gateway, so it polls instead of blocking a thread in ``wait()`` for up to 10 s.
        """
        try:
            if self.poll() is None:
                self._signal_group(signal.SIGTERM)
                # A stopped (SIGSTOP, debugger) process would hold SIGTERM pending until SIGKILL.
                self._signal_group(signal.SIGCONT)
                deadline = time.monotonic() + timeout
                while self.poll() is None and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                if self.poll() is None:
                    logger.warning(
                        "replica pid %d did not exit within %gs of SIGTERM; sending SIGKILL", self.pid, timeout
                    )
                    self._signal_group(signal.SIGKILL)
                    deadline = time.monotonic() + 5.0
                    while self.poll() is None and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
        finally:
            self.release()
        return self.poll()

    def kill_now(self) -> None:
        """SIGKILL the process group without waiting more than a moment (interpreter exit, cancelled stop)."""
        if self.poll() is None:
            self._signal_group(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(1.0)
        self.release()

    def release(self) -> None:
        """Once the process has exited: sweep its group, stop watching it, remove its pid file."""
        # Workers that outlived their parent share its group: sweep them too (as stop_process_group does).
        if self.poll() is not None:
            self._signal_group(signal.SIGKILL)
            self.unwatch()
            if self.pidfile is not None:
                self.pidfile.unlink(missing_ok=True)
            # A killed replica leaves its socket file behind; nothing listens on it any more.
            with contextlib.suppress(OSError):
                self.socket.unlink(missing_ok=True)

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)


def spawn_replica(
    command: Sequence[str],
    *,
    socket: Path,
    log_path: Path,
    header: Callable[[int], str],
    env: Mapping[str, str],
    cwd: Path,
    pidfile: Path | None = None,
) -> ReplicaProcess:
    """Start ``command`` in a new session with its output appended to ``log_path``.

    ``header(pid)`` is written to the log right after the start: a line per start keeps the log of a
    restarted replica readable. ``pidfile`` records the process (and this supervisor's pid) so that a
    later supervisor can stop replicas that a crashed one left behind (:func:`reap_orphans`).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # A socket file left by this slot's previous process (killed) would make the bind fail.
    socket.unlink(missing_ok=True)
    # The replica says when it is ready on this pipe (see ReplicaProcess.watch_ready); non-blocking, so a
    # spurious wake-up never stalls the event loop.
    ready_read, ready_write = os.pipe()
    os.set_blocking(ready_read, False)
    try:
        with open(log_path, "ab") as log:  # O_APPEND: the header and the child's output never overwrite
            offset = log.seek(0, os.SEEK_END)
            popen = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**env, READY_FD_ENV: str(ready_write)},
                cwd=cwd,
                start_new_session=True,
                pass_fds=(ready_write,),
            )
            # The child is still starting its interpreter; this line lands before anything it prints.
            log.write(header(popen.pid).encode())
            log.flush()
    except BaseException:
        os.close(ready_read)
        raise
    finally:
        os.close(ready_write)  # the child holds its own copy
    process = ReplicaProcess(popen, socket, log_path, offset)
    process.ready_pipe = ready_read
    if pidfile is not None:
        try:
            pidfile.write_text(
                json.dumps({"pid": popen.pid, "supervisor": os.getpid(), "command": list(command)}), encoding="utf-8"
            )
            process.pidfile = pidfile
        except OSError:
            logger.warning("could not write %s; a crashed supervisor would leave this replica behind", pidfile)
    return process


def log_header(index: int, generation: int, pid: int) -> str:
    """The line written to a replica's log before each of its starts."""
    when = datetime.now(UTC).isoformat(timespec="seconds")
    return f"--- replica {index} starting (generation {generation}, pid {pid}) at {when} ---\n"


def read_tail(path: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    """The last ``lines`` lines of the file at ``path`` ("" if it cannot be read)."""
    try:
        with open(path, "rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - max_bytes))
            data = file.read()
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


async def reap_orphans(home: Path, timeout: float = STOP_TIMEOUT_S) -> list[int]:
    """Stop replicas that a supervisor which is no longer running left behind under ``home``.

    A replica is recognised by its pid file *and* its command line (a pid may have been reused by an
    unrelated process since); replicas of a supervisor that is still alive are left alone. Only where
    ``/proc`` exists (Linux); elsewhere nothing is done. Returns the pids that were stopped.
    """
    if not Path("/proc/self/cmdline").exists():
        return []
    stopped: list[int] = []
    for pidfile in sorted(home.glob(_PIDFILE_GLOB)):
        try:
            info = json.loads(pidfile.read_text(encoding="utf-8"))
            pid, owner, command = int(info["pid"]), int(info["supervisor"]), list(info["command"])
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("ignoring unreadable replica pid file %s", pidfile)
            continue
        if owner == os.getpid() or pid_alive(owner):
            # Its supervisor still runs (this process, or a second `tiffin serve` on this home): its own.
            continue
        if _cmdline(pid) == command:
            logger.warning("stopping replica pid %d left behind by supervisor pid %d (%s)", pid, owner, pidfile)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            stopped.append(pid)
        pidfile.unlink(missing_ok=True)
    return stopped
