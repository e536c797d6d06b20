"""A model server a runner starts beside itself (a BYOC command, tritonserver): start, wait, probe, stop.

The server's output joins the replica's log, and it stays in the replica's process group, so the
supervisor stopping the replica (a signal to the group) stops the server too.
"""

from __future__ import annotations

import logging
import shlex
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence

from tiffin.errors import RunnerLoadError

__all__ = ["ServerProcess", "answers_2xx", "listens_beyond_loopback"]

logger = logging.getLogger("tiffin.runners")


def answers_2xx(url: str, timeout: float = 2.0) -> bool:
    """Whether ``GET url`` answers with a 2xx status right now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def _loopback(hex_address: str) -> bool:
    """Whether an address as /proc/net/tcp{,6} writes it (hex, in host byte order per 32 bits) is loopback."""
    if len(hex_address) == 8:
        return int(hex_address, 16) & 0xFF == 0x7F  # 127.0.0.0/8 on a little-endian machine
    if hex_address == "00000000000000000000000001000000":  # ::1
        return True
    return hex_address.startswith("0000000000000000FFFF0000") and _loopback(hex_address[-8:])  # ::ffff:127.x


def listens_beyond_loopback(port: int, tables: Sequence[str] = ("/proc/net/tcp", "/proc/net/tcp6")) -> bool | None:
    """Whether something listens on TCP ``port`` on an address other than loopback (None: cannot tell here).

    A server the user brings chooses its own address; one bound to 0.0.0.0 takes requests from the
    network, past the endpoint's credentials. Linux only (``/proc/net``).
    """
    seen = False
    for table in tables:
        try:
            with open(table) as lines:
                rows = [line.split() for line in lines][1:]
        except OSError:
            continue
        seen = True
        for row in rows:
            address, _, hex_port = row[1].partition(":")
            if row[3] == "0A" and int(hex_port, 16) == port and not _loopback(address):
                return True
    return False if seen else None


class ServerProcess:
    """One server process; ``what`` names it in messages ("the deployment's server", "tritonserver")."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, argv: Sequence[str], env: Mapping[str, str], *, hint: str = "") -> None:
        """Start ``argv``; RunnerLoadError (with ``hint``, what to check) when it cannot be started."""
        logger.info("starting %s: %s", self.what, shlex.join(argv))
        try:
            self._process = subprocess.Popen(list(argv), env=dict(env))
        except OSError as exc:
            raise RunnerLoadError(f"cannot start {argv[0]!r}: {exc.strerror or exc}{hint}") from exc

    def wait_ready(self, url: str, timeout_s: float) -> None:
        """Wait until ``GET url`` answers 2xx; RunnerLoadError if the server exits first or takes too long."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RunnerLoadError(
                    f"{self.what} exited with code {self._process.returncode} before it was ready; "
                    "its output is in this replica's log"
                )
            if answers_2xx(url):
                return
            time.sleep(0.2)
        self.stop()
        raise RunnerLoadError(
            f"{self.what} did not answer {url} within {timeout_s:g}s; its output is in this replica's log"
        )

    def on_exit(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(returncode)`` from a thread when the process exits on its own (not by :meth:`stop`)."""
        process = self._process
        if process is None:
            return

        def wait() -> None:
            code = process.wait()
            if self._process is process:  # stop() clears it first: an exit it caused is not reported
                callback(code)

        threading.Thread(target=wait, name=f"tiffin-watch-{process.pid}", daemon=True).start()

    def running(self) -> bool:
        """True while the process runs (also True when none was started: nothing to have died)."""
        return self._process is None or self._process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; a no-op when it was never started or has exited."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
