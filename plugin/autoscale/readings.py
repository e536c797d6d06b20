"""What the autoscaler samples: CPU per replica process (from /proc) and requests in flight (the gateway's admission).

CPU is a percentage of one core, as Kubernetes' and Azure's ``CpuUtilizationPercentage`` count it for an
instance: 100 means a replica kept one core busy over the interval.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["CpuMeter", "in_flight"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` and of its children it waited for; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            text = file.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields after it follow the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    try:
        utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    except (IndexError, ValueError):
        return None
    return (utime + stime + cutime + cstime) / _TICKS


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


def in_flight(gateway: Any, endpoint: str, deployment: str) -> float | None:
    """Requests of ``endpoint``/``deployment`` in flight or queued at the gateway now (None: never routed)."""
    admission = getattr(gateway, "_admissions", {}).get((endpoint, deployment))
    if admission is None:
        return None
    return float(admission.in_flight + admission.queued)
