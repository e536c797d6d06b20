"""Batch jobs and their mini-batches: the part of the :class:`~tiffin.store.Store` the batch runner works from.

Jobs are not routing state: their writes leave the routing counter alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tiffin.errors import ConflictError, NotFoundError
from tiffin.paths import safe_name

from .core import StoreCore, check_state, now_utc
from .models import Job, MiniBatch
from .records import JOB_STATUSES, TERMINAL_JOB_STATUSES, JobRecord, MiniBatchRecord

__all__ = ["MINI_BATCH_STATUSES", "JobRepository"]

# Columns that update_job / update_mini_batch may change; the rest are identity or bookkeeping.
_JOB_MUTABLE = frozenset({"deployment_name", "status", "outputs", "error", "started_at", "finished_at", "progress"})
_MINI_BATCH_MUTABLE = frozenset({"status", "attempts", "rows", "failed_items", "error"})
MINI_BATCH_STATUSES = ("pending", "running", "done", "failed")


def _job_record(row: Job) -> JobRecord:
    return JobRecord(
        name=row.name,
        endpoint_name=row.endpoint_name,
        deployment_name=row.deployment_name,
        status=row.status,
        inputs=dict(row.inputs),
        outputs=None if row.outputs is None else dict(row.outputs),
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        progress=None if row.progress is None else dict(row.progress),
        spec=None if row.spec is None else dict(row.spec),
        owner=row.owner,
    )


def _mini_batch_record(row: MiniBatch) -> MiniBatchRecord:
    return MiniBatchRecord(
        job_name=row.job_name,
        index=row.index,
        items=list(row.items),
        status=row.status,
        attempts=row.attempts,
        rows=row.rows,
        failed_items=row.failed_items,
        error=row.error,
    )


class JobRepository(StoreCore):
    """Batch jobs and their mini-batches, as plain records; one of the bases of ``Store``."""

    # --- jobs --------------------------------------------------------------------------------------

    def create_job(
        self,
        name: str,
        endpoint_name: str,
        deployment_name: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        spec: Mapping[str, Any] | None = None,
    ) -> JobRecord:
        """Queue a job for a batch endpoint (which must exist); :class:`ConflictError` if the name is used.

        ``spec`` is the deployment spec the job runs with: later changes to the deployment do not change
        a job already invoked, as on Azure.
        """
        safe_name(name, "job name")  # it names the job's folder (tiffin.paths)
        try:
            with self.session(write=True) as session:
                self._endpoint(session, endpoint_name, "batch")
                if session.get(Job, name) is not None:
                    raise ConflictError(f"job '{name}' already exists; job names are unique, pick another")
                row = Job(
                    name=name,
                    endpoint_name=endpoint_name,
                    deployment_name=deployment_name,
                    status="Queued",
                    inputs=dict(inputs or {}),
                    outputs=None,
                    error=None,
                    created_at=now_utc(),
                    started_at=None,
                    finished_at=None,
                    progress=None,
                    spec=None if spec is None else dict(spec),
                )
                session.add(row)
                session.flush()
                return _job_record(row)
        except IntegrityError as exc:  # lost a race with a concurrent create (PostgreSQL)
            raise ConflictError(f"job '{name}' already exists; job names are unique, pick another") from exc

    def get_job(self, name: str) -> JobRecord:
        """The job ``name``."""
        with self.session() as session:
            return _job_record(self._job(session, name))

    @staticmethod
    def _job(session: Session, name: str, *, lock: bool = False) -> Job:
        # lock: hold the row until commit (PostgreSQL), so a compare-and-set cannot interleave with another.
        row = session.get(Job, name, with_for_update=lock or None)
        if row is None:
            raise NotFoundError(
                f"job '{name}' not found; list a batch endpoint's jobs with "
                "`tiffin batch-endpoint list-jobs --name <endpoint>`"
            )
        return row

    def list_jobs(
        self, endpoint_name: str | None = None, status: str | None = None, *, deployment_name: str | None = None
    ) -> list[JobRecord]:
        """Jobs, oldest first, optionally of one endpoint, one of its deployments and/or in one status."""
        query = select(Job).order_by(Job.created_at, Job.name)
        if endpoint_name is not None:
            query = query.where(Job.endpoint_name == endpoint_name)
        if deployment_name is not None:
            query = query.where(Job.deployment_name == deployment_name)
        if status is not None:
            check_state(status, JOB_STATUSES, "status")
            query = query.where(Job.status == status)
        with self.session() as session:
            return [_job_record(row) for row in session.scalars(query)]

    def update_job(
        self, name: str, /, *, expected_status: str | None = None, expected_owner: str | None = None, **changes: Any
    ) -> JobRecord | None:
        """Change a job's ``status``, ``outputs``, ``error``, ``progress``, ``deployment_name`` or times.

        Moving to ``Running`` stamps ``started_at`` and to a final status stamps ``finished_at``,
        unless given. With ``expected_status``, the change is made only if the job is in that status
        (compare-and-set: a job canceled meanwhile stays canceled); None is returned when it is not.
        With ``expected_owner``, likewise only while that node owns it (a job taken over is the new owner's).
        """
        unknown = set(changes) - _JOB_MUTABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}; updatable: {sorted(_JOB_MUTABLE)}")
        status = changes.get("status")
        if status is not None:
            check_state(status, JOB_STATUSES, "status")
        for key in ("started_at", "finished_at"):
            value = changes.get(key)
            if isinstance(value, datetime) and value.tzinfo is None:
                raise ValueError(f"{key} must be timezone-aware (UTC), not naive {value!r}")
        with self.session(write=True) as session:
            row = self._job(session, name, lock=expected_status is not None or expected_owner is not None)
            if expected_status is not None and row.status != expected_status:
                return None
            if expected_owner is not None and row.owner != expected_owner:
                return None
            now = now_utc()
            if status == "Running" and row.started_at is None:
                changes.setdefault("started_at", now)
            if status in TERMINAL_JOB_STATUSES and row.finished_at is None:
                changes.setdefault("finished_at", now)
            for key, value in changes.items():
                setattr(row, key, dict(value) if isinstance(value, Mapping) else value)
            session.flush()
            return _job_record(row)

    # --- mini-batches ------------------------------------------------------------------------------

    def plan_job(self, name: str, batches: list[list[Any]]) -> list[MiniBatchRecord]:
        """Record a job's mini-batches (their items, in order) once; a job planned already keeps its plan.

        Returns the job's mini-batches as stored, so a resumed job sees what was done before.
        """
        with self.session(write=True) as session:
            self._job(session, name)
            query = select(MiniBatch).where(MiniBatch.job_name == name).order_by(MiniBatch.index)
            rows = list(session.scalars(query))
            if not rows:
                now = now_utc()
                rows = [
                    MiniBatch(job_name=name, index=i, items=list(items), status="pending", attempts=0, rows=None,
                              failed_items=0, error=None, updated_at=now)
                    for i, items in enumerate(batches)
                ]  # fmt: skip
                session.add_all(rows)
                session.flush()
            return [_mini_batch_record(row) for row in rows]

    def mini_batches(self, name: str) -> list[MiniBatchRecord]:
        """A job's mini-batches, in order (empty until the job is planned)."""
        query = select(MiniBatch).where(MiniBatch.job_name == name).order_by(MiniBatch.index)
        with self.session() as session:
            return [_mini_batch_record(row) for row in session.scalars(query)]

    def update_mini_batch(self, name: str, index: int, /, **changes: Any) -> None:
        """Change a mini-batch's ``status``, ``attempts``, ``rows``, ``failed_items`` or ``error``."""
        unknown = set(changes) - _MINI_BATCH_MUTABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}; updatable: {sorted(_MINI_BATCH_MUTABLE)}")
        if "status" in changes:
            check_state(changes["status"], MINI_BATCH_STATUSES, "status")
        with self.session(write=True) as session:
            result = session.execute(
                update(MiniBatch)
                .where(MiniBatch.job_name == name, MiniBatch.index == index)
                .values(**changes, updated_at=now_utc())
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFoundError(f"mini-batch {index} of job '{name}' not found")
