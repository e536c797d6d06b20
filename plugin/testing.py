"""Helpers for testing scoring scripts against a real deployment process, as tiffin's own tests do.

    from tiffin.testing import serve_deployment

    def test_my_score_py():
        with serve_deployment("deploy/blue-deployment.yml") as replica:
            r = httpx.post(replica.url + "/score", json={"data": [[1, 2, 3]]})
            assert r.status_code == 200

The deployment runs in its own process on a free loopback port (as it would under ``tiffin serve``)
and is stopped, with every process it started, when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiffin.net import free_port  # re-exported: users' tests import it from here

__all__ = [
    "Load",
    "ReplicaProcess",
    "TiffinProcess",
    "command_lines",
    "free_port",
    "serve_command",
    "serve_deployment",
    "serve_tiffin",
    "stop_process_group",
    "wait_for_line",
]


@dataclass
class ReplicaProcess:
    """A running ``tiffin replica serve`` process."""

    process: subprocess.Popen[str]
    url: str
    log_path: Path

    def log(self) -> str:
        """Everything the process printed so far (stdout and stderr)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""


def command_lines() -> list[tuple[int, str]]:
    """(pid, command line with its arguments joined by spaces) of every live process on this machine (Linux's
    ``/proc``; empty elsewhere): how tests find the replicas and workers a server started, and what is left of them."""
    found = []
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if entry.name.isdigit():
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:  # gone meanwhile, or not ours to read
                continue
            found.append((int(entry.name), raw.replace(b"\0", b" ").decode(errors="replace")))
    return found


def wait_for_line(path: Path, process: subprocess.Popen[str], needle: str, timeout: float) -> None:
    """Wait until the log file at ``path`` holds ``needle``; raise with the log if the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        if needle in text:
            return
        if process.poll() is not None:
            raise RuntimeError(f"process exited with code {process.returncode} before '{needle}':\n{text}")
        time.sleep(0.05)
    raise TimeoutError(f"no '{needle}' within {timeout}s:\n{path.read_text(errors='replace')}")


def stop_process_group(process: subprocess.Popen[str], timeout: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``timeout`` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
    # Children that outlived their parent (a worker of a multi-worker replica) share the group.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def serve_deployment(
    file: str | os.PathLike[str],
    *,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    home: str | os.PathLike[str] | None = None,
    timeout: float = 120.0,
    extra_args: Sequence[str] = (),
) -> Iterator[ReplicaProcess]:
    """Serve the deployment YAML ``file`` on a free port for the duration of the block."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tiffin-test-") as tmp:
        log_path = Path(tmp) / "replica.log"
        command = [
            sys.executable,
            "-m",
            "tiffin.cli",
            "replica",
            "serve",
            "-f",
            str(file),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *extra_args,
        ]
        for override in overrides:
            command += ["--set", override]
        environ = {**os.environ, "TIFFIN_HOME": str(home or Path(tmp) / "home"), **(env or {})}
        with open(log_path, "w", encoding="utf-8") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=environ, text=True, start_new_session=True
            )
        replica = ReplicaProcess(process=process, url=f"http://127.0.0.1:{port}", log_path=log_path)
        try:
            wait_for_line(log_path, process, "ready", timeout)
            yield replica
        finally:
            stop_process_group(process)


@contextmanager
def serve_command(
    command: Sequence[str],
    health_url: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 120.0,
) -> Iterator[ReplicaProcess]:
    """Run any server ``command`` (e.g. ``bentoml serve TAG``) until ``GET health_url`` answers 200."""
    import urllib.error
    import urllib.request

    with tempfile.TemporaryDirectory(prefix="tiffin-test-") as tmp:
        log_path = Path(tmp) / "server.log"
        with open(log_path, "w", encoding="utf-8") as log:
            process = subprocess.Popen(
                list(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=cwd,
                text=True,
                start_new_session=True,
            )
        base = health_url.split("/", 3)
        server = ReplicaProcess(process=process, url="/".join(base[:3]), log_path=log_path)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{command[0]} exited with code {process.returncode}:\n{server.log()}")
                try:
                    with urllib.request.urlopen(health_url, timeout=2) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{health_url} not ready within {timeout}s:\n{server.log()}")
                time.sleep(0.2)
            yield server
        finally:
            stop_process_group(process)


@dataclass
class TiffinProcess:
    """A running ``tiffin serve``: its URL, admin token and the environment the CLI/SDK need."""

    process: subprocess.Popen[str]
    url: str
    home: Path
    admin_token: str
    log_path: Path

    @property
    def env(self) -> dict[str, str]:
        """``os.environ`` plus TIFFIN_URL, TIFFIN_HOME and TIFFIN_ADMIN_TOKEN for this server."""
        return {
            **os.environ,
            "TIFFIN_URL": self.url,
            "TIFFIN_HOME": str(self.home),
            "TIFFIN_ADMIN_TOKEN": self.admin_token,
        }

    def client(self) -> Any:
        """A :class:`tiffin.TiffinClient` for this server."""
        from tiffin.sdk import TiffinClient

        return TiffinClient(self.url, self.admin_token)

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""


@contextmanager
def serve_tiffin(
    home: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    extra_args: Sequence[str] = (),
) -> Iterator[TiffinProcess]:
    """Run ``tiffin serve`` on a free loopback port (fresh SQLite store unless ``home`` is given).

    On exit it is stopped with SIGTERM, which stops every deployment replica it started.
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tiffin-serve-") as tmp:
        home_path = Path(home) if home is not None else Path(tmp) / "home"
        log_path = Path(tmp) / "serve.log"
        environ = {**os.environ, "TIFFIN_HOME": str(home_path), **(env or {})}
        # Registered models are saved into BentoML's model store too: a test server's go beside its home, not
        # into the user's ~/bentoml, unless the caller points BENTOML_HOME somewhere.
        environ.setdefault("BENTOML_HOME", str(home_path / "bentoml"))
        if "TIFFIN_STORE_URL" not in (env or {}):
            environ.pop("TIFFIN_STORE_URL", None)  # a fresh SQLite store, not whatever the shell points at
        command = [sys.executable, "-m", "tiffin.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *extra_args]
        with open(log_path, "w", encoding="utf-8") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=environ, text=True, start_new_session=True
            )
        try:
            wait_for_line(log_path, process, "ready", timeout)
            token = (home_path / "admin-token").read_text(encoding="utf-8").strip()
            yield TiffinProcess(process, f"http://127.0.0.1:{port}", home_path, token, log_path)
        finally:
            stop_process_group(process, timeout=30)


class Load:
    """``workers`` callers posting ``{"data": [1]}`` to ``url`` with endpoint key ``key`` back to back, in a
    thread of their own, counting answers by status (0: no HTTP answer). A context manager: load while inside."""

    def __init__(self, url: str, key: str, workers: int = 2) -> None:
        self.url, self.key, self.workers = url, key, workers
        self.statuses: dict[int, int] = {}
        self.started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)

    async def _main(self) -> None:
        import httpx

        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {self.key}"}, timeout=60) as client:

            async def caller() -> None:
                while not self._stop.is_set():
                    try:
                        status = (await client.post(self.url, json={"data": [1]})).status_code
                    except httpx.HTTPError:
                        status = 0
                    self.statuses[status] = self.statuses.get(status, 0) + 1

            await asyncio.gather(*(caller() for _ in range(self.workers)))
