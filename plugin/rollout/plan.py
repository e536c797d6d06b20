"""A rollout's pure logic: the steps, the traffic map of a step, and the guards' decision over a step.

Guards compare the new deployment with the current one over what both served since the step began (deltas of
the gateway's counters): the new one's error rate (HTTP 5xx and gateway failures) against a limit, and its
P99 latency over the current one's. Nothing is judged before the new deployment has served ``min_requests``
in the step; a step whose interval is over without that many requests holds (the rollout waits) rather than
advancing on too little evidence. The error guard is judged as soon as enough requests came in, so a
failing deployment is rolled back without waiting for the step's end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from tiffin.errors import SpecError

__all__ = [
    "ADVANCE",
    "CONTINUE",
    "HOLD",
    "ROLL_BACK",
    "Decision",
    "Guards",
    "Reading",
    "decide",
    "parse_duration",
    "parse_percent",
    "parse_steps",
    "step_traffic",
]

ADVANCE, CONTINUE, HOLD, ROLL_BACK = "advance", "continue", "hold", "roll back"


@dataclass(frozen=True, slots=True)
class Guards:
    """The limits a step must keep: error rate of the new deployment (0.01 = 1%), P99 ratio new/current,
    and how many requests the new deployment must serve in a step before anything is judged."""

    max_error_rate: float = 0.01
    max_p99_ratio: float = 1.5
    min_requests: int = 200


@dataclass(frozen=True, slots=True)
class Reading:
    """What one deployment served during a step: requests answered, of those errors, and the P99 (ms)."""

    requests: int
    errors: int
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    action: str
    reason: str


def decide(new: Reading, current: Reading, guards: Guards, interval_over: bool) -> Decision:
    """Whether to roll back, advance, hold (interval over, too few requests) or keep going (``CONTINUE``)."""
    if new.requests < guards.min_requests:
        if interval_over:
            return Decision(
                HOLD, f"waiting for {guards.min_requests} requests to the new deployment (has {new.requests})"
            )
        return Decision(CONTINUE, "")
    if new.error_rate > guards.max_error_rate:
        return Decision(
            ROLL_BACK,
            f"error rate {new.error_rate:.2%} ({new.errors} of {new.requests} requests) is above "
            f"--max-error-rate {guards.max_error_rate:.2%}",
        )
    if not interval_over:
        return Decision(CONTINUE, "")
    if new.p99_ms is not None and current.p99_ms:
        ratio = new.p99_ms / current.p99_ms
        if ratio > guards.max_p99_ratio:
            return Decision(
                ROLL_BACK,
                f"P99 latency {new.p99_ms:.1f} ms is {ratio:.2f}x the current deployment's {current.p99_ms:.1f} ms "
                f"({current.requests} requests), above --max-p99-ratio {guards.max_p99_ratio}",
            )
    return Decision(
        ADVANCE,
        f"error rate {new.error_rate:.2%} of {new.requests} requests, P99 {_ms(new.p99_ms)} vs {_ms(current.p99_ms)}",
    )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def step_traffic(before: Mapping[str, int], new: str, percent: int) -> dict[str, int]:
    """The live traffic map with ``percent`` on ``new`` and the rest shared by the deployments that had traffic
    before, in proportion (largest remainders; whole percentages adding up to 100)."""
    others = {name: share for name, share in before.items() if name != new and share > 0}
    rest = 100 - percent
    total = sum(others.values())
    result = {name: 0 for name in before}
    result[new] = percent
    if not total:
        return result
    exact = {name: rest * share / total for name, share in others.items()}
    floors = {name: int(value) for name, value in exact.items()}
    left = rest - sum(floors.values())
    for name in sorted(exact, key=lambda n: (floors[n] - exact[n], n))[:left]:
        floors[name] += 1
    result.update(floors)
    return result


def parse_steps(value: str | Sequence[Any]) -> list[int]:
    """``"5,25,50,100"`` (or a list) as increasing whole percentages ending at 100."""
    if not isinstance(value, str | list | tuple):
        raise SpecError("must be whole percentages separated by commas, e.g. 5,25,50,100", field="steps")
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        steps = [int(str(item).strip().rstrip("%")) for item in items if str(item).strip()]
    except ValueError:
        raise SpecError("must be whole percentages separated by commas, e.g. 5,25,50,100", field="steps") from None
    if not steps or steps[-1] != 100 or any(not 0 < s <= 100 for s in steps):
        raise SpecError("must be percentages from 1 to 100 ending with 100, e.g. 5,25,50,100", field="steps")
    if any(b <= a for a, b in pairwise(steps)):
        raise SpecError("must increase, e.g. 5,25,50,100", field="steps")
    return steps


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | float | int, field: str) -> float:
    """``60s``, ``5m``, ``1.5h``, ``500ms`` or a number of seconds, as seconds (> 0)."""
    text = str(value).strip().lower()
    for unit in ("ms", "s", "m", "h"):
        if text.endswith(unit):
            number, scale = text[: -len(unit)], _UNITS[unit]
            break
    else:
        number, scale = text, 1.0
    try:
        seconds = float(number) * scale
    except ValueError:
        raise SpecError(f"is not a duration (got {value!r}); write e.g. 60s, 5m", field=field) from None
    if not seconds > 0:
        raise SpecError(f"must be longer than 0 (got {value!r})", field=field)
    return seconds


def parse_percent(value: str | float | int, field: str) -> float:
    """``1%`` or ``0.01`` as a fraction from 0 to 1."""
    text = str(value).strip()
    try:
        fraction = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise SpecError(f"is not a percentage (got {value!r}); write e.g. 1% or 0.01", field=field) from None
    if not 0 <= fraction <= 1:
        raise SpecError(f"must be from 0% to 100% (got {value!r})", field=field)
    return fraction
