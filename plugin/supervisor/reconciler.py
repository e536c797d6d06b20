"""Reconciling one deployment: its replica slots, rolling updates, restarts, probes and provisioning state.

A *slot* is one replica number of a deployment (``replica-N.log``) with the process currently filling
it. One :class:`DeploymentReconciler` per deployment owns its slots; the :class:`~tiffin.supervisor.Supervisor`
calls :meth:`DeploymentReconciler.reconcile` on every pass and supplies I/O through :class:`ReconcilerHost`.
All of it runs on the event loop: state changes made by probe and stop tasks never race with a pass.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml

from tiffin import paths
from tiffin.errors import SpecError
from tiffin.routing import Replica
from tiffin.specs import OnlineDeployment, ProbeSettings, parse_spec
from tiffin.store.records import DeploymentRecord

from .policy import (
    START_FAILURE_LIMIT,
    ProbeCounter,
    SlotView,
    backoff_resets,
    first_liveness_probe_at,
    first_readiness_probe_at,
    liveness_failed,
    lowest_free_indexes,
    plan_rollout,
    readiness_after,
    restart_delay,
    template_of,
)
from .probes import ProbeResult
from .process import ReplicaProcess, log_header, read_tail, replica_command, spawn_replica

__all__ = ["DeploymentReconciler", "ReconcilerHost", "ReplicaState", "ReplicaStatus"]

logger = logging.getLogger("tiffin.supervisor")

ReplicaState = Literal["pending", "starting", "ready", "unready", "stopping", "dead"]
_RUNNING: frozenset[str] = frozenset({"starting", "ready", "unready"})
# While a replica starts, its log is checked this often for the 'ready' line.
_READY_LINE_POLL_S = 0.1


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


@dataclass(frozen=True, slots=True)
class _Desired:
    """A deployment's desired state, parsed once per store generation."""

    generation: int
    template: str
    count: int
    readiness: ProbeSettings
    liveness: ProbeSettings


