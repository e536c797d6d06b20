"""How many instances a deployment should run: pure decisions from readings, the current count and the bounds.

Two policies, one per ``scale_settings`` type (docs/autoscale.md):

* :func:`target_utilization` (Azure's Kubernetes ``target_utilization``): ``ceil(current * cpu / target)``,
  as Kubernetes' HorizontalPodAutoscaler computes it, with its 10 % tolerance and a scale-down
  stabilisation (the highest recommendation of the last window wins, so a dip does not scale in).
* :class:`ConcurrencyPolicy` (``target_concurrency``, as Knative's KPA): desired from the average number of
  requests in flight over a stable window (60 s), or over a short panic window (6 s) when that asks for at
  least ``panic_threshold_percentage`` of the current instances; in panic it never scales in. Scale-up
  and scale-down delays keep a recommendation from acting before it has held that long.

No clock and no I/O here: the engine (:mod:`.engine`) passes the time and the readings in.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ConcurrencyPolicy", "Decision", "Readings", "bounded", "target_utilization"]

# Kubernetes' HPA: within 10 % of the target, nothing changes (no flapping around the target).
TOLERANCE = 0.1


@dataclass(frozen=True, slots=True)
class Decision:
    """The desired instance count and why (the event log's reason)."""

    desired: int
    reason: str
    recommended: int | None = None
    """target_utilization's count before stabilisation (what the stabilisation window keeps), if any."""


def bounded(count: int, min_instances: int, max_instances: int) -> int:
    """``count`` within ``[min_instances, max_instances]``."""
    return max(min_instances, min(max_instances, count))


class Readings:
    """Timestamped samples of one number (requests in flight, CPU %), kept for the longest window asked."""

    def __init__(self, keep_s: float) -> None:
        self._keep = keep_s
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, now: float, value: float) -> None:
        self._samples.append((now, value))
        while self._samples and self._samples[0][0] < now - self._keep:
            self._samples.popleft()

    def average(self, now: float, window_s: float) -> float | None:
        """The mean of the samples of the last ``window_s`` seconds; None without any."""
        values = self.values(now, window_s)
        return sum(values) / len(values) if values else None

    def values(self, now: float, window_s: float) -> list[float]:
        """The samples of the last ``window_s`` seconds, oldest first."""
        return [v for t, v in self._samples if t > now - window_s]


def target_utilization(
    current: int,
    cpu_percent: float | None,
    target_percent: float,
    min_instances: int,
    max_instances: int,
    recent: Iterable[int] = (),
) -> Decision:
    """Azure's (Kubernetes') target utilisation: ``cpu_percent`` is the average CPU per instance (100 = a core).

    ``recent``: the raw recommendations of the scale-down stabilisation window; scaling in goes no lower
    than the highest of them. Never below 1 instance, whatever ``min_instances`` says: with no replica there
    is no CPU to measure, so nothing would bring one back (Kubernetes' HPA requires minReplicas >= 1 for the
    same reason; scaling to zero is target_concurrency's).
    """
    min_instances = max(1, min_instances)
    if cpu_percent is None or current == 0:
        desired = bounded(max(current, min_instances), min_instances, max_instances)
        return Decision(desired, f"no CPU reading yet; {desired} instance(s) within [{min_instances}, {max_instances}]")
    ratio = cpu_percent / target_percent
    raw = current if abs(ratio - 1) <= TOLERANCE else math.ceil(current * ratio)
    desired = bounded(raw, min_instances, max_instances)
    why = f"CPU {cpu_percent:.0f}% per instance, target {target_percent:g}%: ceil({current} * {ratio:.2f}) = {raw}"
    if desired < current:
        held = bounded(max([desired, *recent]), min_instances, max_instances)
        if held > desired:
            kept = min(held, current)
            return Decision(kept, f"{why}; held at {kept} by scale-down stabilisation", recommended=desired)
    if desired != raw:
        why += f", bounded to [{min_instances}, {max_instances}]"
    return Decision(desired, why, recommended=desired)


class ConcurrencyPolicy:
    """Knative KPA-style decisions for one deployment; keeps the little state it needs (panic, delays)."""

    def __init__(
        self,
        target: float,
        min_instances: int,
        max_instances: int,
        *,
        stable_window_s: float = 60.0,
        panic_window_s: float = 6.0,
        panic_threshold_percentage: float = 200.0,
        scale_up_delay_s: float = 0.0,
        scale_down_delay_s: float = 30.0,
    ) -> None:
        self.target = target
        self.bounds = (min_instances, max_instances)
        self.stable_window_s = stable_window_s
        self.panic_window_s = panic_window_s
        self.panic_threshold = panic_threshold_percentage / 100
        self.up_delay = scale_up_delay_s
        self.down_delay = scale_down_delay_s
        self.panic_since: float | None = None
        self._first: float | None = None  # the first decision: readings exist since about then
        self._recommended = Readings(max(scale_up_delay_s, scale_down_delay_s, 1.0))

    def decide(self, now: float, current: int, stable_avg: float | None, panic_avg: float | None) -> Decision:
        """The desired count at ``now`` from the averages of requests in flight (None: no samples yet)."""
        lo, hi = self.bounds
        if self._first is None:
            self._first = now
        if stable_avg is None:
            desired = bounded(current, lo, hi)
            return Decision(desired, "no in-flight readings yet")
        stable = math.ceil(stable_avg / self.target)
        panic = math.ceil((panic_avg if panic_avg is not None else stable_avg) / self.target)
        # Knative: panic when the short window asks for panic_threshold times what runs now.
        # panic_since: the last time the panic condition held; panic ends a stable window after it.
        if (current > 0 and panic / current >= self.panic_threshold) or (current == 0 and panic > 0):
            self.panic_since = now
        elif self.panic_since is not None and now - self.panic_since >= self.stable_window_s:
            self.panic_since = None
        if self.panic_since is not None:
            raw = max(panic, current)  # never scale in while panicking
            why = f"panic: {panic_avg or 0:.1f} in flight over {self.panic_window_s:g}s, target {self.target:g} each"
        else:
            raw = stable
            why = f"{stable_avg:.1f} in flight over {self.stable_window_s:g}s, target {self.target:g} each"
        raw = bounded(raw, lo, hi)
        why += f": {raw}"
        if raw == 0 and current > 0 and now - self._first < self.stable_window_s:
            # An average of 0 proves no request came only once the readings span a whole stable window (as
            # Knative: scale to zero after a stable window without traffic); a new deployment has less.
            raw = 1
            why += f"; to 0 only after a full stable window ({self.stable_window_s:g}s) without requests: 1"
        self._recommended.add(now, raw)
        desired = raw
        if raw > current and self.up_delay > 0:
            # Up only as far as every recommendation of the last scale_up_delay seconds asked.
            held = min(self._recommended.values(now, self.up_delay))
            desired = max(current, int(held))
            if desired < raw:
                why += f"; scale-up delay {self.up_delay:g}s holds at {desired}"
        elif raw < current and self.down_delay > 0:
            # Down only to the highest recommendation of the last scale_down_delay seconds.
            held = max(self._recommended.values(now, self.down_delay))
            desired = min(current, int(held))
            if desired > raw:
                why += f"; scale-down delay {self.down_delay:g}s holds at {desired}"
        return Decision(bounded(desired, lo, hi), why)
