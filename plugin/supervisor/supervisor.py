"""The :class:`Supervisor`: a level-triggered reconciler from the store's deployments to replica processes.

Every pass compares the desired state (the online deployments in the store) with the processes it
runs and moves one towards the other; nothing depends on having seen a particular change, so a missed
notification, a crashed replica or a restarted supervisor all converge the same way. Passes run on
the caller's event loop (the gateway's), every ``poll_interval`` seconds, at once after
:meth:`Supervisor.notify`, and whenever a probe, exit or timer needs one. Blocking work (the store)
runs in a thread; process starts are quick ``fork``/``exec`` calls.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from tiffin import config
from tiffin.containers.run import remove_leftovers
from tiffin.environments.builder import stop_builds
from tiffin.routing import Replica
from tiffin.runners.tritonserver import TRITONSERVER_ENV
from tiffin.store import Store
from tiffin.store.records import DeploymentRecord

from .host import ErrorLog, Host
from .logfiles import rotate_logs
from .policy import DRAIN_S
from .probes import probe_session
from .process import ReplicaProcess, reap_orphans
from .reconciler import DeploymentReconciler, ReplicaStatus
from .sockets import remove_stale_folders

__all__ = ["Supervisor"]

logger = logging.getLogger("tiffin.supervisor")

_Key = tuple[str, str]  # (endpoint, deployment)
# Linux tells the event loop when a replica exits (ReplicaProcess.watch_exit, a pidfd); elsewhere passes must poll.
_EXITS_NOTIFIED = sys.platform == "linux" and hasattr(os, "pidfd_open")
_PATH_VARIABLES = (TRITONSERVER_ENV,)  # environment variables holding a path, made absolute for replicas


_ROTATE_EVERY_S = 2.0
"""How often replica logs are checked against ``TIFFIN_LOG_MAX_BYTES`` while replicas run (a log may pass it by
what is written in this time before it is rotated); an idle server without replicas only wakes to see there is none."""


class Supervisor:
    """Runs, probes, restarts and rolls the replica processes of the store's online deployments.

    ``home`` is ``TIFFIN_HOME`` (replica logs and spec files go there, see :mod:`tiffin.paths`);
    ``python`` the interpreter that runs replicas; ``on_change()`` is called on the event loop whenever
    a replica joins or leaves routing; ``env`` is added to ``os.environ`` for every replica.
    ``drain_seconds`` is how long a replica leaving service stays up, out of routing, before SIGTERM.
    ``max_starts`` is how many replicas may be starting (up, not yet ready) at once, across all
    deployments (default: the number of CPUs, at least 2); the others wait their turn (``pending``).
    ``max_instances`` (default ``TIFFIN_MAX_INSTANCES``) fails a deployment asking for more replicas.
    ``owned()`` (blocking; called in a thread before each read of the store) names the deployments this
    server runs when several share the store (:meth:`tiffin.node.Node.claim_deployments`); without it,
    all of them. The store is read again at once after :meth:`notify`, and otherwise every
    ``poll_interval`` seconds, for changes that other servers make; while ``alone()`` says no other server
    shares the store, every change comes through this one's :meth:`notify`, so the poll is only a safety net
    run every ``idle_poll_interval`` seconds (an idle server then costs next to nothing). Replicas listen
    on Unix sockets in a folder only the server's user may enter (:mod:`tiffin.supervisor.sockets`).
    """

    def __init__(
        self,
        store: Store,
        home: Path,
        *,
        python: str = sys.executable,
        on_change: Callable[[], None] | None = None,
        poll_interval: float = 0.5,
        env: Mapping[str, str] | None = None,
        drain_seconds: float = DRAIN_S,
        max_starts: int | None = None,
        max_instances: int | None = None,
        owned: Callable[[], set[tuple[str, str]]] | None = None,
        alone: Callable[[], bool] | None = None,
        idle_poll_interval: float = 30.0,
    ) -> None:
        """Configure the supervisor; nothing runs until :meth:`start` (or :meth:`reconcile_once`)."""
        self._store = store
        self._home = Path(home).expanduser().resolve()
        self._on_change = on_change
        self._owned = owned
        self._poll_interval = poll_interval
        self._alone = alone
        self._idle_poll_interval = max(poll_interval, idle_poll_interval)
        # Unbuffered so that a replica's prints reach its log as they happen, not when it exits; and
        # TIFFIN_EXIT_WITH_PARENT so replicas stop themselves if this process is killed outright.
        replica_env = {
            "PYTHONUNBUFFERED": "1",
            **os.environ,
            **(env or {}),
            "TIFFIN_HOME": str(self._home),
            "TIFFIN_EXIT_WITH_PARENT": "1",
        }
        # Replicas run in their own folders, so a path given relative to where the server started
        # (TIFFIN_TRITONSERVER=.venv/triton) would point nowhere there.
        for name in _PATH_VARIABLES:
            if replica_env.get(name) and not Path(replica_env[name]).expanduser().is_absolute():
                replica_env[name] = str(Path(replica_env[name]).expanduser().resolve())
        limits = (
            max_instances if max_instances is not None else config.max_instances(),
            max_starts if max_starts is not None else max(2, os.cpu_count() or 1),
        )
        if limits[1] < 1:
            raise ValueError("max_starts must be at least 1")
        self._host = Host(self, self._home, python, replica_env, drain_seconds, limits)
        self._reconcilers: dict[_Key, DeploymentReconciler] = {}
        self._numbers = itertools.count(1)  # names deployments' sockets (see sockets.py)
        self._records: dict[_Key, DeploymentRecord] = {}
        self._routing: dict[_Key, tuple[tuple[Replica, ...], bool]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._errors = ErrorLog()
        self._log_limits = (config.log_max_bytes(), config.log_backups())  # a bad setting fails here, at start
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_event: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._session: aiohttp.ClientSession | None = None
        self._reload_requested = True
        self._last_load = -math.inf

    # --- public API --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the reconcile loop as a task on the running event loop and return at once.

        The loop first stops replicas that a crashed supervisor left behind under ``home``.
        """
        if self._task is not None and not self._task.done():
            raise RuntimeError("the supervisor is already running")
        self._bind_loop()
        self._task = asyncio.create_task(self._run(), name="tiffin-supervisor")
        # Replicas run in sessions of their own, so nothing else stops them if the host process exits
        # without calling stop(): kill them at interpreter exit at least.
        atexit.register(self._kill_all_now)

    async def stop(self) -> None:
        """Stop the loop and every replica process: SIGTERM to each process group, up to 10 s, SIGKILL.

        Replicas leave routing first (``on_change`` is called). Returns when no replica process is left.
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            async with self._get_lock():  # let a reconcile_once() in progress finish its pass
                stop_builds(self._home)  # an environment being built: its uv, which its thread would wait for
                tasks = list(self._tasks)
                for pending in tasks:
                    pending.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for reconciler in self._reconcilers.values():
                    reconciler.withdraw_all()
                self._emit_if_changed()
                processes = self._processes()
                if processes:
                    logger.info("stopping %d replica process(es)", len(processes))
                results = await asyncio.gather(*(p.terminate() for p in processes), return_exceptions=True)
                for process, result in zip(processes, results, strict=True):
                    if isinstance(result, BaseException):
                        logger.error("stopping replica pid %d failed", process.pid, exc_info=result)
                        process.kill_now()
                for reconciler in self._reconcilers.values():
                    reconciler.forget()
                self._reconcilers.clear()
                self._records.clear()
                self._reload_requested = True
        except BaseException:
            # Cancelled or broken half-way: no orphans, whatever it takes.
            self._kill_all_now()
            raise
        finally:
            atexit.unregister(self._kill_all_now)
            self._host.sockets.remove()
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def reconcile_once(self) -> None:
        """Run one pass now: reload the store, then start, stop, restart and probe what is due.

        Probes and drains it starts run on as tasks of the event loop after it returns.
        """
        self._bind_loop()
        await self._pass(reload=True)

    def ready_replicas(self, endpoint: str, deployment: str) -> tuple[Replica, ...]:
        """The replicas of ``endpoint``/``deployment`` that may take requests now (empty if none/unknown)."""
        reconciler = self._reconcilers.get((endpoint, deployment))
        return reconciler.ready_replicas() if reconciler is not None else ()

    def replacing(self, endpoint: str, deployment: str) -> bool:
        """Whether a replica of ``endpoint``/``deployment`` is starting or due to restart (it will be ready), or
        the autoscaler keeps it at zero (a request for it starts one): its requests wait rather than get 503."""
        reconciler = self._reconcilers.get((endpoint, deployment))
        return reconciler is not None and reconciler.replacing()

    def replicas(self) -> list[ReplicaStatus]:
        """Every replica the supervisor knows, ready or not, by endpoint, deployment and number."""
        return [status for _, r in sorted(self._reconcilers.items()) for status in r.statuses()]

    def scale(self, endpoint: str, deployment: str, generation: int, count: int | None) -> None:
        """Keep ``count`` replicas of ``endpoint``/``deployment`` while its record is at ``generation`` (the
        autoscaler, tiffin.autoscale; None: its instance_count again). An update (a new generation) wins
        until the autoscaler next decides. Capped at this server's TIFFIN_MAX_INSTANCES."""
        reconciler = self._reconcilers.get((endpoint, deployment))
        if reconciler is not None:
            reconciler.scaled = None if count is None else (generation, min(count, self._host.max_instances))
            self._wake()

    def deployments(self) -> dict[tuple[str, str], tuple[DeploymentRecord, int | None]]:
        """The deployments this supervisor runs: their records and how many replicas each keeps now (None while
        one is being created or updated, until its replicas are ready: not the autoscaler's to change yet)."""
        return {key: (self._records[key], r.target()) for key, r in self._reconcilers.items() if key in self._records}

    def notify(self) -> None:
        """Reload the store and reconcile now rather than at the next poll (safe from any thread)."""
        self._reload_requested = True
        self._wake()

    # --- the loop ----------------------------------------------------------------------------------

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._wake_event = asyncio.Event()
            self._lock = asyncio.Lock()

    def _get_lock(self) -> asyncio.Lock:
        self._bind_loop()
        assert self._lock is not None
        return self._lock

    async def _rotate_logs(self) -> None:
        # Replicas append to their logs themselves and cannot rotate them (see .logfiles): done from here.
        while True:
            await asyncio.sleep(_ROTATE_EVERY_S)
            if self._reconcilers:
                await asyncio.to_thread(rotate_logs, self._home, *self._log_limits)

    async def _run(self) -> None:
        try:
            await reap_orphans(self._home)
            remove_stale_folders(self._home)
        except Exception:
            logger.exception("stopping replicas left behind by an earlier supervisor failed")
        assert self._wake_event is not None
        self._host.spawn(self._remove_leftover_containers(), "remove leftover containers")
        self._host.spawn(self._rotate_logs(), "rotate logs")
        while True:
            # Cleared before the pass: a wake-up that arrives during the pass is kept for the next one.
            self._wake_event.clear()
            reload = self._reload_requested or time.monotonic() - self._last_load >= self._poll_every()
            try:
                await self._pass(reload)
            except Exception as exc:  # _pass guards each deployment; this is a last resort
                self._errors.report("pass", "a supervisor pass", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_event.wait(), self._sleep_for())

    async def _remove_leftover_containers(self) -> None:
        # A container outlives a replica killed with its server (the engine runs it): removed by its labels, beside
        # the first passes (a slow engine must not hold up deployments that need none; new containers are not
        # touched: their server, this one, is alive).
        try:
            await asyncio.to_thread(remove_leftovers, self._home)
        except Exception:
            logger.exception("removing containers left behind by an earlier supervisor failed")

    def _poll_every(self) -> float:
        if self._alone is not None and self._alone():
            return self._idle_poll_interval
        return self._poll_interval

    def _sleep_for(self) -> float:
        # No fixed tick: the loop sleeps until the next probe, restart or reload is due, or a notify() wakes it.
        now = time.monotonic()
        due = min((r.next_due(now) for r in self._reconcilers.values()), default=math.inf)
        due = min(due, self._last_load + self._poll_every())
        sleep = max(0.01, due - now)
        # Without a pidfd a replica's exit is only seen by a pass: keep passing often enough to notice it.
        return sleep if _EXITS_NOTIFIED else min(sleep, self._poll_interval)

    async def _pass(self, reload: bool) -> None:
        async with self._get_lock():
            if reload:
                await self._load()
            now = time.monotonic()
            for key in sorted(set(self._records) | set(self._reconcilers)):
                record = self._records.get(key)
                reconciler = self._reconcilers.get(key)
                if reconciler is None:
                    if record is None:
                        continue
                    reconciler = DeploymentReconciler(key[0], key[1], self._host, next(self._numbers))
                    self._reconcilers[key] = reconciler
                try:
                    await reconciler.reconcile(record, now)
                except Exception as exc:  # one broken deployment must not stop the others
                    self._errors.report(key, f"reconciling deployment {key[0]}/{key[1]}", exc)
                else:
                    self._errors.clear(key)
                if record is None and reconciler.empty():
                    reconciler.forget()
                    del self._reconcilers[key]
                    logger.info("deployment %s/%s is gone; its replicas are stopped", *key)
            self._emit_if_changed()

    async def _load(self) -> None:
        self._reload_requested = False  # before reading: a notify() during the read asks again
        self._last_load = time.monotonic()
        try:
            # Claim first: a deployment this node just took is then read with its new owner.
            mine = await asyncio.to_thread(self._owned) if self._owned is not None else None
            records = await asyncio.to_thread(self._store.list_deployments)
        except Exception as exc:
            # Keep the last known desired state: a store hiccup must not stop every deployment.
            self._errors.report("store", "reading deployments from the store", exc)
            return
        self._errors.clear("store")
        self._records = {
            (r.endpoint_name, r.name): r
            for r in records
            if r.kind == "online" and r.state != "Deleting" and (mine is None or (r.endpoint_name, r.name) in mine)
        }

    # --- helpers for the reconcilers ---------------------------------------------------------------

    def _remember(self, record: DeploymentRecord) -> None:
        key = (record.endpoint_name, record.name)
        current = self._records.get(key)
        if current is not None and current.id == record.id and current.generation <= record.generation:
            self._records[key] = record

    def _wake(self) -> None:
        loop, event = self._loop, self._wake_event
        if loop is None or event is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            loop.call_soon_threadsafe(event.set)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("supervisor task %r failed", task.get_name(), exc_info=task.exception())

    def _probe_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = probe_session()
        return self._session

    def _processes(self) -> list[ReplicaProcess]:
        return [p for r in self._reconcilers.values() for p in r.processes()]

    def _emit_if_changed(self) -> None:
        # Whether a replacement is on its way is routing too: requests queue for it, or get 503 once none is.
        routing = {
            key: (ready, r.replacing())
            for key, r in self._reconcilers.items()
            if (ready := r.ready_replicas()) or r.replacing()
        }
        if routing == self._routing:
            return
        self._routing = routing
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:
                logger.exception("the supervisor's on_change callback failed")

    def _kill_all_now(self) -> None:
        for process in self._processes():
            process.kill_now()
