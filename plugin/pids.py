"""Whether a process id still names a running process (the supervisor's replicas, a ``tiffin serve`` that left
containers or socket folders behind). Standard library only: the replica runtime may import it."""

from __future__ import annotations

import os

from tiffin.procfs import process_stat

__all__ = ["pid_alive"]


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (owned by anyone); a zombie counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    # A zombie has exited; in a container whose PID 1 never reaps, an orphan stays one for good.
    stat = process_stat(pid)
    return stat is None or stat.state != "Z"
