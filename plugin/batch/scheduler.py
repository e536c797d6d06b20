"""Starts batch jobs as capacity allows, resumes the ones a stopped server left running, stops them all on shutdown.

``tiffin serve`` runs one :class:`BatchScheduler`. Each pass (every half second, or at once when the control
plane says a job was invoked or canceled) it

* resumes every ``Running`` job no thread of this server runs (the server was restarted mid-job);
* starts ``Queued`` jobs oldest first, at most ``max_jobs_per_deployment`` at a time per deployment: a job
  over that waits ``Queued``, in order (a job can't jump the queue of its own deployment).

Each job runs in a thread of its own (:class:`~tiffin.batch.runner.JobRunner`), its workers in processes
of their own; no worker runs while no job does. Once a batch endpoint exists, the fork server the workers
are forked from is started (see :class:`~tiffin.batch.pool.LocalPool`), so a first job does not wait for
its imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from pathlib import Path

from tiffin import config
from tiffin.batch.pool import warm_fork_server
from tiffin.batch.runner import JobRunner
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
        max_workers: int | None = None,
    ) -> None:
        if max_jobs_per_deployment < 1:
            raise ValueError("max_jobs_per_deployment must be at least 1")
        self.store = store
        self.home = home
        self.max_workers = max_workers or config.max_workers()  # per job (TIFFIN_MAX_WORKERS)
        self.max_jobs_per_deployment = max_jobs_per_deployment
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._owner: dict[str, tuple[str, str | None]] = {}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._warm = False

    async def start(self) -> None:
        """Start the scheduling loop on the running event loop."""
        self._wake = asyncio.Event()
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
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()

    def schedule(self) -> None:
        """One pass: resume orphaned Running jobs, then start Queued ones within each deployment's limit."""
        for name in [n for n, t in self._threads.items() if not t.is_alive()]:
            del self._threads[name]
            self._owner.pop(name, None)
        if self._stop.is_set():
            return
        if not self._warm and self.store.list_endpoints("batch"):
            # Once there is a batch endpoint, have the workers' fork server ready before its first job.
            self._warm = True
            threading.Thread(target=warm_fork_server, name="tiffin-batch-warm", daemon=True).start()
        for job in self.store.list_jobs(status="Running"):
            if job.name not in self._threads:
                logger.info("resuming batch job %s", job.name)
                self._launch(job.name, (job.endpoint_name, job.deployment_name))
        busy = Counter(self._owner.values())
        for job in self.store.list_jobs(status="Queued"):  # oldest first
            key = (job.endpoint_name, job.deployment_name)
            if busy[key] >= self.max_jobs_per_deployment:
                continue
            if self.store.update_job(job.name, expected_status="Queued", status="Running") is None:
                continue  # canceled meanwhile
            busy[key] += 1
            self._launch(job.name, key)

    def _launch(self, name: str, key: tuple[str, str | None]) -> None:
        runner = JobRunner(self.store, name, self.home, stop=self._stop, max_workers=self.max_workers)
        thread = threading.Thread(target=runner.run, name=f"tiffin-job-{name}", daemon=True)
        self._threads[name] = thread
        self._owner[name] = key
        thread.start()
