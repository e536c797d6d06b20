"""Per-deployment meters the gateway updates on its hot path: plain integers and lists, no locks.

The gateway runs on one event loop, so a request's record is a handful of integer increments on objects
made when the routing table changes (:meth:`Meters.sync`), never a label lookup. Prometheus reads them
at scrape time through :class:`tiffin.telemetry.metrics.TiffinCollector` (on the same loop); the stats
REST API reads the recent window for latency percentiles and req/s.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from typing import Any

__all__ = ["LATENCY_BUCKETS_S", "DeploymentMeter", "Meters", "ensure_meters", "percentile_ms", "window_stats"]

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
"""Upper bounds of the request-latency, queue-wait and mirror-latency histograms (seconds; +Inf added)."""

_RECENT = 4096
"""Requests kept per deployment for the stats API's percentiles and req/s (and their window)."""
WINDOW_S = 60.0
"""The stats API's recent window: latency percentiles and req/s over the last minute (at most _RECENT)."""


class DeploymentMeter:
    """The counters of one deployment (or, with deployment ``""``, of requests refused before one was chosen)."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "deployment",
        "endpoint",
        "latency",
        "latency_sum",
        "mirror_dropped",
        "mirror_failed",
        "mirror_latency",
        "mirror_latency_sum",
        "mirror_sent",
        "queue",
        "queue_sum",
        "recent",
        "statuses",
    )

    def __init__(self, endpoint: str, deployment: str) -> None:
        self.endpoint = endpoint
        self.deployment = deployment
        self.statuses: dict[int, int] = {}
        self.latency = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum = 0.0
        self.queue = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.queue_sum = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.mirror_sent = 0
        self.mirror_failed = 0
        self.mirror_dropped = 0
        self.mirror_latency = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.mirror_latency_sum = 0.0
        self.recent: deque[tuple[float, float]] = deque(maxlen=_RECENT)

    def answered(self, status: int, started: float, elapsed: float, bytes_in: int, bytes_out: int) -> None:
        """One request done (any status): a few increments and one append."""
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1
        self.latency[bisect_left(LATENCY_BUCKETS_S, elapsed)] += 1
        self.latency_sum += elapsed
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        self.recent.append((started, elapsed))

    def waited(self, seconds: float) -> None:
        """Time a request spent in the deployment's admission queue (0 when a slot was free)."""
        self.queue[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.queue_sum += seconds

    def mirrored(self, seconds: float | None) -> None:
        """A mirror copy answered after ``seconds``, or (None) got no answer."""
        if seconds is None:
            self.mirror_failed += 1
            return
        self.mirror_latency[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.mirror_latency_sum += seconds

    def window(self, now: float | None = None) -> dict[str, Any]:
        """Latency P50/P90/P99 (ms) and req/s over the last :data:`WINDOW_S` seconds."""
        return window_stats(self.recent, time.perf_counter() if now is None else now)


def window_stats(recent: Iterable[tuple[float, float]], now: float) -> dict[str, Any]:
    """Percentiles and rate of the (start, seconds) pairs that started within the window before ``now``."""
    since = now - WINDOW_S
    pairs = [(t, s) for t, s in recent if t >= since]
    latencies = sorted(s for _, s in pairs)
    span = min(WINDOW_S, now - pairs[0][0]) if pairs else 0.0
    return {
        "window_s": round(span, 3),
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / span, 3) if span > 0.5 else None,
        "latency_ms": {q: percentile_ms(latencies, p) for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))},
    }


def percentile_ms(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of sorted seconds, in milliseconds; None for none (the stats API's and
    the autoscaler's RequestLatency_P50.._P99)."""
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


class Meters:
    """Every deployment's meter, by (endpoint, deployment); made and dropped as the routing table changes."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str], DeploymentMeter] = {}
        self.unknown_endpoint = 0
        """Requests to an endpoint that does not exist (its name is the caller's text: never a label)."""

    def sync(self, names: Iterable[tuple[str, str]]) -> None:
        """Make a meter for each (endpoint, deployment) of the new table and for each endpoint's refusals;
        drop those of deployments gone (their series disappear from /metrics, as Prometheus expects)."""
        wanted: set[tuple[str, str]] = set()
        for endpoint, deployment in names:
            wanted.add((endpoint, deployment))
            wanted.add((endpoint, ""))
        for key in wanted - self.by_key.keys():
            self.by_key[key] = DeploymentMeter(*key)
        for key in self.by_key.keys() - wanted:
            del self.by_key[key]

    def get(self, endpoint: str, deployment: str) -> DeploymentMeter:
        """The meter of a deployment, made on first use (a peer route may serve one before this table has it)."""
        meter = self.by_key.get((endpoint, deployment))
        if meter is None:
            meter = self.by_key[(endpoint, deployment)] = DeploymentMeter(endpoint, deployment)
        return meter


def ensure_meters(gateway: Any) -> Meters:
    """The gateway's meters, made now if the server started without them (``TIFFIN_METRICS=0``).

    An autoscale rule on a request metric and a rollout's guards read them: they must not silently see nothing
    because /metrics is off (it stays off; the stats API's ``recent`` comes back). The statuses the gateway
    counted meanwhile (``gateway.stats``) are carried over, so counts read before and after go on from where
    they were instead of dropping to zero.
    """
    if gateway.meters is None:
        meters = Meters()
        meters.sync((e.name, d) for e in gateway.table.endpoints.values() for d in e.deployments)
        for name, counted in gateway.stats.items():
            for deployment, statuses in counted.statuses.items():
                meters.get(name, deployment).statuses.update(statuses)
        gateway.meters = meters
    return gateway.meters
