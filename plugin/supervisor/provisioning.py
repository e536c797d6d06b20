"""A deployment's provisioning state as its reconciler writes it: Succeeded once enough replicas are ready,
Failed (with what went wrong) when its replicas or its environment cannot start, and the gate that keeps a
failed deployment from being retried until someone changes it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from tiffin import paths
from tiffin.store.records import DeploymentRecord

from .policy import START_FAILURE_LIMIT
from .process import read_tail
from .slots import ReconcilerHost, Slot

__all__ = ["Provisioning"]

logger = logging.getLogger("tiffin.supervisor")


class Provisioning:
    """Writes one deployment's state; ``event(name, message)`` records a deployment event."""

    def __init__(self, host: ReconcilerHost, endpoint: str, deployment: str, event: Callable[[str, str], None]) -> None:
        self._host = host
        self.endpoint = endpoint
        self.deployment = deployment
        self._event = event
        # The record as this reconciler last wrote it: newer than a reload that raced with the write.
        self.written: DeploymentRecord | None = None
        # Set when we wrote Failed: the generation that write produced. Nothing is retried until the
        # record's generation moves past it (someone changed the deployment).
        self.gate: int | None = None
        # The generation whose replicas have all been ready at once: from then on the autoscaler may move its count.
        self.ready_generation: int | None = None

    @property
    def name(self) -> str:
        return f"{self.endpoint}/{self.deployment}"

    def reset(self) -> None:
        """Forget what was written (a new deployment of the same name)."""
        self.written = None
        self.gate = None
        self.ready_generation = None

    def newest(self, record: DeploymentRecord) -> DeploymentRecord:
        """``record``, or our own write when a reload raced with it and is older."""
        return self.written if self.written is not None and self.written.generation > record.generation else record

    def gated(self, record: DeploymentRecord) -> bool:
        """Whether ``record`` is the failed generation (or older): nothing is retried for it."""
        return self.gate is not None and record.generation <= self.gate

    async def report(self, record: DeploymentRecord, current: Sequence[Slot], count: int) -> None:
        """Failed when a replica of the current template gave up starting; Succeeded once ``count`` are ready."""
        failing = [s for s in current if s.start_failures >= START_FAILURE_LIMIT]
        if failing:
            slot = failing[0]
            log_path = paths.replica_log_path(self._host.home, self.endpoint, self.deployment, slot.index)
            reason = (
                f"replica {slot.index} stopped {slot.start_failures} times in a row before becoming ready "
                f"(last: {slot.last_error}); not retrying until the deployment is updated. "
                f"Last lines of {log_path}:\n{read_tail(log_path)}"
            )
            await self.fail(record, reason)
            return
        ready = sum(1 for s in current if s.state == "ready")
        if ready >= count:
            self.ready_generation = record.generation
        if ready >= count and (record.state != "Succeeded" or record.reason is not None):
            written = await self._host.write_state(record, "Succeeded", None)
            if written is not None:
                self.written = written
                logger.info("deployment %s succeeded: %d ready replica(s)", self.name, ready)
                self._event("DeploymentSucceeded", f"{ready} ready replica(s)")

    async def fail(self, record: DeploymentRecord, reason: str) -> None:
        """Write Failed with ``reason`` and gate retries on the generation written."""
        written = await self._host.write_state(record, "Failed", reason)
        if written is None:
            return  # the deployment changed meanwhile: the next pass judges the new spec
        self.written = written
        # write_state wrote only if nobody changed the deployment since ``record`` was read, so the
        # generation of our own write is the one to wait past.
        self.gate = written.generation
        logger.error("deployment %s failed: %s", self.name, reason)
        self._event("DeploymentFailed", reason.split("\n", 1)[0])
