"""Counters the gateway keeps per endpoint: requests and statuses per deployment, mirror outcomes.

Cheap enough for the hot path (integer increments); latencies are kept for mirror copies only, in a
bounded window, since those are what a user watches while trying a new deployment on shadow traffic.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EndpointStats"]

_WINDOW = 2048


@dataclass
class _Mirror:
    sent: int = 0
    dropped: int = 0
    """Copies not sent because the mirror deployment was at capacity or had no ready replica."""
    errors: int = 0
    """Copies that got no HTTP answer (connection failure, timeout)."""
    statuses: Counter[int] = field(default_factory=Counter)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))


@dataclass
class EndpointStats:
    """Counters of one endpoint since the gateway started."""

    requests: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    rejected: Counter[int] = field(default_factory=Counter)
    """Requests answered by the gateway itself (401, 404, 408, 413, 429, 503...), by status."""
    mirror: dict[str, _Mirror] = field(default_factory=dict)

    def answered(self, deployment: str, status: int) -> None:
        """Count one response of ``deployment``."""
        self.requests[deployment] += 1
        counter = self.statuses.get(deployment)
        if counter is None:
            counter = self.statuses[deployment] = Counter()
        counter[status] += 1

    def mirror_of(self, deployment: str) -> _Mirror:
        """The mirror counters of ``deployment`` (created on first use)."""
        found = self.mirror.get(deployment)
        if found is None:
            found = self.mirror[deployment] = _Mirror()
        return found

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view, with mirror latency percentiles over the last copies."""
        mirror = {}
        for name, m in self.mirror.items():
            ordered = sorted(m.latencies_ms)
            mirror[name] = {
                "sent": m.sent,
                "completed": sum(m.statuses.values()),
                "errors": m.errors,
                "dropped": m.dropped,
                "statuses": {str(k): v for k, v in sorted(m.statuses.items())},
                "latency_ms": {
                    "p50": _percentile(ordered, 0.50),
                    "p99": _percentile(ordered, 0.99),
                    "max": ordered[-1] if ordered else None,
                    "window": len(ordered),
                },
            }
        return {
            "requests": dict(self.requests),
            "statuses": {d: {str(k): v for k, v in sorted(c.items())} for d, c in self.statuses.items()},
            "rejected": {str(k): v for k, v in sorted(self.rejected.items())},
            "mirror": mirror,
        }


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)
