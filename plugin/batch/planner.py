"""Batch planning, pure: input files in, ordered mini-batches out; and the rules a job's progress follows.

No I/O here. :func:`plan` splits a job's input files into mini-batches as Azure's batch deployments do
(``mini_batch_size`` files each, in a stable order, so a resumed job finds the same mini-batches);
:func:`after_failure` and :func:`over_threshold` are Azure's retry and ``error_threshold`` rules;
:class:`Progress` is what ``job show`` and ``job stream`` report.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["MiniBatch", "Progress", "after_failure", "over_threshold", "plan"]


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
