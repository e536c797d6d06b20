"""Runs one batch job to its end: plan, hand mini-batches to a pool, retry, count failures, write the output.

The job's progress lives in the store, one row per mini-batch (:meth:`tiffin.store.Store.plan_job`): a
mini-batch is ``done`` only once its output part is on disk, so a job picked up again after a restart
skips what is done and runs the rest, and its output holds exactly one copy of each part. Rules are
Azure's and live in :mod:`tiffin.batch.planner`: ``retry_settings.max_retries`` and ``.timeout`` per
mini-batch, ``error_threshold`` over failed inputs, ``output_action`` and ``output_file_name``.

A deployment that declares an environment (or an MLflow model with its own requirements) has it built before the
pool starts (:mod:`tiffin.batch.launch`), uv's output in the job's log; its workers then run on its interpreter,
and a build that fails fails the job with uv's message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from tiffin import config
from tiffin.batch.downloads import DownloadStopped, UrlLimits, fetch_url
from tiffin.batch.launch import (
    RAY_ADDRESS_ENV,
    BuildInterrupted,
    job_environment,
    ray_address,
    warm_model,
    worker_settings,
)
from tiffin.batch.planner import Progress, after_failure, over_threshold, plan
from tiffin.batch.pool import LocalPool, Pool
from tiffin.batch.provision import wait_for_provisioning
from tiffin.environments.runtime import PreparedEnvironment
from tiffin.environments.sources import environment_of
from tiffin.errors import EnvironmentBuildError, SpecError, TiffinError
from tiffin.paths import batch_mount_identity, job_dir, job_log_path
from tiffin.specs import BatchDeployment, parse_spec
from tiffin.store import JobRecord, Store

__all__ = ["RAY_ADDRESS_ENV", "JobRunner", "job_progress"]

logger = logging.getLogger("tiffin.batch")

_CANCEL_POLL_S = 0.5
_MAX_DEATHS_WHILE_LOADING = 3

PoolFactory = Callable[[int, dict[str, Any], IO[bytes], BatchDeployment], Pool]


def job_progress(store: Store, job: str) -> Progress:
    """A job's progress, from its mini-batches."""
    return Progress.of([(b.status, len(b.items), b.failed_items, b.rows) for b in store.mini_batches(job)])


class _JobFailed(Exception):
    """The job cannot complete (error threshold, init() failed); the message says why."""


