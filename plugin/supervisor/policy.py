"""The supervisor's decisions as pure functions: no I/O, no clock (times are passed in).

Everything here is unit-tested on its own; the reconciler only gathers facts, asks these functions
what to do, and does it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tiffin.specs import ProbeSettings

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_CAP_S",
    "DRAIN_S",
    "LOG_TAIL_LINES",
    "PROBE_EARLY_FRACTION",
    "STABLE_AFTER_S",
    "START_FAILURE_LIMIT",
    "STOP_TIMEOUT_S",
    "ProbeCounter",
    "RolloutPlan",
    "SlotView",
    "backoff_resets",
    "first_liveness_probe_at",
    "first_readiness_probe_at",
    "liveness_failed",
    "lowest_free_indexes",
    "plan_rollout",
    "probe_due",
    "readiness_after",
    "restart_delay",
    "template_of",
]

BACKOFF_BASE_S = 1.0
"""Delay before the first restart of a replica that exited; doubled for each further crash in a row."""
BACKOFF_CAP_S = 30.0
"""The longest delay between restarts."""
STABLE_AFTER_S = 60.0
"""A replica ready this long has recovered: its next crash restarts it after the base delay again."""
START_FAILURE_LIMIT = 3
"""Exits before ever becoming ready, in a row, after which a deployment is marked Failed."""
DRAIN_S = 2.0
"""Time between taking a replica out of routing and sending it SIGTERM, for requests already routed to it."""
STOP_TIMEOUT_S = 10.0
"""How long a replica may take to exit after SIGTERM before it gets SIGKILL."""
LOG_TAIL_LINES = 20
"""Lines of a replica's log quoted in a Failed deployment's reason."""

# Fields that change how many processes run but not what each one runs: a change to them scales the
# deployment instead of replacing every replica.
_SCALE_ONLY_FIELDS = frozenset({"instance_count"})


# --- probes ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class ProbeCounter:
    """Consecutive successes and failures of one probe of one replica process."""

    successes: int = 0
    failures: int = 0

    def record(self, ok: bool) -> None:
        """Count one probe result; a success ends a run of failures and vice versa."""
        if ok:
            self.successes += 1
            self.failures = 0
        else:
            self.failures += 1
            self.successes = 0


def readiness_after(ready: bool, counter: ProbeCounter, probe: ProbeSettings) -> bool:
    """Whether a replica is ready (routable) given its readiness ``counter`` and its previous state.

    As Azure (Kubernetes) does: a replica that is not ready becomes ready after ``success_threshold``
    successes in a row; a ready one stops being ready after ``failure_threshold`` failures in a row.
    Anything short of a threshold leaves the state as it was.
    """
    if not ready and counter.successes >= probe.success_threshold:
        return True
    if ready and counter.failures >= probe.failure_threshold:
        return False
    return ready


def liveness_failed(counter: ProbeCounter, probe: ProbeSettings) -> bool:
    """Whether the liveness probe has failed often enough in a row that the replica must be restarted."""
    return counter.failures >= probe.failure_threshold


PROBE_EARLY_FRACTION = 0.25
"""How early (a fraction of its period) a ready replica's probe may go along with a pass that runs anyway."""


def probe_due(due_at: float, now: float, period: float, ready: bool) -> bool:
    """Whether a probe due at ``due_at`` goes now.

    A ready replica's probe may go up to a quarter period early, in a pass that runs for another probe: the
    probes of all the server's replicas then fall into the same passes (one wake-up per period, not one per
    replica), and once together each stays exactly ``period`` apart. A replica not yet ready is probed on
    time, never early: its ``initial_delay`` is honoured in full.
    """
    return now >= (due_at - PROBE_EARLY_FRACTION * period if ready else due_at)


