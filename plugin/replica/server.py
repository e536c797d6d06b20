"""``tiffin replica serve -f deployment.yml``: one deployment's replica, planned and served in this process.

The YAML is read here (with tiffin's spec models) into a :class:`~tiffin.replica.plan.ReplicaPlan`, which
:func:`tiffin.replica.run.serve_plan` serves on uvicorn, as the supervisor's replicas are (they get the plan as
a file, made by ``tiffin serve``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tiffin.replica.factory import plan_from_file
from tiffin.replica.run import serve_plan

__all__ = ["serve"]


def serve(
    file: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 5001,
    uds: str | None = None,
    workers: int | None = None,
    overrides: Sequence[str] = (),
    log_level: str = "warning",
) -> int:
    """Serve the deployment in ``file`` until interrupted; returns the process exit code."""
    # Validate the spec (and fail with its message) before any worker starts.
    plan = plan_from_file(file, overrides)
    return serve_plan(plan, host=host, port=port, uds=uds, workers=workers, log_level=log_level)