class JobRunner:
    """Runs job ``name`` in the calling thread; :meth:`run` returns when it ended or ``stop`` was set.

    ``stop`` is set when the server shuts down: the workers are stopped and the job stays ``Running``,
    to be resumed by the next server. A job canceled in the store (``Canceled``) is noticed within half a
    second and its workers stopped. ``max_workers`` (default ``TIFFIN_MAX_WORKERS``) caps the job's workers
    whatever its deployment asks: invoke refuses more, but a deployment may have been stored before.
    ``node_id`` is the server running it: when the store names another owner (this server was taken for
    dead and the job taken over), it stops within half a second, as for a cancel, and leaves the job be.
    """

    def __init__(
        self,
        store: Store,
        name: str,
        home: Path,
        *,
        stop: threading.Event | None = None,
        max_workers: int | None = None,
        node_id: str | None = None,
    ) -> None:
        self.store = store
        self.node_id = node_id
        self.name = name
        self.home = home
        self.stop = stop or threading.Event()
        self.max_workers = max_workers or config.max_workers()
        self._log: IO[bytes] | None = None
        self._warm_next: LocalPool | None = None

    # --- the job -----------------------------------------------------------------------------------

    def run(self) -> str:
        """Run the job; returns its final status, or ``"Running"`` if interrupted by ``stop``."""
        job = self.store.get_job(self.name)
        try:
            folder = job_dir(self.home, self.name)
        except TiffinError as exc:  # stored before job names were checked: it gets no folder, anywhere
            return self._finish("Failed", error=exc.message)
        (folder / "parts").mkdir(parents=True, exist_ok=True)
        with open(job_log_path(self.home, self.name), "ab") as log:
            self._log = log
            try:
                return self._run(job, folder)
            except _JobFailed as exc:
                return self._finish("Failed", error=str(exc))
            except SpecError as exc:  # its spec was stored before today's checks (an output file name as a path)
                return self._finish("Failed", error=f"its deployment is no longer valid: {exc.message}")
            except Exception as exc:  # a bug of ours: the job fails with the reason, the server goes on
                logger.exception("batch job %s failed unexpectedly", self.name)
                return self._finish("Failed", error=f"internal error: {type(exc).__name__}: {exc}")
            finally:
                self._log = None
                self._keep_spares()

    def _keep_spares(self) -> None:
        """Once the job has ended, have its deployment's next job find workers with their imports done."""
        pool, self._warm_next = self._warm_next, None
        if pool is None or self.stop.is_set():
            return
        try:
            pool.keep_spares()
        except Exception:  # a spare is an optimisation: the next job starts its workers itself
            logger.exception("starting spare batch workers for the next job of %s failed", self.name)

    def _run(self, job: JobRecord, folder: Path) -> str:
        deployment = parse_spec(job.spec or {}, BatchDeployment, f"batch deployment of job {self.name}").spec
        settings = deployment.settings
        files = list(job.inputs.get("files", []))
        url = job.inputs.get("url")
        planned = self.store.mini_batches(self.name)
        # A resumed job has its file, unless another node planned it: that node's cache is not this one's.
        if url and not files and (not planned or any(not os.path.exists(i) for b in planned for i in b.items)):
            try:
                files = [self._download(str(url), follow_redirects=bool(job.inputs.get("url_redirects")))]
            except DownloadStopped:  # the server stops (the job resumes) or the job was canceled or taken over
                return self._interrupted_status()
        batches = self.store.plan_job(self.name, [list(b.items) for b in plan(files, settings.mini_batch_size)])
        writes = settings.output_action == "append_row"
        parts = folder / "parts"
        items = {b.index: list(b.items) for b in batches}
        if url and files:  # the plan may name another node's copy of the URL's file: this node reads its own
            items = {k: [i if os.path.exists(i) else files[0] for i in v] for k, v in items.items()}
        pending = deque(
            b.index
            for b in batches
            if b.status in ("pending", "running")
            or (b.status == "done" and writes and not _part(parts, b.index).exists())
        )
        failed_items = sum(b.failed_items for b in batches if b.status in ("done", "failed"))
        attempts = {b.index: b.attempts for b in batches}
        self._say(
            f"job {self.name}: {len(files)} input file(s), {len(batches)} mini-batch(es) of {settings.mini_batch_size}"
            + (f"; resuming, {len(batches) - len(pending)} already done" if len(pending) < len(batches) else "")
        )
        output_path = job.inputs.get("output_path")
        outputs = Path(output_path) if output_path else folder / "outputs"
        if pending:
            try:  # the scoring code may write its own files there (AZUREML_BI_OUTPUT_PATH), as on Azure
                outputs.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _JobFailed(f"cannot create the output folder {outputs}: {exc.strerror or exc}") from None
            wanted = deployment.instance_count * settings.max_concurrency_per_instance
            if wanted > self.max_workers:
                self._say(
                    f"instance_count x max_concurrency_per_instance asks for {wanted} workers, over this server's "
                    f"{config.MAX_WORKERS_ENV} ({self.max_workers}); running {self.max_workers} at most"
                )
            size = min(wanted, self.max_workers, len(pending))
            try:
                pool = self._pool(size, job, deployment, outputs)
            except BuildInterrupted:  # canceled, taken over or the server stops while its environment was built
                return self._interrupted_status()
            try:
                outcome = self._drive(pool, pending, items, attempts, failed_items, settings, parts if writes else None)
            finally:
                pool.close()
            if isinstance(pool, LocalPool) and (pool.python is not None or pool.warm_mlflow):
                self._warm_next = pool
            if outcome is not None:
                return outcome
        return self._complete(folder, outputs, settings.output_file_name if writes else None)

    def _drive(
        self,
        pool: Pool,
        pending: deque[int],
        items: dict[int, list[str]],
        attempts: dict[int, int],
        failed_items: int,
        settings: Any,
        parts: Path | None,
    ) -> str | None:
        """Run the pending mini-batches; None when they all ran, else the status the job ended in."""
        timeout_s = settings.retry_settings.timeout
        max_retries = settings.retry_settings.max_retries
        idle: set[int] = set()
        running: dict[int, tuple[int, float]] = {}  # slot -> (mini-batch, deadline)
        loaded: set[int] = set()  # slots whose current worker said it is ready
        deaths_while_loading = 0
        next_cancel_check = 0.0
        pool.start()
        if isinstance(pool, LocalPool) and pool.spares_taken:
            self._say(f"took {pool.spares_taken} spare worker(s), started before the job with their imports done")

        def failure(index: int, message: str) -> None:
            nonlocal failed_items
            if after_failure(attempts[index], max_retries) == "retry":
                self._say(f"mini-batch {index} failed (attempt {attempts[index]}), retrying: {message}")
                self.store.update_mini_batch(self.name, index, status="pending", error=message)
                pending.append(index)
                return
            self._say(f"mini-batch {index} failed after {attempts[index]} attempt(s): {message}")
            self.store.update_mini_batch(
                self.name, index, status="failed", failed_items=len(items[index]), error=message
            )
            failed_items += len(items[index])
            if over_threshold(failed_items, settings.error_threshold):
                raise _JobFailed(
                    f"{failed_items} input file(s) failed, more than error_threshold ({settings.error_threshold}); "
                    f"last error: {message}"
                )

        def assign() -> None:
            while pending and idle:
                slot, index = idle.pop(), pending.popleft()
                attempts[index] += 1
                part = str(_part(parts, index)) if parts is not None else None
                pool.submit(slot, index, items[index], part)
                running[slot] = (index, time.monotonic() + timeout_s)
                # Recorded after the worker has it: a restart in between finds the mini-batch pending and runs
                # it again, which its atomically replaced part allows.
                self.store.update_mini_batch(self.name, index, status="running", attempts=attempts[index])

        while pending or running:
            now = time.monotonic()
            if self.stop.is_set():
                self._say("the server is stopping; the job will resume when it starts again")
                return "Running"
            if now >= next_cancel_check:
                next_cancel_check = now + _CANCEL_POLL_S
                state = self.store.job_owner(self.name)
                if state is None or state[0] == "Canceled":
                    self._say("canceled")
                    return "Canceled"
                if self.node_id is not None and state[1] != self.node_id:
                    # This server was taken for dead (its heartbeat stalled) and another runs the job now.
                    self._say(f"node {state[1]} took the job over; this node ({self.node_id}) stops its workers")
                    return "Running"
            assign()
            events = pool.wait(0.2)
            # Workers that finished get their next mini-batch before the store hears what they did: a worker
            # never waits on a store write.
            for event in events:
                if event.kind == "ready" or (event.kind in ("done", "error") and event.index is not None):
                    running.pop(event.slot, None)
                    idle.add(event.slot)
                if event.kind == "ready":
                    loaded.add(event.slot)
            if not any(e.kind == "load_failed" for e in events):
                assign()
            for event in events:
                if event.kind == "load_failed":
                    raise _JobFailed(f"the scoring code failed to load in a worker: {event.message}")
                elif event.kind == "done" and event.index is not None:
                    self.store.update_mini_batch(
                        self.name, event.index, status="done", rows=event.rows, failed_items=event.failed_items,
                        error=None,
                    )  # fmt: skip
                    failed_items += event.failed_items
                    if event.failed_items and over_threshold(failed_items, settings.error_threshold):
                        raise _JobFailed(
                            f"{failed_items} input file(s) failed, more than error_threshold "
                            f"({settings.error_threshold}); run() returned fewer rows than it was given files"
                        )
                elif event.kind == "error" and event.index is not None:
                    failure(event.index, event.message)
                elif event.kind == "died":
                    lost = running.pop(event.slot, (None, 0.0))[0]
                    idle.discard(event.slot)
                    if event.slot not in loaded:  # it died loading the scoring code: not forever
                        deaths_while_loading += 1
                        if deaths_while_loading > _MAX_DEATHS_WHILE_LOADING:
                            raise _JobFailed(f"workers keep dying while loading the scoring code: {event.message}")
                    loaded.discard(event.slot)
                    pool.restart(event.slot)
                    if lost is not None:
                        failure(lost, event.message)
            now = time.monotonic()
            for slot, (index, deadline) in list(running.items()):
                if now > deadline:
                    del running[slot]
                    loaded.discard(slot)
                    pool.restart(slot)
                    failure(index, f"timed out after {timeout_s}s (retry_settings.timeout); the worker was killed")
        return None

    def _pool(self, size: int, job: JobRecord, deployment: BatchDeployment, outputs: Path) -> Pool:
        identity = batch_mount_identity(job.endpoint_name, deployment.name, (job.spec or {}).get("model"))
        settings = worker_settings(deployment, home=self.home, identity=identity, output_path=outputs)
        overrides = {str(k): str(v) for k, v in deployment.environment_variables.items()}
        address = ray_address(deployment)
        if address:
            from tiffin.batch.ray_pool import RayPool

            # Ray's actors run in the Ray cluster's own Python; a declared environment is not built for them.
            self._say(f"running {size} worker(s) on the Ray cluster at {address}, in the cluster's Python")
            return RayPool(size=size, address=address, settings=settings)
        log, pids = job_log_path(self.home, self.name), job_dir(self.home, self.name) / "workers"
        pool = LocalPool(size=size, job=self.name, settings=settings, log=log, env=overrides, pid_dir=pids)
        pool.warm_mlflow = warm_model(settings["scorer"])
        # A build its deployment's create or update started (tiffin.batch.provision) is waited for, not started
        # again; its spare workers are then there for this job to take.
        wait_for_provisioning(job.endpoint_name, deployment.name, self._interrupted)
        prepared = self._environment(deployment, settings["scorer"]["kind"], log)
        if prepared is None:
            self._say(f"starting {size} worker process(es)")
            return pool
        pool.python = str(prepared.python)
        pool.process_env = prepared.process_env({**os.environ, **overrides})
        self._say(
            f"starting {size} worker process(es) on Python {prepared.spec.python_minor} "
            f"in environment {prepared.key[:12]}"
        )
        return pool

    def _environment(self, deployment: BatchDeployment, kind: str, log: Path) -> PreparedEnvironment | None:
        """The environment the job's workers run in, built now if need be (its output in the job's log); None:
        tiffin's own Python. A build, interpreter or environment error fails the job with its message;
        :class:`BuildInterrupted` when the job is canceled or taken over, or the server stops, meanwhile."""
        owner = f"batch deployment '{deployment.name}'"
        try:
            spec = environment_of(deployment, kind=kind, owner=owner)
            if spec is None:
                return None
            self._say(f"building or reusing the environment of {owner} ({spec.source})")
            return job_environment(
                spec, home=self.home, log_path=log, title=f"environment of {owner}", interrupted=self._interrupted
            )
        except EnvironmentBuildError as exc:  # uv's message, naming the environment's source (an interpreter missing)
            raise _JobFailed(exc.message) from None
        except TiffinError as exc:  # an environment that cannot be read or translated (a build: context...)
            raise _JobFailed(f"the environment of {owner} cannot be used: {exc.message}") from None

    def _download(self, url: str, *, follow_redirects: bool) -> str:
        """The local copy of an ``http(s)://`` input (:mod:`tiffin.batch.downloads`), downloaded now if need be."""
        limits = UrlLimits(max_bytes=config.input_url_max_bytes(), timeout_s=config.input_url_timeout())
        self._say(f"fetching {url}")
        try:
            path, said = fetch_url(url, self.home, limits, follow_redirects=follow_redirects, stopped=self._interrupted)
        except TiffinError as exc:
            raise _JobFailed(exc.message) from None
        self._say(said)
        return str(path)

    def _interrupted_status(self) -> str:
        """The status a job stopped before its end returns: Canceled if it was, else Running (to be resumed by the
        next server, or left to the node that took it over)."""
        state = self.store.job_owner(self.name)
        return "Canceled" if state is None or state[0] == "Canceled" else "Running"

    def _interrupted(self) -> bool:
        """Whether the job should stop now: the server stops, the job was canceled or another node took it."""
        if self.stop.is_set():
            return True
        state = self.store.job_owner(self.name)
        return state is None or state[0] == "Canceled" or (self.node_id is not None and state[1] != self.node_id)

    # --- the end -------------------------------------------------------------------------------------

    def _complete(self, folder: Path, output_folder: Path, output_file_name: str | None) -> str:
        batches = self.store.mini_batches(self.name)
        outputs: dict[str, Any] = {}
        if output_file_name is not None:
            target = output_folder / output_file_name
            tmp = target.with_name(f".{target.name}.tmp")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with open(tmp, "wb") as out:
                    for batch in batches:
                        if batch.status == "done":
                            with open(_part(folder / "parts", batch.index), "rb") as part:
                                shutil.copyfileobj(part, out, 1 << 20)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, target)  # the output appears whole, never half written
            except OSError as exc:  # the parts stay: the job can be run again into a folder that takes them
                with contextlib.suppress(OSError):
                    tmp.unlink(missing_ok=True)
                raise _JobFailed(f"cannot write the output {target}: {exc.strerror or exc}") from None
            outputs["score"] = {"type": "uri_file", "path": str(target), "output_file_name": output_file_name}
        elif _has_files(output_folder):  # summary_only: what the scoring code wrote into AZUREML_BI_OUTPUT_PATH
            outputs["score"] = {"type": "uri_folder", "path": str(output_folder)}
        progress = job_progress(self.store, self.name)
        self._say(
            f"completed: {progress.done}/{progress.total} mini-batches, {progress.rows} row(s), "
            f"{progress.failed_items} failed input(s)"
        )
        return self._finish("Completed", outputs=outputs)

    def _finish(self, status: str, *, error: str | None = None, outputs: dict[str, Any] | None = None) -> str:
        if status == "Failed":
            self._say(f"failed: {error}")
        changes: dict[str, Any] = {"status": status, "progress": job_progress(self.store, self.name).as_dict()}
        if error is not None:
            changes["error"] = error
        if outputs is not None:
            changes["outputs"] = outputs
        # Compare-and-set: a job canceled meanwhile stays canceled, and one taken over is the new owner's to end.
        done = self.store.update_job(self.name, expected_status="Running", expected_owner=self.node_id, **changes)
        return status if done is not None else self.store.get_job(self.name).status

    def _say(self, line: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        logger.info("batch job %s: %s", self.name, line)
        if self._log is not None:
            self._log.write(f"{stamp} tiffin: {line}\n".encode())
            self._log.flush()


def _has_files(folder: Path) -> bool:
    try:
        return any(entry.is_file() for entry in folder.rglob("*"))
    except OSError:
        return False


def _part(parts: Path | None, index: int) -> Path:
    assert parts is not None
    return parts / f"{index:06d}.csv"