@dataclass(eq=False, slots=True)
class _Slot:
    """One replica number of a deployment and the process filling it (mutable, event-loop only)."""

    index: int
    template: str
    generation: int
    spec_path: Path
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


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class DeploymentReconciler:
    """Makes the replica processes of one deployment match its record in the store."""

    def __init__(self, endpoint: str, deployment: str, host: ReconcilerHost, number: int = 0) -> None:
        self.endpoint = endpoint
        self.deployment = deployment
        self.number = number  # names its replicas' sockets: short, and unique in the supervisor
        self._host = host
        self._slots: dict[int, _Slot] = {}
        self._spec_files: dict[str, tuple[Path, int]] = {}  # template -> (spec file, its generation)
        self._desired: _Desired | None = None
        self._spec_error: tuple[int, SpecError] | None = None
        # The record as this reconciler last wrote it: newer than a reload that raced with the write.
        self._written: DeploymentRecord | None = None
        # Set when we wrote Failed: the generation that write produced. Nothing is retried until the
        # record's generation moves past it (someone changed the deployment).
        self._gate: int | None = None
        self._record_id: str | None = None
        self._dir = paths.deployment_dir(host.home, endpoint, deployment)

    @property
    def name(self) -> str:
        """``endpoint/deployment``, for messages."""
        return f"{self.endpoint}/{self.deployment}"

    def empty(self) -> bool:
        """Whether no slot is left (a deleted deployment is fully stopped)."""
        return not self._slots

    # --- the pass ----------------------------------------------------------------------------------

    async def reconcile(self, record: DeploymentRecord | None, now: float) -> None:
        """One pass: notice exits, apply the desired state (``None``: deleted), restart, probe, report."""
        self._observe(now)
        if record is None:
            for slot in list(self._slots.values()):
                self._retire(slot)
            return
        if record.id != self._record_id:
            # First sight, or deleted and created again between two reloads: nothing learnt about an
            # earlier deployment of that name applies (generations start again at 1).
            self._record_id = record.id
            self._desired = self._spec_error = self._written = None
            self._gate = None
        if self._written is not None and self._written.generation > record.generation:
            record = self._written
        gated = self._gate is not None and record.generation <= self._gate
        if self._gate is not None and not gated:
            self._lift_gate(now)
        try:
            desired = self._desired_for(record)
        except SpecError as exc:
            if not gated:
                await self._fail(record, f"the deployment's spec is invalid: {exc}")
            return
        views = [SlotView(s.index, s.template, s.state == "ready") for s in self._slots.values() if not s.retiring]
        plan = plan_rollout(views, desired.template, desired.count, gated)
        for index in plan.retire:
            self._retire(self._slots[index])
        for index in lowest_free_indexes(self._slots, plan.start):
            self._add_slot(index, desired, now)
        self._restart_due(now, desired, gated)
        self._launch_probes(now)
        self._forget_unused_spec_files(desired)
        if not gated:
            await self._report(record, desired)

    def next_due(self, now: float) -> float:
        """The monotonic time at which this deployment next needs a pass (inf: only on events)."""
        due = math.inf
        for slot in self._slots.values():
            # A pending slot waits for a start to finish elsewhere; that wakes the supervisor.
            if slot.state == "dead" and slot.restart_at is not None:
                due = min(due, slot.restart_at)
            if slot.state in _RUNNING:
                if "readiness" not in slot.probing:
                    due = min(due, slot.next_readiness_at)
                if "liveness" not in slot.probing:
                    due = min(due, slot.next_liveness_at)
                if slot.state == "starting" and slot.ready_line_at is None:
                    due = min(due, now + _READY_LINE_POLL_S)
        return due

    # --- observing processes -----------------------------------------------------------------------

    def _observe(self, now: float) -> None:
        for slot in list(self._slots.values()):
            self._observe_slot(slot, now)

    def _observe_slot(self, slot: _Slot, now: float) -> None:
        process = slot.process
        if process is None or slot.state == "stopping":
            return  # dead, or owned by its stop task
        code = process.poll()
        if code is not None:
            self._exited(slot, process, code, now)
        elif slot.liveness_tripped is not None:
            self._restart_unhealthy(slot)
        elif slot.state == "starting" and slot.ready_line_at is None and process.saw_ready_line():
            slot.ready_line_at = now
            first = first_readiness_probe_at(process.started_at, slot.readiness_probe, now)
            slot.next_readiness_at = min(slot.next_readiness_at, first)
        elif slot.state == "ready" and slot.crashes and backoff_resets(slot.ready_since, now):
            slot.crashes = 0

    def _on_exit_event(self, slot: _Slot, process: ReplicaProcess) -> None:
        # Called by the pidfd watcher the moment the process exits: out of routing at once.
        if slot.process is process and slot.state != "stopping":
            self._observe_slot(slot, time.monotonic())
            self._host.wake()

    def _exited(self, slot: _Slot, process: ReplicaProcess, code: int, now: float) -> None:
        process.release()
        serving = slot.state == "ready"
        slot.process = None
        slot.state = "dead"
        slot.ready_since = None
        slot.last_error = _describe_exit(code)
        slot.crashes += 1
        if not slot.became_ready:
            slot.start_failures += 1
        if slot.retiring:
            self._remove(slot)
        elif slot.start_failures >= START_FAILURE_LIMIT:
            # Not restarted: _report marks the deployment Failed; an update lifts that (_lift_gate).
            slot.restart_at = None
            logger.warning(
                "replica %s #%d (pid %d) %s before becoming ready, %d times in a row; giving up (log: %s)",
                self.name,
                slot.index,
                process.pid,
                slot.last_error,
                slot.start_failures,
                process.log_path,
            )
        else:
            slot.restart_at = now + restart_delay(slot.crashes)
            logger.warning(
                "replica %s #%d (pid %d) %s%s; restarting it in %gs (log: %s)",
                self.name,
                slot.index,
                process.pid,
                slot.last_error,
                "" if slot.became_ready else " before becoming ready",
                slot.restart_at - now,
                process.log_path,
            )
        if serving:
            self._host.routing_changed()
        self._host.wake()  # a start slot may have come free for a pending replica

    # --- starting, stopping ------------------------------------------------------------------------

    def _desired_for(self, record: DeploymentRecord) -> _Desired:
        if self._desired is not None and self._desired.generation == record.generation:
            return self._desired
        if self._spec_error is not None and self._spec_error[0] == record.generation:
            raise self._spec_error[1]
        # The store's names are the truth: a YAML's endpoint_name may name another endpoint (and the
        # replica lays out its model under endpoint/deployment).
        spec = {**record.spec, "name": record.name, "endpoint_name": record.endpoint_name}
        try:
            parsed = parse_spec(spec, OnlineDeployment, source=f"deployment {self.name}").spec
        except SpecError as exc:
            self._spec_error = (record.generation, exc)
            raise
        if parsed.instance_count > self._host.max_instances:
            # Checked at PUT too; a record stored before the cap, or by a server with a higher one, ends here.
            self._spec_error = (
                record.generation,
                SpecError(
                    f"is {parsed.instance_count}, above this server's limit of {self._host.max_instances} replicas "
                    "per deployment (TIFFIN_MAX_INSTANCES); lower instance_count or raise the setting",
                    field="instance_count",
                ),
            )
            raise self._spec_error[1]
        template = template_of(spec)
        if template not in self._spec_files:
            path = self._dir / f"deployment-{record.generation}.yml"
            self._dir.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".yml.partial")
            partial.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True), encoding="utf-8")
            partial.replace(path)  # a replica never reads a half-written spec
            self._spec_files[template] = (path, record.generation)
        self._desired = _Desired(
            generation=record.generation,
            template=template,
            count=parsed.instance_count,
            readiness=parsed.readiness_probe,
            liveness=parsed.liveness_probe,
        )
        return self._desired

    def _add_slot(self, index: int, desired: _Desired, now: float) -> None:
        spec_path, generation = self._spec_files[desired.template]
        slot = _Slot(
            index=index,
            template=desired.template,
            generation=generation,
            spec_path=spec_path,
            readiness_probe=desired.readiness,
            liveness_probe=desired.liveness,
        )
        self._slots[index] = slot
        self._start(slot, now)

    def _start(self, slot: _Slot, now: float) -> None:
        host = self._host
        slot.restart_at = None
        if not host.may_start():
            slot.state = "pending"  # _restart_due starts it once a start elsewhere finishes
            return
        log_path = paths.replica_log_path(host.home, self.endpoint, self.deployment, slot.index)
        slot.starts += 1
        try:
            socket = host.socket_path(self.number, slot.index)
            process = spawn_replica(
                replica_command(host.python, slot.spec_path, socket),
                socket=socket,
                log_path=log_path,
                header=lambda pid: log_header(slot.index, slot.generation, pid),
                env=host.env,
                cwd=self._dir,
                pidfile=self._dir / f"replica-{slot.index}.pid",
            )
        except OSError as exc:  # the Python is missing, out of file descriptors…: a failed start
            logger.exception("could not start replica %s #%d", self.name, slot.index)
            slot.last_error = f"could not start: {exc}"
            slot.crashes += 1
            slot.start_failures += 1
            slot.state = "dead"
            slot.restart_at = now + restart_delay(slot.crashes)
            return
        slot.process = process
        slot.state = "starting"
        slot.became_ready = False
        slot.ready_since = slot.ready_line_at = None
        slot.liveness_tripped = None
        slot.v2 = (None, None)
        slot.readiness, slot.liveness = ProbeCounter(), ProbeCounter()
        slot.next_readiness_at = first_readiness_probe_at(process.started_at, slot.readiness_probe, None)
        slot.next_liveness_at = first_liveness_probe_at(process.started_at, slot.liveness_probe)
        process.watch_exit(asyncio.get_running_loop(), lambda: self._on_exit_event(slot, process))
        logger.info(
            "started replica %s #%d (generation %d) pid %d on %s",
            self.name,
            slot.index,
            slot.generation,
            process.pid,
            process.url,
        )

    def _restart_due(self, now: float, desired: _Desired, gated: bool) -> None:
        for slot in list(self._slots.values()):
            if slot.retiring:
                continue
            due = slot.state == "dead" and slot.restart_at is not None and slot.restart_at <= now
            if slot.state != "pending" and not due:
                continue
            if slot.start_failures >= START_FAILURE_LIMIT or (gated and slot.template == desired.template):
                continue  # given up on until the deployment changes (_lift_gate)
            self._start(slot, now)

    def _lift_gate(self, now: float) -> None:
        # The deployment changed since we marked it Failed: give every replica a fresh start.
        self._gate = None
        for slot in self._slots.values():
            slot.start_failures = 0
            slot.crashes = 0
            if slot.state == "dead":
                slot.restart_at = now

    def _retire(self, slot: _Slot) -> None:
        """Take ``slot`` out of service for good: out of routing, drained, stopped, forgotten."""
        if slot.retiring:
            return
        slot.retiring = True
        if slot.process is None:
            self._remove(slot)
            return
        if slot.state == "stopping":
            return  # a liveness restart is stopping it; the retiring flag makes that final
        drain = self._host.drain_s if slot.state == "ready" else 0.0
        slot.state = "stopping"
        slot.ready_since = None
        logger.info("retiring replica %s #%d (pid %d)", self.name, slot.index, slot.process.pid)
        # Out of routing *before* the drain period starts counting.
        self._host.routing_changed()
        self._host.spawn(self._stop(slot, slot.process, drain), f"stop {self.name}#{slot.index}")

    def _restart_unhealthy(self, slot: _Slot) -> None:
        assert slot.process is not None
        serving = slot.state == "ready"
        slot.last_error = slot.liveness_tripped
        slot.crashes += 1
        if not slot.became_ready:
            slot.start_failures += 1
        slot.state = "stopping"
        slot.ready_since = None
        logger.warning(
            "restarting replica %s #%d (pid %d): %s", self.name, slot.index, slot.process.pid, slot.last_error
        )
        if serving:
            self._host.routing_changed()
        self._host.spawn(self._stop(slot, slot.process, 0.0), f"restart {self.name}#{slot.index}")

    async def _stop(self, slot: _Slot, process: ReplicaProcess, drain: float) -> None:
        try:
            if drain > 0:
                await asyncio.sleep(drain)  # requests routed just before the table changed still land
            code = await process.terminate()
        finally:
            # If cancelled (the supervisor is stopping) with the process still alive, leave it in the
            # slot: Supervisor.stop() terminates whatever is left.
            if process.poll() is not None and slot.process is process:
                slot.process = None
                slot.state = "dead"
                if slot.retiring:
                    self._remove(slot)
                else:
                    slot.restart_at = time.monotonic() + restart_delay(slot.crashes)
                self._host.wake()
        outcome = "still running after SIGKILL" if code is None else _describe_exit(code)
        logger.info("stopped replica %s #%d (pid %d, %s)", self.name, slot.index, process.pid, outcome)

    def _remove(self, slot: _Slot) -> None:
        if self._slots.get(slot.index) is slot:
            del self._slots[slot.index]

    def starting(self) -> int:
        """How many of this deployment's replicas are starting (up, not yet ready) now."""
        return sum(1 for slot in self._slots.values() if slot.state == "starting")

    def processes(self) -> list[ReplicaProcess]:
        """Every process this deployment still has (for the supervisor's final stop)."""
        return [slot.process for slot in self._slots.values() if slot.process is not None]

    def withdraw_all(self) -> None:
        """Take every replica out of routing without stopping it (the supervisor is shutting down)."""
        for slot in self._slots.values():
            slot.retiring = True
            if slot.process is not None:
                slot.state = "stopping"

    def forget(self) -> None:
        """Drop all slots (their processes are stopped) and the spec files written for them."""
        self._slots.clear()
        for path, _ in self._spec_files.values():
            path.unlink(missing_ok=True)
        self._spec_files.clear()

    def _forget_unused_spec_files(self, desired: _Desired) -> None:
        in_use = {slot.template for slot in self._slots.values()} | {desired.template}
        for template in [t for t in self._spec_files if t not in in_use]:
            path, _ = self._spec_files.pop(template)
            path.unlink(missing_ok=True)

    # --- probes ------------------------------------------------------------------------------------

    def _launch_probes(self, now: float) -> None:
        for slot in self._slots.values():
            process = slot.process
            if process is None or slot.state not in _RUNNING:
                continue
            if "readiness" not in slot.probing and now >= slot.next_readiness_at:
                slot.next_readiness_at = now + slot.readiness_probe.period
                slot.probing.add("readiness")
                self._host.spawn(self._probe(slot, process, "readiness"), f"readiness {self.name}#{slot.index}")
            if "liveness" not in slot.probing and now >= slot.next_liveness_at:
                slot.next_liveness_at = now + slot.liveness_probe.period
                slot.probing.add("liveness")
                self._host.spawn(self._probe(slot, process, "liveness"), f"liveness {self.name}#{slot.index}")

    async def _probe(self, slot: _Slot, process: ReplicaProcess, kind: str) -> None:
        settings = slot.readiness_probe if kind == "readiness" else slot.liveness_probe
        try:
            result = await self._host.probe(process.url, settings.timeout)
        finally:
            slot.probing.discard(kind)
        if slot.process is not process or slot.state not in _RUNNING:
            return  # restarted or stopped while the probe was out
        if kind == "readiness":
            self._readiness_result(slot, process, result)
        else:
            slot.liveness.record(result.ok)
            if liveness_failed(slot.liveness, settings):
                slot.liveness_tripped = (
                    f"liveness probe failed {slot.liveness.failures} times in a row ({result.detail})"
                )
                self._host.wake()

    def _readiness_result(self, slot: _Slot, process: ReplicaProcess, result: ProbeResult) -> None:
        slot.readiness.record(result.ok)
        if result.ok:
            slot.v2 = (result.v2_url, result.v2_model)
        was_ready = slot.state == "ready"
        ready = readiness_after(was_ready, slot.readiness, slot.readiness_probe)
        if ready and not was_ready:
            slot.state = "ready"
            slot.ready_since = time.monotonic()
            slot.became_ready = True
            slot.start_failures = 0
            logger.info("replica %s #%d (pid %d) is ready at %s", self.name, slot.index, process.pid, process.url)
        elif was_ready and not ready:
            slot.state = "unready"
            slot.ready_since = None
            slot.last_error = f"readiness probe failed {slot.readiness.failures} times in a row ({result.detail})"
            logger.warning("replica %s #%d left routing: %s", self.name, slot.index, slot.last_error)
        else:
            return
        self._host.routing_changed()
        self._host.wake()  # a rollout may move on, the state may become Succeeded

    # --- provisioning state ------------------------------------------------------------------------

    async def _report(self, record: DeploymentRecord, desired: _Desired) -> None:
        current = [s for s in self._slots.values() if s.template == desired.template and not s.retiring]
        failing = [s for s in current if s.start_failures >= START_FAILURE_LIMIT]
        if failing:
            slot = failing[0]
            log_path = paths.replica_log_path(self._host.home, self.endpoint, self.deployment, slot.index)
            reason = (
                f"replica {slot.index} stopped {slot.start_failures} times in a row before becoming ready "
                f"(last: {slot.last_error}); not retrying until the deployment is updated. "
                f"Last lines of {log_path}:\n{read_tail(log_path)}"
            )
            await self._fail(record, reason)
            return
        ready = sum(1 for s in current if s.state == "ready")
        if ready >= desired.count and (record.state != "Succeeded" or record.reason is not None):
            written = await self._host.write_state(record, "Succeeded", None)
            if written is not None:
                self._written = written
                logger.info("deployment %s succeeded: %d ready replica(s)", self.name, ready)

    async def _fail(self, record: DeploymentRecord, reason: str) -> None:
        written = await self._host.write_state(record, "Failed", reason)
        if written is None:
            return  # the deployment changed meanwhile: the next pass judges the new spec
        self._written = written
        # write_state wrote only if nobody changed the deployment since ``record`` was read, so the
        # generation of our own write is the one to wait past.
        self._gate = written.generation
        logger.error("deployment %s failed: %s", self.name, reason)

    # --- views -------------------------------------------------------------------------------------

    def ready_replicas(self) -> tuple[Replica, ...]:
        """The replicas in routing now, by number."""
        return tuple(
            Replica(id=f"{self.name}/{slot.index}", url=slot.process.url, v2_url=slot.v2[0], v2_model=slot.v2[1])
            for _, slot in sorted(self._slots.items())
            if slot.state == "ready" and slot.process is not None
        )

    def statuses(self) -> list[ReplicaStatus]:
        """Every slot of this deployment, by number."""
        home = self._host.home
        return [
            ReplicaStatus(
                endpoint=self.endpoint,
                deployment=self.deployment,
                index=slot.index,
                pid=slot.process.pid if slot.process else None,
                url=slot.process.url if slot.process else None,
                state=slot.state,
                restarts=max(0, slot.starts - 1),
                last_error=slot.last_error,
                generation=slot.generation,
                log_path=paths.replica_log_path(home, self.endpoint, self.deployment, slot.index),
            )
            for _, slot in sorted(self._slots.items())
        ]
