"""Reconciling one deployment: its replica slots, rolling updates, restarts and provisioning state.

One :class:`DeploymentReconciler` per deployment owns its slots (:class:`~.slots.Slot`: one replica number
and the process filling it); the :class:`~tiffin.supervisor.Supervisor` calls
:meth:`DeploymentReconciler.reconcile` on every pass and supplies I/O through :class:`~.slots.ReconcilerHost`.
The record is parsed by :mod:`.desired`, the replicas probed by :mod:`.health`. All of it runs on the event
loop: state changes made by probe and stop tasks never race with a pass.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time

from tiffin import paths
from tiffin.errors import SpecError, TiffinError
from tiffin.replica.console import INSTANCE_ENV
from tiffin.routing import Replica
from tiffin.store.records import DeploymentRecord

from .desired import Desired, DesiredSpecs
from .health import launch_probes
from .logfiles import record_event
from .policy import (
    START_FAILURE_LIMIT,
    ProbeCounter,
    SlotView,
    backoff_resets,
    first_liveness_probe_at,
    first_readiness_probe_at,
    lowest_free_indexes,
    plan_rollout,
    restart_delay,
)
from .prepare import prepare_template, replica_command
from .process import ReplicaProcess, log_header, spawn_replica
from .provisioning import Provisioning
from .slots import RUNNING, ReconcilerHost, ReplicaStatus, Slot, describe_exit

__all__ = ["DeploymentReconciler"]

logger = logging.getLogger("tiffin.supervisor")

# While a replica starts, its log is checked this often for the 'ready' line: slowly when its ready pipe
# is watched (that wakes the supervisor at once), often when it could not be.
_READY_LINE_POLL_S = 0.1
_READY_LINE_FALLBACK_POLL_S = 1.0


class DeploymentReconciler:
    """Makes the replica processes of one deployment match its record in the store."""

    def __init__(self, endpoint: str, deployment: str, host: ReconcilerHost, number: int = 0) -> None:
        self.endpoint = endpoint
        self.deployment = deployment
        self.number = number  # names its replicas' sockets: short, and unique in the supervisor
        self._host = host
        self._slots: dict[int, Slot] = {}
        self._state = Provisioning(host, endpoint, deployment, self._event)
        self._record_id: str | None = None
        self._dir = paths.deployment_dir(host.home, endpoint, deployment)
        self._specs = DesiredSpecs(self._dir)
        self._preparing: str | None = None  # the template being prepared (plan, environment), if any
        self._seen: tuple[int, int] | None = None  # (generation, instance count) last seen: events on change
        # (generation, count) the autoscaler (tiffin.autoscale) asks for; applies while the record is at it.
        self.scaled: tuple[int, int] | None = None

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
            self._specs.forget_parsed()
            self._state.reset()
            self._seen = None
            if record.state in ("Creating", "Updating"):  # not a deployment this server found on its start
                self._event("DeploymentCreated", f"generation {record.generation}")
        record = self._state.newest(record)
        gated = self._state.gated(record)
        if self._state.gate is not None and not gated:
            self._lift_gate(now)
        try:
            desired = self._specs.desired(record, self.name, self._host.max_instances, self._host.inline_assets)
        except SpecError as exc:
            if not gated:
                await self._state.fail(record, f"the deployment's spec is invalid: {exc}")
            return
        self._note_changes(record, desired)  # the spec's instance_count: the autoscaler's counts have Scaled events
        if self.scaled is not None and self.scaled[0] == record.generation:
            desired = dataclasses.replace(desired, count=self.scaled[1])
        if self._specs.launch(desired.template) is None:
            # Its plan and environment first (a thread; an environment may take a while to build): the replicas
            # of the current template keep serving meanwhile, and a failed build fails the deployment at once.
            if not gated and self._preparing is None:
                self._preparing = desired.template
                self._host.spawn(self._prepare(record, desired.template), f"prepare {self.name}")
            self._restart_due(now, desired, gated)
            launch_probes(self._host, self.name, self._slots.values(), now)
            return
        views = [SlotView(s.index, s.template, s.state == "ready") for s in self._slots.values() if not s.retiring]
        plan = plan_rollout(views, desired.template, desired.count, gated)
        for index in plan.retire:
            self._retire(self._slots[index])
        for index in lowest_free_indexes(self._slots, plan.start):
            self._add_slot(index, desired, now)
        self._restart_due(now, desired, gated)
        launch_probes(self._host, self.name, self._slots.values(), now)
        self._specs.forget_unused({slot.template for slot in self._slots.values()} | {desired.template})
        if not gated:
            current = [s for s in self._slots.values() if s.template == desired.template and not s.retiring]
            await self._state.report(record, current, desired.count)

    def _event(self, name: str, message: str, slot: Slot | None = None) -> None:
        instance = None if slot is None else f"{self.deployment}-{slot.index}"
        record_event(self._host.home, self.endpoint, self.deployment, name, message, instance=instance)

    def _note_changes(self, record: DeploymentRecord, desired: Desired) -> None:
        seen, self._seen = self._seen, (record.generation, desired.count)
        if seen is not None and record.generation > seen[0]:
            self._event("DeploymentUpdated", f"generation {record.generation}")
        if seen is not None and desired.count != seen[1]:
            self._event("InstancesChanged", f"instance_count {seen[1]} -> {desired.count}")

    def next_due(self, now: float) -> float:
        """The monotonic time at which this deployment next needs a pass (inf: only on events)."""
        due = math.inf
        for slot in self._slots.values():
            # A pending slot waits for a start to finish elsewhere; that wakes the supervisor.
            if slot.state == "dead" and slot.restart_at is not None:
                due = min(due, slot.restart_at)
            if slot.state in RUNNING:
                if "readiness" not in slot.probing:
                    due = min(due, slot.next_readiness_at)
                if "liveness" not in slot.probing:
                    due = min(due, slot.next_liveness_at)
                if slot.state == "starting" and slot.ready_line_at is None:
                    watched = slot.process is not None and slot.process.ready_pipe is not None
                    due = min(due, now + (_READY_LINE_FALLBACK_POLL_S if watched else _READY_LINE_POLL_S))
        return due

    # --- observing processes -----------------------------------------------------------------------

    def _observe(self, now: float) -> None:
        for slot in list(self._slots.values()):
            self._observe_slot(slot, now)

    def _observe_slot(self, slot: Slot, now: float) -> None:
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

    def _on_process_event(self, slot: Slot, process: ReplicaProcess) -> None:
        # Called the moment the process exits (pidfd: out of routing at once) or reports on its ready pipe
        # (its first readiness probe goes now, not on the next look at its log).
        if slot.process is process and slot.state != "stopping":
            self._observe_slot(slot, time.monotonic())
            self._host.wake()

    def _exited(self, slot: Slot, process: ReplicaProcess, code: int, now: float) -> None:
        process.release()
        serving = slot.state == "ready"
        slot.process = None
        slot.state = "dead"
        slot.ready_since = None
        slot.last_error = describe_exit(code)
        slot.crashes += 1
        if not slot.became_ready:
            slot.start_failures += 1
        if slot.retiring:
            self._remove(slot)
            self._event("ReplicaFailed", f"{slot.last_error} while stopping (pid {process.pid})", slot)
        elif slot.start_failures >= START_FAILURE_LIMIT:
            self._event("ReplicaFailed", f"{slot.last_error} before becoming ready; not restarted", slot)
            # Not restarted: Provisioning.report marks the deployment Failed; an update lifts that (_lift_gate).
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
            self._event(
                "ReplicaFailed",
                f"{slot.last_error} (pid {process.pid}); restarting in {slot.restart_at - now:g}s",
                slot,
            )
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

    # --- preparing a template ----------------------------------------------------------------------

    async def _prepare(self, record: DeploymentRecord, template: str) -> None:
        """Write the template's replica plan and build its environment (in a thread); a failure fails the
        deployment with what went wrong (uv's own message for a build), without starting a replica."""
        host = self._host
        spec_path, _ = self._specs.spec_file(template)
        log_path = paths.environment_log_path(host.home, self.endpoint, self.deployment)
        try:
            launch = await asyncio.to_thread(
                prepare_template,
                spec_path,
                name=self.deployment,
                home=host.home,
                python=host.python,
                log_path=log_path,
                environ=host.env,
            )
        except TiffinError as exc:
            self._event("EnvironmentFailed", exc.message)
            await self._state.fail(record, f"the deployment's environment could not be prepared: {exc.message}")
        except Exception as exc:  # a bug or an I/O error: reported, never a supervisor crash
            logger.exception("preparing deployment %s failed", self.name)
            self._event("EnvironmentFailed", f"{type(exc).__name__}: {exc}")
            await self._state.fail(record, f"the deployment could not be prepared: {type(exc).__name__}: {exc}")
        else:
            self._specs.set_launch(template, launch)
            built = "tiffin's own Python" if launch.environment is None else f"its environment ({launch.python})"
            self._event("EnvironmentReady", f"replicas of generation {record.generation} run on {built}")
        finally:
            self._preparing = None
            host.wake()

    # --- starting, stopping ------------------------------------------------------------------------

    def _add_slot(self, index: int, desired: Desired, now: float) -> None:
        _, generation = self._specs.spec_file(desired.template)
        launch = self._specs.launch(desired.template)
        assert launch is not None, "slots of a template start once it is prepared"
        slot = Slot(
            index=index,
            template=desired.template,
            generation=generation,
            launch=launch,
            readiness_probe=desired.readiness,
            liveness_probe=desired.liveness,
        )
        self._slots[index] = slot
        self._start(slot, now)

    def _start(self, slot: Slot, now: float) -> None:
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
                replica_command(slot.launch.python, slot.launch.plan, socket),
                socket=socket,
                log_path=log_path,
                header=lambda pid: log_header(slot.index, slot.generation, pid),
                env={**slot.launch.env(host.env), INSTANCE_ENV: f"{self.deployment}-{slot.index}"},
                cwd=self._dir,
                pidfile=self._dir / f"replica-{slot.index}.pid",
            )
        except OSError as exc:  # the Python is missing, out of file descriptors…: a failed start
            logger.exception("could not start replica %s #%d", self.name, slot.index)
            slot.last_error = f"could not start: {exc}"
            self._event("ReplicaFailed", slot.last_error, slot)
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
        loop = asyncio.get_running_loop()
        process.watch_exit(loop, lambda: self._on_process_event(slot, process))
        process.watch_ready(loop, lambda: self._on_process_event(slot, process))
        self._event("ReplicaStarted", f"pid {process.pid}, generation {slot.generation}, start {slot.starts}", slot)
        logger.info(
            "started replica %s #%d (generation %d) pid %d on %s",
            self.name,
            slot.index,
            slot.generation,
            process.pid,
            process.url,
        )

    def _restart_due(self, now: float, desired: Desired, gated: bool) -> None:
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
        self._state.gate = None
        for slot in self._slots.values():
            slot.start_failures = 0
            slot.crashes = 0
            if slot.state == "dead":
                slot.restart_at = now

    def _retire(self, slot: Slot) -> None:
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

    def _restart_unhealthy(self, slot: Slot) -> None:
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
        self._event("ReplicaRestarting", f"{slot.last_error} (pid {slot.process.pid})", slot)
        if serving:
            self._host.routing_changed()
        self._host.spawn(self._stop(slot, slot.process, 0.0), f"restart {self.name}#{slot.index}")

    async def _stop(self, slot: Slot, process: ReplicaProcess, drain: float) -> None:
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
        outcome = "still running after SIGKILL" if code is None else describe_exit(code)
        self._event("ReplicaStopped", f"pid {process.pid} {outcome}", slot)
        logger.info("stopped replica %s #%d (pid %d, %s)", self.name, slot.index, process.pid, outcome)

    def _remove(self, slot: Slot) -> None:
        if self._slots.get(slot.index) is slot:
            del self._slots[slot.index]

    def target(self) -> int | None:
        """How many replicas of the current spec this deployment keeps now; None until its ``instance_count``
        have been ready (the autoscaler leaves a deployment alone while it is created or updated: a slow start
        must not be scaled away, to zero even, before it ever served)."""
        desired = self._specs.current()
        if desired is None or self._state.ready_generation != desired.generation:
            return None
        scaled = self.scaled
        return scaled[1] if scaled is not None and scaled[0] == desired.generation else desired.count

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
        self._specs.forget()

    # --- views -------------------------------------------------------------------------------------

    def ready_replicas(self) -> tuple[Replica, ...]:
        """The replicas in routing now, by number."""
        return tuple(
            Replica(id=f"{self.name}/{slot.index}", url=slot.process.url, v2_url=slot.v2[0], v2_model=slot.v2[1])
            for _, slot in sorted(self._slots.items())
            if slot.state == "ready" and slot.process is not None
        )

    def replacing(self) -> bool:
        """Whether a replica of it is on its way to ready (starting, or due to restart), or the autoscaler keeps
        it at zero: the gateway then queues requests for up to max_queue_wait_ms instead of answering 503 at
        once (at zero, a queued request counts as in flight, so the autoscaler starts a replica for it)."""
        scaled_to_zero = self.scaled is not None and self.target() == 0  # instance_count is at least 1
        return scaled_to_zero or any(
            not s.retiring and (s.state != "dead" or s.restart_at is not None)
            for s in self._slots.values()
            if s.state != "ready"
        )

    def statuses(self) -> list[ReplicaStatus]:
        """Every slot of this deployment, by number."""
        return [slot.status(self.endpoint, self.deployment, self._host.home) for _, slot in sorted(self._slots.items())]
