"""The readiness and liveness probes of a deployment's replicas: when each is due, and what its result does.

:func:`launch_probes` runs on every reconcile pass; each probe is a task of its own (through
:meth:`ReconcilerHost.spawn`) that, on the event loop again, records its result in the slot. A readiness
change puts the replica in or out of routing; a failed liveness probe marks the slot for the reconciler's
next pass to restart. The thresholds are :mod:`.policy`'s; the HTTP request is :mod:`.probes`'.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from .logfiles import record_event
from .policy import liveness_failed, probe_due, readiness_after
from .probes import ProbeResult
from .process import ReplicaProcess
from .slots import RUNNING, ReconcilerHost, Slot

__all__ = ["launch_probes"]

logger = logging.getLogger("tiffin.supervisor")


def launch_probes(host: ReconcilerHost, name: str, slots: Iterable[Slot], now: float) -> None:
    """Start the probes that are due on the running ``slots`` of deployment ``name`` (``endpoint/deployment``)."""
    for slot in slots:
        process = slot.process
        if process is None or slot.state not in RUNNING:
            continue
        ready = slot.state == "ready"
        kinds = []
        readiness, liveness = slot.readiness_probe, slot.liveness_probe
        if "readiness" not in slot.probing and probe_due(slot.next_readiness_at, now, readiness.period, ready):
            slot.next_readiness_at = now + readiness.period
            kinds.append("readiness")
        if "liveness" not in slot.probing and probe_due(slot.next_liveness_at, now, liveness.period, ready):
            slot.next_liveness_at = now + liveness.period
            kinds.append("liveness")
        if len(kinds) == 2 and readiness.timeout == liveness.timeout:
            # Both ask the same URL with the same timeout: one request answers both.
            groups = [("readiness", "liveness")]
        else:
            groups = [(kind,) for kind in kinds]
        for group in groups:
            slot.probing.update(group)
            host.spawn(_probe(host, name, slot, process, group), f"{'+'.join(group)} {name}#{slot.index}")


async def _probe(host: ReconcilerHost, name: str, slot: Slot, process: ReplicaProcess, kinds: tuple[str, ...]) -> None:
    timeout = slot.readiness_probe.timeout if kinds[0] == "readiness" else slot.liveness_probe.timeout
    try:
        result = await host.probe(process.url, timeout)
    finally:
        slot.probing.difference_update(kinds)
    if slot.process is not process or slot.state not in RUNNING:
        return  # restarted or stopped while the probe was out
    if "readiness" in kinds:
        _readiness_result(host, name, slot, process, result)
    if "liveness" in kinds:
        slot.liveness.record(result.ok)
        if liveness_failed(slot.liveness, slot.liveness_probe):
            slot.liveness_tripped = f"liveness probe failed {slot.liveness.failures} times in a row ({result.detail})"
            host.wake()


def _readiness_result(
    host: ReconcilerHost, name: str, slot: Slot, process: ReplicaProcess, result: ProbeResult
) -> None:
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
        logger.info("replica %s #%d (pid %d) is ready at %s", name, slot.index, process.pid, process.url)
        _event(host, name, slot, "ReplicaReady", f"pid {process.pid} passed its readiness probe")
    elif was_ready and not ready:
        slot.state = "unready"
        slot.ready_since = None
        slot.last_error = f"readiness probe failed {slot.readiness.failures} times in a row ({result.detail})"
        logger.warning("replica %s #%d left routing: %s", name, slot.index, slot.last_error)
        _event(host, name, slot, "ReplicaUnready", slot.last_error)
    else:
        return
    host.routing_changed()
    host.wake()  # a rollout may move on, the state may become Succeeded


def _event(host: ReconcilerHost, name: str, slot: Slot, event: str, message: str) -> None:
    endpoint, _, deployment = name.partition("/")
    record_event(host.home, endpoint, deployment, event, message, instance=f"{deployment}-{slot.index}")
