"""Guarded rollouts in the store: one row per endpoint, every write a compare-and-set on ``generation``.

A rollout is driven by one server at a time: the driver that holds it writes ``state["owner"]`` and
``state["lease_until"]`` (epoch seconds) with each write, and another server takes it over only once that lease
has run out, by the same compare-and-set. What the rollout does lives in :mod:`tiffin.rollout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from tiffin.errors import ConflictError, NotFoundError

from .core import StoreCore, now_utc
from .models import Rollout

__all__ = ["ACTIVE_ROLLOUT_STATES", "RolloutRecord", "RolloutRepository"]

ACTIVE_ROLLOUT_STATES = ("Mirroring", "Running", "Paused", "RollingBack", "Aborting")
"""A rollout in one of these may still change traffic; another cannot start on the endpoint meanwhile."""


@dataclass(frozen=True, slots=True)
class RolloutRecord:
    endpoint_name: str
    spec: dict[str, Any]
    status: str
    state: dict[str, Any]
    generation: int
    created_at: datetime
    updated_at: datetime

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_ROLLOUT_STATES


def _record(row: Rollout) -> RolloutRecord:
    return RolloutRecord(
        row.endpoint_name, dict(row.spec), row.status, dict(row.state), row.generation, row.created_at, row.updated_at
    )


class RolloutRepository(StoreCore):
    """Rollout rows as plain records; one of the bases of ``Store``."""

    def start_rollout(self, endpoint: str, spec: dict[str, Any], status: str, state: dict[str, Any]) -> RolloutRecord:
        """Write a new rollout of ``endpoint``, replacing a finished one; ConflictError while one is active."""
        now = now_utc()
        with self.session(write=True) as session:
            self._endpoint(session, endpoint, "online")
            row = session.get(Rollout, endpoint)
            if row is not None and row.status in ACTIVE_ROLLOUT_STATES:
                raise ConflictError(
                    f"endpoint '{endpoint}' has a rollout in progress ({row.status}); see `tiffin online-endpoint "
                    f"rollout show -n {endpoint}`, or stop it with `rollout abort`"
                )
            if row is None:
                row = Rollout(endpoint_name=endpoint, generation=0, created_at=now)
                session.add(row)
            row.spec, row.status, row.state, row.generation = spec, status, state, row.generation + 1
            row.created_at = row.created_at or now
            row.updated_at = now
            session.flush()
            return _record(row)

    def get_rollout(self, endpoint: str) -> RolloutRecord:
        with self.session() as session:
            row = session.get(Rollout, endpoint)
            if row is None:
                raise NotFoundError(
                    f"endpoint '{endpoint}' has no rollout; start one with `tiffin online-endpoint rollout -n "
                    f"{endpoint} --to DEPLOYMENT`"
                )
            return _record(row)

    def list_rollouts(self) -> list[RolloutRecord]:
        with self.session() as session:
            return [_record(row) for row in session.scalars(select(Rollout).order_by(Rollout.endpoint_name))]

    def write_rollout(
        self, endpoint: str, generation: int, *, status: str | None = None, state: dict[str, Any] | None = None
    ) -> RolloutRecord | None:
        """Change a rollout seen at ``generation``; the new record, or None when someone changed it meanwhile."""
        values: dict[str, Any] = {"generation": generation + 1, "updated_at": now_utc()}
        if status is not None:
            values["status"] = status
        if state is not None:
            values["state"] = state
        with self.session(write=True) as session:
            result = session.execute(
                update(Rollout)
                .where(Rollout.endpoint_name == endpoint, Rollout.generation == generation)
                .values(**values)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return None
            row = session.get(Rollout, endpoint)
            assert row is not None
            session.refresh(row)
            return _record(row)
