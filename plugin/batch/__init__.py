"""Batch endpoints' jobs: planning (pure), the worker pools that score mini-batches, the job runner and the
scheduler that ``tiffin serve`` runs.

::

    invoke → job row (Queued) → BatchScheduler → JobRunner: plan(files) → mini-batches in the store
           → Pool (LocalPool: worker processes | RayPool: Ray actors) → runner.score(mini_batch) → parts
           → output file (append_row) → Completed | Failed | Canceled
"""

from tiffin.batch.inputs import INPUT_TYPES, resolve_input
from tiffin.batch.planner import MiniBatch, Progress, after_failure, over_threshold, plan
from tiffin.batch.runner import RAY_ADDRESS_ENV, JobRunner, job_progress
from tiffin.batch.scheduler import BatchScheduler

__all__ = [
    "INPUT_TYPES",
    "RAY_ADDRESS_ENV",
    "BatchScheduler",
    "JobRunner",
    "MiniBatch",
    "Progress",
    "after_failure",
    "job_progress",
    "over_threshold",
    "plan",
    "resolve_input",
]
