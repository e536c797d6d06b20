"""What the autoscaler samples: CPU and memory per replica process (from /proc), requests in flight (the gateway's
admission) and the gateway's per-deployment request meters.

CPU is a percentage of one core, as Kubernetes' and Azure's ``CpuUtilizationPercentage`` count it for an
instance: 100 means a replica kept one core busy over the interval. Memory (``CpuMemoryUtilizationPercentage``)
is the replica's resident memory as a percentage of the machine's.
"""

from __future__ import annotations

from typing import Any

from tiffin.procfs import memory_total, process_stat, rss_bytes
from tiffin.telemetry.meters import DeploymentMeter, ensure_meters

__all__ = ["CpuMeter", "EndpointMeter", "load_area", "memory_percent", "memory_total", "request_meter"]


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` and of its children it waited for; None if it is gone."""
    stat = process_stat(pid)
    return None if stat is None else stat.cpu_s + stat.children_cpu_s


class CpuMeter:
    """CPU use of processes between two calls of :meth:`percent`, per pid."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, float]] = {}  # pid -> (monotonic time, CPU seconds)

    def percent(self, pid: int, now: float) -> float | None:
        """CPU % of one core used by ``pid`` since the last call for it (None on the first call, or if gone)."""
        seconds = _cpu_seconds(pid)
        if seconds is None:
            self._last.pop(pid, None)
            return None
        last, self._last[pid] = self._last.get(pid), (now, seconds)
        if last is None or now <= last[0]:
            return None
        return max(0.0, 100.0 * (seconds - last[1]) / (now - last[0]))

    def forget_except(self, pids: set[int]) -> None:
        """Drop what is kept about processes not in ``pids`` (stopped replicas)."""
        for pid in [p for p in self._last if p not in pids]:
            del self._last[pid]


def load_area(gateway: Any, endpoint: str, deployment: str) -> float | None:
    """Requests of ``endpoint``/``deployment`` in flight or queued at the gateway, integrated over time
    (request-seconds; :meth:`tiffin.gateway.limits.Admission.load_area`); None: never routed."""
    admission = getattr(gateway, "_admissions", {}).get((endpoint, deployment))
    return None if admission is None else admission.load_area()


def memory_percent(pid: int, total: int) -> float | None:
    """Resident memory of ``pid`` as a percentage of ``total`` bytes; None if it is gone (or total unknown)."""
    rss = rss_bytes(pid) if total > 0 else None
    return None if rss is None else 100.0 * rss / total


class EndpointMeter:
    """An endpoint's requests read as one meter: the sums of its deployments' meters (and of its refusals), read
    afresh on each access, so deployments added or removed count from then on. For rules on an endpoint's
    RequestLatency* and RequestsPerMinute (Azure's endpoint metrics)."""

    def __init__(self, gateway: Any, endpoint: str) -> None:
        self._gateway, self._endpoint = gateway, endpoint

    def _meters(self) -> list[DeploymentMeter]:
        meters = self._gateway.meters
        by_key = meters.by_key if meters is not None else {}
        return [meter for (endpoint, _), meter in list(by_key.items()) if endpoint == self._endpoint]

    @property
    def statuses(self) -> dict[int, int]:
        total: dict[int, int] = {}
        for meter in self._meters():
            for status, count in meter.statuses.items():
                total[status] = total.get(status, 0) + count
        return total

    @property
    def latency_sum(self) -> float:
        return sum(meter.latency_sum for meter in self._meters())

    @property
    def recent(self) -> list[tuple[float, float]]:
        return [pair for meter in self._meters() for pair in list(meter.recent)]


def request_meter(gateway: Any, endpoint: str, deployment: str | None) -> DeploymentMeter | EndpointMeter:
    """The gateway's meter of ``endpoint``/``deployment`` (requests answered, latency), for rules on
    RequestLatency* and RequestsPerMinute; with ``deployment`` None, the endpoint's (:class:`EndpointMeter`).

    With ``TIFFIN_METRICS=0`` the gateway starts without meters; a rule that needs them turns them on (from then
    the stats API's ``recent`` is back too; /metrics stays off): a latency rule must not silently never fire.
    """
    meters = ensure_meters(gateway)
    if deployment is None:
        return EndpointMeter(gateway, endpoint)
    return meters.get(endpoint, deployment)
