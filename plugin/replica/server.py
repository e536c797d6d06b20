"""Run a replica on uvicorn (uvloop + httptools): the lean hot path of a deployment.

``tiffin replica serve -f deployment.yml --port 5001`` lands here. The app is built by a factory
from environment variables so uvicorn can start several worker processes (``WORKER_COUNT``), each
importing it and running the script's ``init()`` once, as Azure's server does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from tiffin.config import REPLICA_CPUS_ENV, configure_logging, parse_cpu_list, pin_to_cpus
from tiffin.http_protocol import HTTP_PROTOCOL
from tiffin.replica.app import ReplicaApp
from tiffin.replica.factory import app_from_file, replica_settings

__all__ = ["create_app", "serve"]

_FILE_ENV = "TIFFIN_REPLICA_FILE"
_SET_ENV = "TIFFIN_REPLICA_SET"


def create_app() -> ReplicaApp:
    """uvicorn's app factory: the deployment named by ``$TIFFIN_REPLICA_FILE``."""
    configure_logging()
    overrides = json.loads(os.environ.get(_SET_ENV, "[]"))
    app, _ = app_from_file(os.environ[_FILE_ENV], overrides)
    return app


class _Server(uvicorn.Server):
    """Prints one 'ready' line once the socket accepts requests (supervisors and scripts wait for it)."""

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            where = self.config.uds or f"http://{self.config.host}:{self.config.port}"
            print(f"tiffin replica ready: {where}", flush=True)


def _announce_when_healthy(config: uvicorn.Config, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = _connection(config)
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                where = config.uds or f"http://{config.host}:{config.port}"
                print(f"tiffin replica ready: {where} ({config.workers} workers)", flush=True)
                return
        except OSError:
            pass
        time.sleep(0.2)


def _connection(config: uvicorn.Config) -> Any:
    import http.client

    if config.uds:

        class _UnixConnection(http.client.HTTPConnection):
            def connect(self) -> None:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(2)
                self.sock.connect(config.uds)

        return _UnixConnection("localhost", timeout=2)
    return http.client.HTTPConnection(config.host, config.port, timeout=2)


def _exit_with_parent() -> None:
    """Stop this replica's process group when the process that started it dies.

    The supervisor starts replicas in their own process group (so it can stop a replica and its
    workers together); if the supervisor itself is killed with SIGKILL nobody would stop them, so each
    replica watches for being re-parented and takes its group down.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                with contextlib.suppress(OSError):
                    os.killpg(os.getpgid(0), signal.SIGTERM)
                os._exit(0)

    threading.Thread(target=watch, name="tiffin-parent-watch", daemon=True).start()


def serve(
    file: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 5001,
    uds: str | None = None,
    workers: int | None = None,
    overrides: Sequence[str] = (),
    log_level: str = "warning",
) -> int:
    """Serve the deployment in ``file`` until interrupted; returns the process exit code."""
    # Validate the spec (and fail with its message) before any worker starts.
    if os.environ.get("TIFFIN_EXIT_WITH_PARENT") == "1":
        _exit_with_parent()
    if os.environ.get(REPLICA_CPUS_ENV):
        # Before uvicorn starts its workers, so that they inherit the CPU set.
        pin_to_cpus(parse_cpu_list(os.environ[REPLICA_CPUS_ENV]))
    _, loaded = app_from_file(file, overrides)
    deployment = loaded.spec
    for line in loaded.warnings():
        print(f"WARNING: {loaded.source.name}: {line}", file=sys.stderr, flush=True)
    os.environ[_FILE_ENV] = str(Path(file).resolve())
    os.environ[_SET_ENV] = json.dumps(list(overrides))
    settings = replica_settings({**os.environ, **(deployment.environment_variables or {})})
    config = uvicorn.Config(
        "tiffin.replica.server:create_app",
        factory=True,
        host=host,
        port=port,
        uds=uds,
        workers=workers or settings["workers"],
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http=HTTP_PROTOCOL,
        lifespan="on",
        access_log=False,
        log_level=log_level,
        # The gateway keeps pooled connections open; don't close them under it between bursts.
        timeout_keep_alive=75,
        backlog=4096,
    )
    server = _Server(config)
    if config.workers > 1:
        from uvicorn.supervisors import Multiprocess

        sock = config.bind_socket()
        # uvicorn's workers run its own Server class, so the parent announces readiness once a worker
        # answers the health probe on the shared socket.
        threading.Thread(target=_announce_when_healthy, args=(config,), daemon=True).start()
        Multiprocess(config, sockets=[sock]).run()
        return 0
    with contextlib.suppress(SystemExit):  # uvicorn exits 3 when the app's start-up fails
        server.run()
    # Not started: the runner failed to load (bad script, init() raised); the log says why.
    return 0 if server.started else 1
