"""The layout of ``TIFFIN_HOME``: one place that names every file tiffin keeps there.

::

    $TIFFIN_HOME/                                 0700: everything below is private to the server's user
      tiffin.db (-wal, -shm)                      the SQLite store (unless TIFFIN_STORE_URL says otherwise), 0600
      admin-token                                 the control plane's admin token (0600)
      secret-key                                  the key sealing endpoint keys in the store (0600)
      deployments/ENDPOINT/DEPLOYMENT/deployment-N.yml   the spec of a deployment's generation N
      deployments/ENDPOINT/DEPLOYMENT/deployment-N.plan.json  what its replicas run (tiffin.replica.plan)
      deployments/ENDPOINT/DEPLOYMENT/replica-N.pid      a running replica's pid file
      logs/server.log                             tiffin serve's own log (also on stderr); rotated (.1, .2, ...)
      logs/ENDPOINT/DEPLOYMENT/replica-N.log      each replica's console: stdout, stderr, logging; rotated
      logs/ENDPOINT/DEPLOYMENT/environment.log    the deployment's environment: what was resolved, uv's output
      logs/ENDPOINT/DEPLOYMENT/events.log         the deployment's lifecycle events, one JSON line each; rotated
      model-mounts/online/ENDPOINT/DEPLOYMENT/    an online deployment's model: current/ (AZUREML_MODEL_DIR) → copies/X
      model-mounts/batch/ENDPOINT/DEPLOYMENT/M/   a batch deployment's model M (a digest of its model field)
      model-mounts/local/F/DEPLOYMENT/            a replica run from the spec file F (a digest of its path)
      jobs/JOB/job.log                            a batch job's log (its workers' output too)
      jobs/JOB/parts/N.csv                        the output rows of mini-batch N, once it is done
      jobs/JOB/workers/SLOT.pid                   a batch worker's pid file
      jobs/JOB/outputs/predictions.csv            the job's output file (output_file_name), once it completed
      datastores/NAME/PATH                        what azureml://datastores/NAME/paths/PATH stands for
      assets/blobs/SHA256/NAME/                   a registered model's or data asset's files, read-only
                                                  (tiffin.assets.blobs); assets/scratch/ a download being packed
      cache/inputs/DIGEST/                        a batch job's http(s) input, downloaded once (tiffin.batch.downloads)
      envs/KEY/                                   a built Python environment (tiffin.environments.builder), with
                                                  tiffin-env.json; envs/.build-* one being built, envs/.locks/,
                                                  envs/.logs/KEY.log the log of `tiffin environment build`
      runtime/DIGEST/tiffin/                      the copy of tiffin's runtime processes in environments import
      serve.lock                                  held while a tiffin serve uses this home
      run/PID-XXXXXXXX/dN-rM.sock                 replicas' Unix sockets while the server runs

    jobs/ may be TIFFIN_JOBS_DIR and assets/ TIFFIN_ASSETS_DIR instead: shared folders, for servers sharing a store;
    envs/ may be TIFFIN_ENVS_DIR, shared by several homes on one machine.

Every name on disk is *one* name's own: endpoint, deployment and job names become a folder each (never
flattened into one folder name, where ``x_y``/``z`` and ``x``/``y_z`` would meet), and a name that is not a
plain folder name (``..``, ``a/b``, a leading dot) is refused (:class:`~tiffin.errors.BadRequestError`)
rather than rewritten. Online, batch and local models live in separate trees, so an online endpoint and a
batch endpoint never share a folder whatever their names.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any

from tiffin.config import jobs_root
from tiffin.errors import BadRequestError, TiffinError

__all__ = [
    "admin_token_path",
    "batch_mount_identity",
    "deployment_dir",
    "environment_log_path",
    "events_log_path",
    "hold_home",
    "job_dir",
    "job_log_path",
    "local_mount_identity",
    "logs_dir",
    "model_mount",
    "model_mounts_dir",
    "online_mount_identity",
    "prepare_home",
    "replica_log_path",
    "safe_name",
    "secret_key_path",
    "server_log_path",
    "write_private_once",
]

# A folder name of its own: no separators, no leading dot (".", "..", hidden files), no control characters.
# Endpoint and deployment names are narrower still (tiffin.specs); job names come from users as they are.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")


def safe_name(name: str, what: str = "name") -> str:
    """``name`` if it can be a folder name of its own, else :class:`BadRequestError` saying what is allowed."""
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise BadRequestError(
            f"{what} {name!r} cannot name a folder: use letters, digits, '-', '_' and '.', starting with a letter "
            "or digit, at most 255 characters"
        )
    return name


def prepare_home(home: Path) -> Path:
    """Create ``home`` private (0700), make an existing one private, and keep what this process creates private.

    The umask (0o077) is the process's: the store, its WAL, replica logs, job outputs and model copies made by
    this process and the replicas and workers it starts come out 0600/0700 without each writer saying so.
    """
    os.umask(0o077)
    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if home.stat().st_mode & 0o077:
            os.chmod(home, 0o700)
    except OSError as exc:
        raise TiffinError(
            f"cannot make TIFFIN_HOME {home} a private folder (mode 0700): {exc.strerror or exc}; point "
            "TIFFIN_HOME at a folder the user running tiffin owns"
        ) from exc
    return home


def hold_home(home: Path) -> IO[str]:
    """Lock ``home/serve.lock`` for this server's lifetime (keep the returned file open; closing it, or the
    process ending however it ends, releases it); :class:`TiffinError` when another server holds it.

    One home, one server: the node name defaults to a digest of the home (:func:`tiffin.config.node_id`),
    and two servers on one home would also share the sockets' and jobs' folders.
    """
    handle = open(home / "serve.lock", "a+", encoding="utf-8")  # noqa: SIM115 - held open on purpose
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise TiffinError(
            f"another tiffin serve ({holder}) is running with TIFFIN_HOME {home}; stop it, or give this one a "
            "TIFFIN_HOME of its own (servers sharing a PostgreSQL store each have their own home)"
        ) from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def write_private_once(path: Path, content: bytes) -> bool:
    """Create ``path`` (0600) holding ``content`` unless it exists; whether this call created it.

    Written aside, flushed to disk, then linked into place: linking fails when the file exists, so two
    servers starting at once end up with one file, and nobody ever reads it half written.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def admin_token_path(home: Path) -> Path:
    """Where ``tiffin serve`` keeps the admin token of the control plane."""
    return home / "admin-token"


