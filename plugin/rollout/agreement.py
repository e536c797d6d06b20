"""The agreement report of a mirror phase: for the same requests, does the mirror answer as the primary does?

The gateway records one :meth:`AgreementCheck.record` per mirrored request while a check is active for the
endpoint (:mod:`tiffin.gateway.side`); it keeps counts and a bounded window of latencies, never bodies.
Answers are equal when their statuses are and their bodies are byte for byte, or both are JSON documents
equal but for numbers within ``tolerance`` (relative or absolute). Bodies over :data:`MAX_COMPARED_BYTES`
are not compared (counted as ``skipped``).
"""

from __future__ import annotations

import json
import math
from collections import deque
from typing import Any

from tiffin.telemetry.meters import percentile_ms

__all__ = ["MAX_COMPARED_BYTES", "AgreementCheck", "answers_agree"]

MAX_COMPARED_BYTES = 1024 * 1024
_WINDOW = 2048


def _close(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):  # true is not 1 in an answer
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tolerance) for k in a)
    return bool(a == b)


def answers_agree(primary: bytes, mirror: bytes, tolerance: float) -> bool:
    """Bytes equal, or JSON documents equal with numbers within ``tolerance``."""
    if primary == mirror:
        return True
    try:
        return _close(json.loads(primary), json.loads(mirror), tolerance)
    except (ValueError, RecursionError):
        return False


class _Tally:
    """Counts and latencies of mirrored requests (all of them, or those one primary deployment answered)."""

    __slots__ = ("compared", "differing", "equal", "mirror_errors", "mirror_s", "primary_errors", "primary_s",
                 "skipped")  # fmt: skip

    def __init__(self) -> None:
        self.compared = 0
        self.equal = 0
        self.differing = 0
        self.skipped = 0
        """Mirrored requests not compared: a body over the size limit, or a mirror copy with no answer."""
        self.primary_errors = 0
        self.mirror_errors = 0
        self.primary_s: deque[float] = deque(maxlen=_WINDOW)
        self.mirror_s: deque[float] = deque(maxlen=_WINDOW)

    def add(self, status: int, mirror_status: int | None, seconds: float, mirror_s: float, equal: bool | None) -> None:
        self.primary_s.append(seconds)
        self.primary_errors += status >= 500
        if mirror_status is None:
            self.mirror_errors += 1
        else:
            self.mirror_s.append(mirror_s)
            self.mirror_errors += mirror_status >= 500
        if equal is None:
            self.skipped += 1
            return
        self.compared += 1
        self.equal += equal
        self.differing += not equal

    def report(self) -> dict[str, Any]:
        primary, mirror = sorted(self.primary_s), sorted(self.mirror_s)
        latency = {
            "primary": {"p50": percentile_ms(primary, 0.5), "p99": percentile_ms(primary, 0.99)},
            "mirror": {"p50": percentile_ms(mirror, 0.5), "p99": percentile_ms(mirror, 0.99)},
        }
        deltas = {
            q: round(latency["mirror"][q] - latency["primary"][q], 3)  # type: ignore[operator]
            for q in ("p50", "p99")
            if latency["mirror"][q] is not None and latency["primary"][q] is not None
        }
        return {
            "compared": self.compared,
            "equal": self.equal,
            "differing": self.differing,
            "skipped": self.skipped,
            "agreement": round(self.equal / self.compared, 6) if self.compared else None,
            "errors": {
                "primary": self.primary_errors,
                "mirror": self.mirror_errors,
                "delta": self.mirror_errors - self.primary_errors,
            },
            "latency_ms": {**latency, "delta": deltas},
        }


class AgreementCheck:
    """Counts of one endpoint's mirror phase: the mirror ``deployment`` against whoever answered the caller,
    in all and per deployment that answered (the endpoint's deployments: a bounded number of tallies)."""

    def __init__(self, deployment: str, tolerance: float) -> None:
        self.deployment = deployment
        self.tolerance = tolerance
        self.total = _Tally()
        self.by_primary: dict[str, _Tally] = {}

    def record(
        self,
        primary: tuple[int, bytes | None, float],
        mirror_status: int | None,
        mirror_body: bytes | None,
        mirror_s: float,
        primary_deployment: str = "",
    ) -> None:
        """One mirrored request: the primary's (status, body or None when too large, seconds), the mirror's, and
        which deployment answered the caller."""
        status, body, seconds = primary
        equal: bool | None = None  # not compared
        if (
            mirror_status is not None
            and body is not None
            and mirror_body is not None
            and (len(mirror_body) <= MAX_COMPARED_BYTES)
        ):
            equal = status == mirror_status and answers_agree(body, mirror_body, self.tolerance)
        self.total.add(status, mirror_status, seconds, mirror_s, equal)
        if primary_deployment:
            tally = self.by_primary.get(primary_deployment)
            if tally is None:
                tally = self.by_primary[primary_deployment] = _Tally()
            tally.add(status, mirror_status, seconds, mirror_s, equal)

    def report(self) -> dict[str, Any]:
        """The counts in all, and ``by_deployment``: the same against each deployment that answered."""
        return {
            "deployment": self.deployment,
            "tolerance": self.tolerance,
            **self.total.report(),
            "by_deployment": {name: tally.report() for name, tally in sorted(self.by_primary.items())},
        }
