"""What Linux's ``/proc`` says of a process and of the machine: CPU time, start time, resident memory, state.

One reader for the supervisor's liveness checks (:mod:`tiffin.pids`), the autoscaler's CPU and memory samples
(:mod:`tiffin.autoscale.readings`) and ``/metrics``' replica gauges (:mod:`tiffin.telemetry.metrics`). Every
function returns None (or 0 for the machine's memory) where there is no ``/proc`` or the process is gone.
Standard library only: the replica runtime may import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ProcessStat", "memory_total", "process_stat", "rss_bytes", "uptime"]

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True, slots=True)
class ProcessStat:
    """The fields of ``/proc/PID/stat`` tiffin reads, in seconds."""

    state: str
    """``R``, ``S``, ``D``, ``Z`` (a zombie: exited, not yet reaped)..."""
    cpu_s: float
    """User + system CPU time of the process itself."""
    children_cpu_s: float
    """User + system CPU time of its children that it waited for."""
    started_s: float
    """When it started, in seconds after the machine booted (compare with :func:`uptime`)."""


def process_stat(pid: int) -> ProcessStat | None:
    """``/proc/PID/stat`` of ``pid``; None if it is gone (or unreadable)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            text = file.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the fields after it follow the last ')'.
    fields = text.rpartition(")")[2].split()
    try:  # state is field 3, utime 14, stime 15, cutime 16, cstime 17, starttime 22 (1-based)
        return ProcessStat(
            state=fields[0],
            cpu_s=(int(fields[11]) + int(fields[12])) / TICKS,
            children_cpu_s=(int(fields[13]) + int(fields[14])) / TICKS,
            started_s=int(fields[19]) / TICKS,
        )
    except (IndexError, ValueError):
        return None


def rss_bytes(pid: int) -> int | None:
    """Resident memory of ``pid`` in bytes (``/proc/PID/statm``); None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", encoding="ascii") as file:
            return int(file.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return None


def memory_total() -> int:
    """The machine's memory in bytes (``MemTotal`` of /proc/meminfo); 0 where there is no /proc."""
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def uptime() -> float | None:
    """Seconds since the machine booted (``/proc/uptime``); None without /proc."""
    try:
        with open("/proc/uptime", encoding="ascii") as file:
            return float(file.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