def secret_key_path(home: Path) -> Path:
    """Where the key that seals endpoint keys and token secrets in the store is kept (unless TIFFIN_SECRET_KEY)."""
    return home / "secret-key"


def deployment_dir(home: Path, endpoint: str, deployment: str) -> Path:
    """Working directory of a deployment's replicas (holds the spec file they serve)."""
    return home / "deployments" / safe_name(endpoint, "endpoint name") / safe_name(deployment, "deployment name")


def logs_dir(home: Path, endpoint: str, deployment: str) -> Path:
    """The folder of a deployment's replica logs."""
    return home / "logs" / safe_name(endpoint, "endpoint name") / safe_name(deployment, "deployment name")


def environment_log_path(home: Path, endpoint: str, deployment: str) -> Path:
    """The log of a deployment's environment: what was resolved, skipped, and uv's build output."""
    return logs_dir(home, endpoint, deployment) / "environment.log"


def events_log_path(home: Path, endpoint: str, deployment: str) -> Path:
    """The deployment's event log: its lifecycle as JSON lines (:mod:`tiffin.supervisor.logfiles`)."""
    return logs_dir(home, endpoint, deployment) / "events.log"


def server_log_path(home: Path) -> Path:
    """``tiffin serve``'s own log file (rotated)."""
    return home / "logs" / "server.log"


def replica_log_path(home: Path, endpoint: str, deployment: str, index: int) -> Path:
    """The log of replica number ``index`` (0-based) of a deployment."""
    return logs_dir(home, endpoint, deployment) / f"replica-{int(index)}.log"


def model_mounts_dir(home: Path) -> Path:
    """The root under which deployments' models are laid out as Azure's AZUREML_MODEL_DIR."""
    return home / "model-mounts"


def online_mount_identity(endpoint: str, deployment: str) -> str:
    """The model mount of an online deployment served by ``tiffin serve``: one per deployment."""
    return f"online/{safe_name(endpoint, 'endpoint name')}/{safe_name(deployment, 'deployment name')}"


def batch_mount_identity(endpoint: str, deployment: str, model: Any) -> str:
    """The model mount of a batch deployment's jobs, one per model: a job keeps the spec it was invoked with,
    so two jobs of one deployment may run different models at once."""
    digest = _digest(json.dumps(model, sort_keys=True, default=str))
    return f"batch/{safe_name(endpoint, 'endpoint name')}/{safe_name(deployment, 'deployment name')}/{digest}"


def local_mount_identity(spec_file: Path, deployment: str) -> str:
    """The model mount of a replica run from a spec file outside ``tiffin serve`` (``tiffin replica serve``)."""
    return f"local/{_digest(str(Path(spec_file).resolve()))}/{safe_name(deployment, 'deployment name')}"


def model_mount(home: Path, identity: str) -> Path:
    """The folder of the model mount ``identity`` (``online/E/D``, …; see :func:`online_mount_identity`)."""
    return model_mounts_dir(home).joinpath(*(safe_name(part, "model mount") for part in identity.split("/")))


def job_dir(home: Path, job: str) -> Path:
    """The folder of a batch job's log, output parts and outputs: under ``$TIFFIN_JOBS_DIR`` when set (servers
    sharing a store share it), else ``home/jobs``."""
    return jobs_root(home) / safe_name(job, "job name")


def job_log_path(home: Path, job: str) -> Path:
    """A batch job's log: the runner's progress lines and its workers' output."""
    return job_dir(home, job) / "job.log"


def _digest(text: str) -> str:
    # 128 bits of SHA-256: distinct inputs never meet in practice, and the folder name stays short.
    return hashlib.sha256(text.encode()).hexdigest()[:32]
