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

from .policy import liveness_failed, readiness_after
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
        if "readiness" not in slot.probing and now >= slot.next_readiness_at:
            slot.next_readiness_at = now + slot.readiness_probe.period
            slot.probing.add("readiness")
            host.spawn(_probe(host, name, slot, process, "readiness"), f"readiness {name}#{slot.index}")
        if "liveness" not in slot.probing and now >= slot.next_liveness_at:
            slot.next_liveness_at = now + slot.liveness_probe.period
            slot.probing.add("liveness")
            host.spawn(_probe(host, name, slot, process, "liveness"), f"liveness {name}#{slot.index}")


async def _probe(host: ReconcilerHost, name: str, slot: Slot, process: ReplicaProcess, kind: str) -> None:
    settings = slot.readiness_probe if kind == "readiness" else slot.liveness_probe
    try:
        result = await host.probe(process.url, settings.timeout)
    finally:
        slot.probing.discard(kind)
    if slot.process is not process or slot.state not in RUNNING:
        return  # restarted or stopped while the probe was out
    if kind == "readiness":
        _readiness_result(host, name, slot, process, result)
    else:
        slot.liveness.record(result.ok)
        if liveness_failed(slot.liveness, settings):
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
    elif was_ready and not ready:
        slot.state = "unready"
        slot.ready_since = None
        slot.last_error = f"readiness probe failed {slot.readiness.failures} times in a row ({result.detail})"
        logger.warning("replica %s #%d left routing: %s", name, slot.index, slot.last_error)
    else:
        return
    host.routing_changed()
    host.wake()  # a rollout may move on, the state may become Succeeded
