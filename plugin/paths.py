"""The layout of ``TIFFIN_HOME``: one place that names every file tiffin keeps there.

::

    $TIFFIN_HOME/
      tiffin.db                                   the SQLite store (unless TIFFIN_STORE_URL says otherwise)
      admin-token                                 the control plane's admin token (0600)
      deployments/ENDPOINT/DEPLOYMENT/deployment.yml   the spec a replica process serves
      logs/ENDPOINT/DEPLOYMENT/replica-N.log      each replica's stdout and stderr
      model-mounts/ENDPOINT_DEPLOYMENT/           AZUREML_MODEL_DIR of a deployment (links to the model)
      jobs/JOB/job.log                            a batch job's log (its workers' output too)
      jobs/JOB/parts/N.csv                        the output rows of mini-batch N, once it is done
      jobs/JOB/outputs/predictions.csv            the job's output file (output_file_name), once it completed
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "admin_token_path",
    "deployment_dir",
    "job_dir",
    "job_log_path",
    "logs_dir",
    "model_mounts_dir",
    "replica_log_path",
]


def admin_token_path(home: Path) -> Path:
    """Where ``tiffin serve`` keeps the admin token of the control plane."""
    return home / "admin-token"


def deployment_dir(home: Path, endpoint: str, deployment: str) -> Path:
    """Working directory of a deployment's replicas (holds the spec file they serve)."""
    return home / "deployments" / endpoint / deployment


def logs_dir(home: Path, endpoint: str, deployment: str) -> Path:
    """The folder of a deployment's replica logs."""
    return home / "logs" / endpoint / deployment


def replica_log_path(home: Path, endpoint: str, deployment: str, index: int) -> Path:
    """The log of replica number ``index`` (0-based) of a deployment."""
    return logs_dir(home, endpoint, deployment) / f"replica-{index}.log"


def model_mounts_dir(home: Path) -> Path:
    """The root under which deployments' models are laid out as Azure's AZUREML_MODEL_DIR."""
    return home / "model-mounts"


def job_dir(home: Path, job: str) -> Path:
    """The folder of a batch job's log, output parts and outputs."""
    return home / "jobs" / job


def job_log_path(home: Path, job: str) -> Path:
    """A batch job's log: the runner's progress lines and its workers' output."""
    return job_dir(home, job) / "job.log"
