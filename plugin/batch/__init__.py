"""Batch endpoints' jobs: planning (pure), the worker pools that score mini-batches, the job runner and the
scheduler that ``tiffin serve`` runs.

::

    invoke → job row (Queued) → BatchScheduler → JobRunner: plan(files) → mini-batches in the store
           → Pool (LocalPool: worker processes | RayPool: Ray actors) → runner.score(mini_batch) → parts
           → output file (append_row) → Completed | Failed | Canceled

Names are imported on first use, so a worker process (``python -m tiffin.batch.worker``) loads only what
scoring needs, not the store and the scheduler.
"""

from typing import TYPE_CHECKING

from tiffin._lazy import lazy_attributes

_WHERE = {
    "INPUT_TYPES": "tiffin.batch.inputs",
    "datastore_path": "tiffin.batch.inputs",
    "resolve_input": "tiffin.batch.inputs",
    "MiniBatch": "tiffin.batch.planner",
    "Progress": "tiffin.batch.planner",
    "after_failure": "tiffin.batch.planner",
    "over_threshold": "tiffin.batch.planner",
    "plan": "tiffin.batch.planner",
    "RAY_ADDRESS_ENV": "tiffin.batch.runner",
    "JobRunner": "tiffin.batch.runner",
    "job_progress": "tiffin.batch.runner",
    "BatchScheduler": "tiffin.batch.scheduler",
}

if TYPE_CHECKING:
    from tiffin.batch.inputs import INPUT_TYPES, datastore_path, resolve_input
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
    "datastore_path",
    "job_progress",
    "over_threshold",
    "plan",
    "resolve_input",
]


__getattr__ = lazy_attributes("tiffin.batch", globals(), _WHERE)