def first_readiness_probe_at(started_at: float, probe: ProbeSettings, ready_line_at: float | None) -> float:
    """When to send a replica's first readiness probe.

    Azure waits ``initial_delay`` (10 s by default); a tiffin replica says when it accepts requests,
    so probing starts at that line if it comes earlier, and nobody waits 10 s for a 1 s start-up.
    """
    at = started_at + probe.initial_delay
    return at if ready_line_at is None else min(at, ready_line_at)


def first_liveness_probe_at(started_at: float, probe: ProbeSettings) -> float:
    """When to send a replica's first liveness probe: ``initial_delay`` honoured in full, as Azure does,
    because a failed liveness probe restarts the process and a slow ``init()`` must get its time."""
    return started_at + probe.initial_delay


# --- restarts --------------------------------------------------------------------------------------


def restart_delay(crashes: int, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Seconds to wait before restarting a replica after its ``crashes``-th crash in a row: 1, 2, 4 … 30."""
    if crashes <= 0:
        return 0.0
    # The exponent is bounded so that a very long crash streak cannot overflow a float.
    return min(cap, base * 2.0 ** min(crashes - 1, 32))


def backoff_resets(ready_since: float | None, now: float, stable_after: float = STABLE_AFTER_S) -> bool:
    """Whether a replica has been ready long enough that its crash streak is forgiven."""
    return ready_since is not None and now - ready_since >= stable_after


# --- rollout ---------------------------------------------------------------------------------------


def template_of(spec: Mapping[str, Any]) -> str:
    """A digest of what each replica of a deployment runs: the spec without its scale-only fields.

    Two specs with the same template need no new processes (a scale change, or a state write that
    bumped the generation); a different template means a rolling update.
    """
    body = {key: value for key, value in spec.items() if key not in _SCALE_ONLY_FIELDS}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def lowest_free_indexes(used: Iterable[int], count: int) -> list[int]:
    """The ``count`` smallest non-negative integers not in ``used`` (replica numbers, log file names)."""
    taken, out, candidate = set(used), [], 0
    while len(out) < count:
        if candidate not in taken:
            out.append(candidate)
        candidate += 1
    return out


@dataclass(frozen=True, slots=True)
class SlotView:
    """What the rollout plan needs to know of one replica that is not already being retired."""

    index: int
    template: str
    ready: bool


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """What to change: how many replicas of the desired template to start, which replicas to retire."""

    start: int = 0
    retire: tuple[int, ...] = ()


def _keep_first(slots: Sequence[SlotView], keep: int) -> tuple[list[SlotView], list[SlotView]]:
    # Ready replicas are worth more than starting or dead ones; among equals keep the low numbers.
    ordered = sorted(slots, key=lambda s: (not s.ready, s.index))
    return ordered[:keep], ordered[keep:]


def plan_rollout(slots: Sequence[SlotView], template: str, count: int, gated: bool) -> RolloutPlan:
    """Decide how to move ``slots`` towards ``count`` ready replicas of ``template``.

    * Replicas of the desired template beyond ``count`` are retired (not-ready ones first): scale down.
    * Missing ones are started, unless ``gated`` (the deployment failed and waits for a new spec).
    * A rolling update keeps as many ready replicas of older templates as the new template still
      lacks ready ones, so capacity never drops below ``count`` while there is a choice; old replicas
      that do not serve are retired at once. When ``gated``, the new template cannot start, so every
      old replica is kept serving (as Azure leaves the previous instances of a failed update).
    """
    current = [s for s in slots if s.template == template]
    old = [s for s in slots if s.template != template]
    retire: list[int] = []
    current, extra = _keep_first(current, count)
    retire += [s.index for s in extra]
    start = 0 if gated else count - len(current)
    if not gated:
        ready_now = sum(1 for s in current if s.ready)
        serving_old = [s for s in old if s.ready]
        _, dropped = _keep_first(serving_old, max(0, count - ready_now))
        retire += [s.index for s in dropped]
        retire += [s.index for s in old if not s.ready]
    return RolloutPlan(start=start, retire=tuple(sorted(retire)))
