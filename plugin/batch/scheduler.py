"""Starts batch jobs as capacity allows, resumes the ones a stopped server left running, stops them all on shutdown.

``tiffin serve`` runs one :class:`BatchScheduler`. Each pass (at once when the control plane says a job was
invoked or canceled, when a job of this server ends, and every half second while other servers share the store;
alone, every ``idle_poll_interval`` seconds as a safety net, since every change then comes through this server)
it

* resumes every ``Running`` job this node owns that no thread of it runs (the server was restarted
  mid-job), and takes over (compare-and-set in the store) the ``Running`` jobs whose node stopped beating;
* provisions the batch deployments created or updated since (``Creating``/``Updating``): their environments
  built and spare workers started for their first jobs (:mod:`tiffin.batch.provision`);
* starts ``Queued`` jobs oldest first, at most ``max_jobs_per_deployment`` at a time per deployment across
  every server sharing the store, and within each compute's ``max_instances``: the running jobs of every
  batch deployment on an ``amlcompute`` compute use at most that many instances (``instance_count`` each)
  together (:func:`tiffin.batch.planner.admit`). A job over either waits ``Queued``, in order: it can't jump
  the queue of its own deployment, nor a job of its compute invoked before it. A job's end wakes the next
  pass, so a queued job starts as soon as capacity frees. While other servers are alive it takes one job
  per pass, so they share the queue.

Each job runs in a thread of its own (:class:`~tiffin.batch.runner.JobRunner`), its workers in processes
of their own; no worker runs while no job does (spares aside: idle, their imports done, see
:mod:`tiffin.batch.provision`). Once a batch endpoint exists, the fork server the workers are forked from is
started (see :class:`~tiffin.batch.pool.LocalPool`), so a first job does not wait for its imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from tiffin import config
from tiffin.batch.pool import stop_spares, warm_fork_server
from tiffin.batch.provision import start_provisioning
from tiffin.batch.runner import JobRunner
from tiffin.cluster import jobs_to_run
from tiffin.store import Store

__all__ = ["BatchScheduler"]

logger = logging.getLogger("tiffin.batch")


class BatchScheduler:
    """Runs the store's batch jobs on this machine (see the module's docstring)."""

    def __init__(
        self,
        store: Store,
        home: Path,
        *,
        max_jobs_per_deployment: int = 1,
        poll_interval: float = 0.5,
        idle_poll_interval: float = 30.0,
        max_workers: int | None = None,
        node_id: str = "local",
        live: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        """``node_id`` names this server among those sharing the store; ``live()`` the nodes alive now
        (:meth:`tiffin.node.Node.live`; without it, this one alone)."""
        if max_jobs_per_deployment < 1:
            raise ValueError("max_jobs_per_deployment must be at least 1")
        self.store = store
        self.home = home
        self.max_workers = max_workers or config.max_workers()  # per job (TIFFIN_MAX_WORKERS)
        self.max_jobs_per_deployment = max_jobs_per_deployment
        self.poll_interval = poll_interval
        self.idle_poll_interval = max(poll_interval, idle_poll_interval)
        self.node_id = node_id
        self._live = live or (lambda: frozenset({node_id}))
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._wake: asyncio.Event | None = None
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._warm = False

    async def start(self) -> None:
        """Start the scheduling loop on the running event loop."""
        self._wake = asyncio.Event()
        self._event_loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._loop(), name="tiffin-batch")

    def notify(self) -> None:
        """A job was invoked or canceled: schedule now rather than at the next poll (event-loop thread)."""
        if self._wake is not None:
            self._wake.set()

    async def stop(self) -> None:
        """Stop scheduling and every running job's workers; the jobs stay Running, to resume next start."""
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for thread in list(self._threads.values()):
            await asyncio.to_thread(thread.join, 30)
        await asyncio.to_thread(stop_spares)

    def running_jobs(self) -> list[str]:
        """Names of the jobs this scheduler runs now."""
        return [name for name, thread in self._threads.items() if thread.is_alive()]

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await asyncio.to_thread(self.schedule)
            except Exception:
                logger.exception("scheduling batch jobs failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_every())
            self._wake.clear()

    def _poll_every(self) -> float:
        # Alone, nobody else queues or takes jobs: invocations, cancels and job ends all wake the loop.
        return self.idle_poll_interval if len(self._live()) == 1 else self.poll_interval

    def _run_job(self, runner: JobRunner) -> None:
        try:
            runner.run()
        finally:
            # The deployment has room for its next Queued job now: schedule it without waiting for a poll.
            self._wake_from_thread()

    def _wake_from_thread(self) -> None:
        loop = self._event_loop
        if loop is not None and self._wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wake.set)

    def _provision(self) -> None:
        """Build the environment of each batch deployment created or updated since (tiffin.batch.provision)."""
        for record in self.store.list_deployments():
            if record.kind == "batch" and record.state in ("Creating", "Updating"):
                start_provisioning(
                    self.store, self.home, record, max_workers=self.max_workers, stop=self._stop,
                    done=self._wake_from_thread,
                )  # fmt: skip

    def schedule(self) -> None:
        """One pass: resume this node's and orphaned Running jobs, then start Queued ones within each
        deployment's limit."""
        for name in [n for n, t in self._threads.items() if not t.is_alive()]:
            del self._threads[name]
        if self._stop.is_set():
            return
        if not self._warm and self.store.list_endpoints("batch"):
            # Once there is a batch endpoint, have the workers' fork server ready before its first job.
            self._warm = True
            threading.Thread(target=warm_fork_server, name="tiffin-batch-warm", daemon=True).start()
        self._provision()
        live = self._live()
        resume, adopt = jobs_to_run(self.store.running_job_owners(), self.node_id, live, self._threads)
        for name in resume:
            logger.info("resuming batch job %s", name)
            self._launch(name)
        for name, owner in adopt:
            if self.store.take_job(name, owner, self.node_id):
                logger.info("taking batch job %s over from node %s, which stopped beating", name, owner)
                self._launch(name)
        # Alone, take every job the limits allow; with others alive, one per pass, so the queue is shared.
        limit = 1_000 if len(live) == 1 else 1
        for name in self.store.claim_queued_jobs(self.node_id, self.max_jobs_per_deployment, limit):
            self._launch(name)

    def _launch(self, name: str) -> None:
        runner = JobRunner(
            self.store, name, self.home, stop=self._stop, max_workers=self.max_workers, node_id=self.node_id
        )
        thread = threading.Thread(target=self._run_job, args=(runner,), name=f"tiffin-job-{name}", daemon=True)
        self._threads[name] = thread
        thread.start()
