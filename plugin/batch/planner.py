"""Batch planning, pure: input files in, ordered mini-batches out; and the rules a job's progress follows.

No I/O here. :func:`admit` decides which queued jobs start now, within each deployment's limit and each
compute's ``max_instances``; :func:`plan` splits a job's input files into mini-batches as Azure's batch deployments do
(``mini_batch_size`` files each, in a stable order, so a resumed job finds the same mini-batches);
:func:`after_failure` and :func:`over_threshold` are Azure's retry and ``error_threshold`` rules;
:class:`Progress` is what ``job show`` and ``job stream`` report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "MiniBatch",
    "Progress",
    "QueuedJob",
    "admit",
    "after_failure",
    "compute_name",
    "instances_of",
    "over_threshold",
    "plan",
]


@dataclass(frozen=True, slots=True)
class MiniBatch:
    """The ``index``-th mini-batch of a job and its input items (file paths), in order."""

    index: int
    items: tuple[str, ...]


def plan(files: Iterable[str], mini_batch_size: int) -> list[MiniBatch]:
    """Split ``files`` into mini-batches of ``mini_batch_size`` (the last may be smaller).

    Files are sorted first, so the plan does not depend on the order a folder was listed in. An empty
    input gives no mini-batches (a job with nothing to do completes at once).
    """
    if mini_batch_size < 1:
        raise ValueError(f"mini_batch_size must be at least 1, not {mini_batch_size}")
    ordered = sorted(files)
    return [
        MiniBatch(index, tuple(ordered[start : start + mini_batch_size]))
        for index, start in enumerate(range(0, len(ordered), mini_batch_size))
    ]


def compute_name(spec: Mapping[str, Any] | None) -> str | None:
    """The compute a job's deployment spec names (``azureml:NAME``, ``NAME`` or its resource id), bare; or None."""
    value = (spec or {}).get("compute")
    if not isinstance(value, str) or not value.strip():
        return None
    return value.removeprefix("azureml:").rstrip("/").rsplit("/computes/", 1)[-1]


def instances_of(spec: Mapping[str, Any] | None) -> int:
    """The instances (Azure's nodes) a job of this deployment spec uses: ``resources.instance_count``, 1 if unset."""
    resources = (spec or {}).get("resources") or {}
    try:
        return max(1, int(resources.get("instance_count") or 1))
    except (TypeError, ValueError):
        return 1


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """What :func:`admit` needs of a job: its name, deployment, compute (None: no cap) and instances."""

    name: str
    deployment: tuple[str, str | None]
    compute: str | None
    instances: int


def admit(
    queued: Iterable[QueuedJob],
    running: Mapping[tuple[str, str | None], int],
    in_use: Mapping[str, int],
    caps: Mapping[str, int],
    per_deployment: int,
    limit: int,
) -> list[str]:
    """The queued jobs (given oldest first) to start now, in order, at most ``limit``.

    ``running`` counts each deployment's running jobs, ``in_use`` each compute's instances in use by running
    jobs, ``caps`` each capped compute's ``max_instances`` (a compute not in it, or a job naming none, has no
    cap). Rules, as an Azure cluster queues jobs when it is at its maximum:

    * a deployment runs at most ``per_deployment`` jobs at once;
    * a compute's running jobs use at most ``max_instances`` instances together, across every deployment
      on it; a job over that waits;
    * first come, first served: a job that waits holds back every later job of its deployment *and* of its
      compute, so a big job is not starved by smaller ones invoked after it;
    * a job asking for more instances than its compute has (the compute shrank after it was queued) is
      counted as the whole compute: it runs alone there rather than never.
    """
    running_now, used = Counter(running), Counter(in_use)
    held_deployments: set[tuple[str, str | None]] = set()
    held_computes: set[str] = set()
    started: list[str] = []
    for job in queued:
        if len(started) >= limit:
            break
        if job.deployment in held_deployments or running_now[job.deployment] >= per_deployment:
            held_deployments.add(job.deployment)
            continue
        cap = caps.get(job.compute) if job.compute is not None else None
        if cap is not None:
            need = min(job.instances, cap)
            if job.compute in held_computes or used[job.compute] + need > cap:
                held_deployments.add(job.deployment)
                held_computes.add(job.compute)  # type: ignore[arg-type]
                continue
            used[job.compute] += need  # type: ignore[index]
        running_now[job.deployment] += 1
        started.append(job.name)
    return started


def after_failure(attempts: int, max_retries: int) -> Literal["retry", "give_up"]:
    """What to do with a mini-batch whose ``attempts``-th run failed (raised, timed out, lost its worker).

    Azure's ``retry_settings.max_retries``: a mini-batch runs at most ``max_retries + 1`` times.
    """
    return "retry" if attempts <= max_retries else "give_up"


def over_threshold(failed_items: int, error_threshold: int) -> bool:
    """Whether a job with ``failed_items`` failed inputs must stop: Azure's ``error_threshold``, where -1
    ignores every failure and N tolerates up to N."""
    return error_threshold >= 0 and failed_items > error_threshold


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a job is, counted in mini-batches and input items."""

    total: int
    done: int
    failed: int
    items: int
    failed_items: int
    rows: int

    @classmethod
    def of(cls, batches: Sequence[tuple[str, int, int, int | None]]) -> Progress:
        """From ``(status, item_count, failed_items, rows)`` per mini-batch."""
        return cls(
            total=len(batches),
            done=sum(1 for status, *_ in batches if status == "done"),
            failed=sum(1 for status, *_ in batches if status == "failed"),
            items=sum(count for _, count, _, _ in batches),
            failed_items=sum(failed for _, _, failed, _ in batches),
            rows=sum(rows or 0 for *_, rows in batches),
        )

    def as_dict(self) -> dict[str, int]:
        """JSON-ready, with Azure-like names."""
        return {
            "mini_batches_total": self.total,
            "mini_batches_completed": self.done,
            "mini_batches_failed": self.failed,
            "items_total": self.items,
            "items_failed": self.failed_items,
            "rows_scored": self.rows,
        }
