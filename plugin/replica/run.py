"""Run a replica from its plan on uvicorn (httptools on uvloop): the lean hot path of a deployment.

``python -m tiffin.replica.run --plan FILE --uds SOCKET`` is what ``tiffin serve``'s supervisor starts, on tiffin's
Python or on the interpreter of the deployment's environment (:mod:`tiffin.environments.runtime`), so this
module imports only the standard library, uvicorn and the runner the plan names. The app is built by a factory
from the plan (in ``$TIFFIN_REPLICA_PLAN``) so uvicorn can start several worker processes (``WORKER_COUNT``),
each running the script's ``init()`` once, as Azure's server does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import uvicorn

from tiffin.config import REPLICA_CPUS_ENV, configure_logging, parse_cpu_list, pin_to_cpus
from tiffin.replica import console
from tiffin.replica.plan import PLAN_ENV, ReplicaPlan, read_plan

__all__ = ["QuietServer", "app_from_plan", "create_app", "main", "serve_plan"]


def app_from_plan(plan: ReplicaPlan) -> Any:
    """The replica's ASGI app for ``plan`` (its runner not yet loaded: the app's start-up loads it)."""
    from tiffin.replica.app import ReplicaApp
    from tiffin.runners.kinds import runner_from_json

    return ReplicaApp(
        runner_from_json(plan.kind, plan.runner),
        name=plan.name,
        model_names=frozenset(plan.model_names),
        version=plan.version,
        max_body_bytes=plan.max_body_bytes,
        scoring_threads=plan.scoring_threads,
        tracing=plan.tracing,
    )


def create_app() -> Any:
    """uvicorn's app factory: the plan in ``$TIFFIN_REPLICA_PLAN``."""
    configure_logging()
    console.install()  # again in each uvicorn worker (a fresh process): init()'s output is stamped there too
    return app_from_plan(ReplicaPlan.from_json(os.environ[PLAN_ENV]))


class QuietServer(uvicorn.Server):
    """uvicorn's server, ticking once a second instead of ten times when idle.

    uvicorn's main loop wakes every 0.1 s to notice ``should_exit`` and to refresh the Date header once a second:
    ten wake-ups a second of an idle replica (or ``tiffin serve``), most of an idle replica's CPU. This ticks once
    a second (the header's resolution: ``on_tick`` refreshes it when the counter is a multiple of 10) and lets a
    signal wake the loop at once, so stopping is as quick as before.
    """

    _exit_event: Any = None
    _loop: Any = None

    async def main_loop(self) -> None:
        self._loop, self._exit_event = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864_000
            # asyncio.TimeoutError: on Python 3.8-3.10 it is not the builtin TimeoutError.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._exit_event.wait(), 1.0)
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        loop, event = self._loop, self._exit_event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)  # a signal handler runs between bytecodes: thread-safe only


READY_FD_ENV = "TIFFIN_READY_FD"
"""Names a pipe (inherited file descriptor) the supervisor watches: one write once the replica accepts requests."""

_ready_fd = None  # taken from READY_FD_ENV at start-up, before the scoring script can start processes


def _take_ready_fd() -> None:
    global _ready_fd
    value = os.environ.pop(READY_FD_ENV, "")
    if not value.isdigit():
        return
    try:
        os.set_inheritable(int(value), False)  # not passed on to the scoring script's own subprocesses
    except OSError:
        return  # not open here (started by hand with the variable set): only the log line says ready
    _ready_fd = int(value)


def _announce_ready(line: str) -> None:
    """Print the 'ready' line (scripts and the log) and tell the supervisor through its pipe, if any."""
    global _ready_fd
    print(line, flush=True)
    fd, _ready_fd = _ready_fd, None
    if fd is not None:
        with contextlib.suppress(OSError):  # the supervisor went away: it also polls the log
            os.write(fd, b"ready\n")
        with contextlib.suppress(OSError):
            os.close(fd)


class _Server(QuietServer):
    """Prints one 'ready' line once the socket accepts requests (supervisors and scripts wait for it)."""

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            where = self.config.uds or f"http://{self.config.host}:{self.config.port}"
            _announce_ready(f"tiffin replica ready: {where}")


def _announce_when_healthy(config: uvicorn.Config, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = _connection(config)
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                where = config.uds or f"http://{config.host}:{config.port}"
                _announce_ready(f"tiffin replica ready: {where} ({config.workers} workers)")
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
    pidfd = None
    if hasattr(os, "pidfd_open"):  # Linux, Python 3.9+: the thread sleeps until the parent exits, no polling
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(parent)

    def watch() -> None:
        if pidfd is not None and os.getppid() == parent:  # opened before the parent could have gone
            import select

            with contextlib.suppress(OSError, ValueError):
                select.select([pidfd], [], [])  # readable once the parent has exited
        while os.getppid() == parent:  # no pidfd (older Python, other systems), or the wait failed
            time.sleep(1.0)
        with contextlib.suppress(OSError):
            os.killpg(os.getpgid(0), signal.SIGTERM)
        os._exit(0)

    threading.Thread(target=watch, name="tiffin-parent-watch", daemon=True).start()


def serve_plan(
    plan: ReplicaPlan,
    *,
    host: str = "127.0.0.1",
    port: int = 5001,
    uds: str | None = None,
    workers: int | None = None,
    log_level: str = "warning",
) -> int:
    """Serve ``plan`` until interrupted; returns the process exit code."""
    # Before uvicorn's Config, whose logging set-up takes sys.stderr as it is then.
    console.install()
    _take_ready_fd()
    if os.environ.get("TIFFIN_EXIT_WITH_PARENT") == "1":
        _exit_with_parent()
    if os.environ.get(REPLICA_CPUS_ENV):
        # Before uvicorn starts its workers, so that they inherit the CPU set.
        pin_to_cpus(parse_cpu_list(os.environ[REPLICA_CPUS_ENV]))
    for line in plan.warnings:
        print(f"WARNING: {line}", file=sys.stderr, flush=True)
    os.environ[PLAN_ENV] = plan.to_json()
    from tiffin.http_protocol import HTTP_PROTOCOL

    config = uvicorn.Config(
        "tiffin.replica.run:create_app",
        factory=True,
        host=host,
        port=port,
        uds=uds,
        workers=workers or plan.workers,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http=HTTP_PROTOCOL,
        ws="none",  # scoring has no websockets: not importing them saves start-up time
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
        if "target" in inspect.signature(Multiprocess.__init__).parameters:
            # uvicorn before 0.51 (every one on Python 3.8 and 3.9) takes the function its workers run.
            Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock]).run()
        else:
            Multiprocess(config, sockets=[sock]).run()
        return 0
    with contextlib.suppress(SystemExit):  # uvicorn exits 3 when the app's start-up fails
        server.run()
    # Not started: the runner failed to load (bad script, init() raised); the log says why.
    return 0 if server.started else 1


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tiffin.replica.run", description=__doc__.splitlines()[0])
    parser.add_argument("--plan", required=True, help="the replica plan (JSON) tiffin serve wrote")
    parser.add_argument("--uds", help="serve on this Unix socket")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    return serve_plan(read_plan(args.plan), host=args.host, port=args.port, uds=args.uds, workers=args.workers)


if __name__ == "__main__":
    sys.exit(main())
