"""What the reconciler keeps for each replica of a deployment, what it shows of it, and what it asks of its host.

A *slot* is one replica number of a deployment (``replica-N.log``) with the process currently filling it:
:class:`Slot` is the reconciler's own (mutable, event-loop only), :class:`ReplicaStatus` the frozen copy
the supervisor hands out. :class:`ReconcilerHost` is the supervisor's side: configuration, tasks and I/O.
"""

from __future__ import annotations

import asyncio
import math
import signal
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from tiffin import paths
from tiffin.specs import ProbeSettings
from tiffin.store.records import DeploymentRecord

from .policy import ProbeCounter
from .prepare import Launch
from .probes import ProbeResult
from .process import ReplicaProcess

__all__ = ["RUNNING", "ReconcilerHost", "ReplicaState", "ReplicaStatus", "Slot", "describe_exit"]

ReplicaState = Literal["pending", "starting", "ready", "unready", "stopping", "dead"]
RUNNING: frozenset[str] = frozenset({"starting", "ready", "unready"})


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """One replica as the supervisor sees it (for ``show``, logs and tests).

    ``state``: ``pending`` (waiting for its turn to start: the server starts a few replicas at a time),
    ``starting`` (process up, not yet ready), ``ready`` (in routing), ``unready`` (was ready,
    readiness probe failing: out of routing, not restarted), ``stopping`` (out of routing, being
    drained/stopped), ``dead`` (no process: waiting to be restarted, or given up on when the
    deployment failed). ``restarts`` counts starts after the first; ``last_error`` is the latest problem
    seen (exit code, failed probe). ``generation`` is the deployment generation whose spec it runs.
    """

    endpoint: str
    deployment: str
    index: int
    pid: int | None
    url: str | None
    """Where the process serves HTTP (``unix:/path/to.sock``), while there is one."""
    state: ReplicaState
    restarts: int
    last_error: str | None
    generation: int
    log_path: Path


class ReconcilerHost(Protocol):
    """What a reconciler needs from the supervisor: configuration, tasks, I/O and notifications."""

    home: Path
    python: str
    env: Mapping[str, str]
    drain_s: float
    max_instances: int
    """The most replicas one deployment may ask for (``TIFFIN_MAX_INSTANCES``)."""

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` as a tracked task (cancelled when the supervisor stops)."""

    def inline_assets(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """``spec`` with its pinned asset references replaced by the assets (:mod:`tiffin.assets.resolve`)."""

    def socket_path(self, deployment: int, index: int) -> Path:
        """The Unix socket replica ``index`` of the deployment numbered ``deployment`` listens on."""

    def may_start(self) -> bool:
        """Whether one more replica may start now (the server starts a few at a time)."""

    async def probe(self, url: str, timeout: float) -> ProbeResult:
        """``GET url/`` within ``timeout`` seconds."""

    async def write_state(self, record: DeploymentRecord, state: str, reason: str | None) -> DeploymentRecord | None:
        """Write the deployment's state unless ``record`` is stale; the written record, or None."""

    def routing_changed(self) -> None:
        """Some replica joined or left routing: tell the routing-table builder now."""

    def wake(self) -> None:
        """Run a reconcile pass soon (a probe or a stop finished)."""


@dataclass(eq=False, slots=True)
class Slot:
    """One replica number of a deployment and the process filling it (mutable, event-loop only)."""

    index: int
    template: str
    generation: int
    launch: Launch
    """How this slot's process starts: the plan of its template, and the interpreter (its environment's)."""
    readiness_probe: ProbeSettings
    liveness_probe: ProbeSettings
    state: ReplicaState = "dead"
    process: ReplicaProcess | None = None
    starts: int = 0
    crashes: int = 0  # in a row, for the restart backoff
    start_failures: int = 0  # exits before becoming ready, in a row
    became_ready: bool = False  # since the current start
    last_error: str | None = None
    restart_at: float | None = None
    ready_since: float | None = None
    ready_line_at: float | None = None
    readiness: ProbeCounter = field(default_factory=ProbeCounter)
    liveness: ProbeCounter = field(default_factory=ProbeCounter)
    next_readiness_at: float = math.inf
    next_liveness_at: float = math.inf
    probing: set[str] = field(default_factory=set)
    liveness_tripped: str | None = None
    retiring: bool = False
    v2: tuple[str | None, str | None] = (None, None)  # the replica's own V2 server and model, if it has one

    def status(self, endpoint: str, deployment: str, home: Path) -> ReplicaStatus:
        """This slot as :class:`ReplicaStatus` shows it."""
        return ReplicaStatus(
            endpoint=endpoint,
            deployment=deployment,
            index=self.index,
            pid=self.process.pid if self.process else None,
            url=self.process.url if self.process else None,
            state=self.state,
            restarts=max(0, self.starts - 1),
            last_error=self.last_error,
            generation=self.generation,
            log_path=paths.replica_log_path(home, endpoint, deployment, self.index),
        )


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"
