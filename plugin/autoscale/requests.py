"""Request metrics of Azure Monitor autoscale rules, from the gateway's per-deployment meters.

The gateway already counts every request a deployment answers (:class:`tiffin.telemetry.meters.DeploymentMeter`:
statuses, ``latency_sum``, and the last 4096 requests in ``recent``). Rules average over windows of up to an
hour, longer than ``recent`` holds, so the engine samples the meter each second: :class:`RequestSamples` keeps the
deltas (requests answered, their latency sum, the seconds covered) and computes from them:

* ``RequestsPerMinute``: ``avg`` requests answered per minute over the window; ``min``/``max`` over one-minute
  grains (Azure's ``timeGrain`` PT1M; the whole window when it is shorter); ``total`` the requests in the window;
* ``RequestLatency`` (milliseconds): ``avg`` the mean time to answer of the window's requests; ``min``/``max``
  the lowest/highest mean of a grain that had requests; ``total`` the sum of their times (Azure's "sum of all
  values"). No request in the window: no data (the rule does not fire).

``RequestLatency_P50`` .. ``_P99`` are percentiles of the requests that started within the window, from
``recent`` (so over at most the last 4096); every aggregation gives that percentile.

Pure apart from reading the meter it is handed: no clock (the engine passes ``now``), no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Protocol

from tiffin.telemetry.meters import percentile_ms

__all__ = ["GRAIN_S", "PERCENTILES", "RequestSamples", "latency_percentile"]

GRAIN_S = 60.0
"""Azure's time grain for min/max (one minute), or the window when that is shorter."""

PERCENTILES: dict[str, float] = {
    "RequestLatency_P50": 0.5,
    "RequestLatency_P90": 0.9,
    "RequestLatency_P95": 0.95,
    "RequestLatency_P99": 0.99,
}


class Meter(Protocol):
    """What is read of a meter: a deployment's (:class:`tiffin.telemetry.meters.DeploymentMeter`) or an endpoint's
    (:class:`tiffin.autoscale.readings.EndpointMeter`)."""

    @property
    def statuses(self) -> Mapping[int, int]: ...
    @property
    def latency_sum(self) -> float: ...
    @property
    def recent(self) -> Iterable[tuple[float, float]]: ...


class RequestSamples:
    """Per-sample deltas of one deployment's meter: (time, seconds covered, requests answered, latency seconds)."""

    def __init__(self, keep_s: float) -> None:
        self._keep = keep_s
        self._samples: deque[tuple[float, float, int, float]] = deque()
        self.meter: Meter | None = None
        """The meter last read (its ``recent`` gives the percentiles)."""
        self._base: tuple[float, int, float] | None = None  # (time, requests, latency sum) of the last read

    def sample(self, now: float, meter: Meter) -> None:
        """Read ``meter``'s totals; the first read (or one of a new meter object) only sets the baseline."""
        requests, latency = sum(meter.statuses.values()), meter.latency_sum
        base, same = self._base, meter is self.meter
        self.meter, self._base = meter, (now, requests, latency)
        if base is None or not same or now <= base[0] or requests < base[1]:
            return
        self.add(now, now - base[0], requests - base[1], latency - base[2])

    def add(self, now: float, span_s: float, requests: int, latency_s: float) -> None:
        """One delta: ``requests`` answered in the ``span_s`` seconds before ``now``, taking ``latency_s`` in all."""
        self._samples.append((now, span_s, requests, latency_s))
        while self._samples and self._samples[0][0] < now - self._keep:
            self._samples.popleft()

    def _grains(self, now: float, window_s: float) -> list[tuple[float, int, float]]:
        """(seconds covered, requests, latency seconds) per grain of the window, newest first; grains with no
        sample are left out."""
        grain = min(GRAIN_S, window_s)
        grains: dict[int, list[float]] = {}
        for t, span, requests, latency in self._samples:
            if t > now - window_s:
                acc = grains.setdefault(min(int((now - t) // grain), int(window_s // grain)), [0.0, 0, 0.0])
                acc[0] += span
                acc[1] += requests
                acc[2] += latency
        return [(acc[0], int(acc[1]), acc[2]) for _, acc in sorted(grains.items())]

    def per_minute(self, now: float, window_s: float, aggregation: str) -> float | None:
        """``RequestsPerMinute`` over the window (None before a first delta in it)."""
        grains = self._grains(now, window_s)
        covered = min(window_s, sum(g[0] for g in grains))
        if covered <= 0:
            return None
        count = sum(g[1] for g in grains)
        if aggregation == "total":
            return float(count)
        if aggregation in ("min", "max"):
            rates = [60.0 * requests / span for span, requests, _ in grains if span > 0]
            return min(rates) if aggregation == "min" else max(rates)
        return 60.0 * count / covered

    def latency_ms(self, now: float, window_s: float, aggregation: str) -> float | None:
        """``RequestLatency`` over the window in milliseconds (None without a request answered in it)."""
        grains = [g for g in self._grains(now, window_s) if g[1] > 0]
        if not grains:
            return None
        if aggregation == "total":
            return 1000.0 * sum(g[2] for g in grains)
        if aggregation in ("min", "max"):
            means = [1000.0 * latency / requests for _, requests, latency in grains]
            return min(means) if aggregation == "min" else max(means)
        return 1000.0 * sum(g[2] for g in grains) / sum(g[1] for g in grains)


def latency_percentile(recent: Iterable[tuple[float, float]], now: float, window_s: float, q: float) -> float | None:
    """The ``q`` percentile (milliseconds) of the (start, seconds) pairs that started within the window before
    ``now`` (the meter's clock: ``time.perf_counter``); None without any."""
    since = now - window_s
    return percentile_ms(sorted(s for t, s in recent if t >= since), q)
