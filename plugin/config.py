"""Where tiffin keeps its files. Read from the environment here, at the edge, and passed down."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "ADVERTISE_URL_ENV",
    "ASSETS_DIR_ENV",
    "DEFAULT_URL",
    "INPUT_ROOTS_ENV",
    "INPUT_URL_MAX_BYTES_ENV",
    "INPUT_URL_PREFIXES_ENV",
    "INPUT_URL_TIMEOUT_ENV",
    "JOBS_DIR_ENV",
    "LOG_BACKUPS_ENV",
    "LOG_MAX_BYTES_ENV",
    "MAX_INPUT_FILES_ENV",
    "MAX_INSTANCES_ENV",
    "MAX_WORKERS_ENV",
    "NODE_ID_ENV",
    "NODE_LEASE_ENV",
    "REPLICA_CPUS_ENV",
    "advertise_url",
    "assets_root",
    "configure_logging",
    "input_roots",
    "input_url_max_bytes",
    "input_url_prefixes",
    "input_url_timeout",
    "jobs_root",
    "log_backups",
    "log_max_bytes",
    "max_input_files",
    "max_instances",
    "max_workers",
    "node_id",
    "node_lease",
    "parse_cpu_list",
    "pin_to_cpus",
    "tiffin_home",
    "tiffin_url",
]

LOG_MAX_BYTES_ENV = "TIFFIN_LOG_MAX_BYTES"
"""The size at which a log file (server.log, replica-N.log, events.log) is rotated; default 10 MiB."""
LOG_BACKUPS_ENV = "TIFFIN_LOG_BACKUPS"
"""How many rotated copies of each log file are kept (FILE.1 newest); default 3."""
REPLICA_CPUS_ENV = "TIFFIN_REPLICA_CPUS"
"""CPUs replicas run on (``taskset -c`` syntax, e.g. ``1-3``); set by ``tiffin serve --replica-cpus``."""

DEFAULT_URL = "http://127.0.0.1:7700"

MAX_INSTANCES_ENV = "TIFFIN_MAX_INSTANCES"
"""The most replicas one online deployment may ask for (``instance_count``); default 16."""

MAX_WORKERS_ENV = "TIFFIN_MAX_WORKERS"
"""The most worker processes (or Ray actors) one batch job may run at once
(``instance_count * max_concurrency_per_instance``); default 32."""

MAX_INPUT_FILES_ENV = "TIFFIN_MAX_INPUT_FILES"
"""The most input files one batch job may have (a folder's files, or what a glob pattern matches); default
100,000."""

INPUT_ROOTS_ENV = "TIFFIN_INPUT_ROOTS"
"""Folders (separated by ``:``, as ``PATH``) whose files a batch endpoint's key or token may score, besides
``$TIFFIN_HOME/datastores``; default none."""

INPUT_URL_PREFIXES_ENV = "TIFFIN_INPUT_URL_PREFIXES"
"""URL prefixes (separated by spaces or commas, e.g. ``https://data.example.com/public/``) under which a batch
endpoint's key or token may give an ``http(s)://`` input; default none: only the admin token gives URLs."""

INPUT_URL_MAX_BYTES_ENV = "TIFFIN_INPUT_URL_MAX_BYTES"
"""The largest file an ``http(s)://`` batch input may download, in bytes; default 1 GiB."""

INPUT_URL_TIMEOUT_ENV = "TIFFIN_INPUT_URL_TIMEOUT"
"""How long downloading one ``http(s)://`` batch input may take, in seconds; default 600."""

NODE_ID_ENV = "TIFFIN_NODE_ID"
"""This server's name among the servers sharing one store; default the host name and a digest of
``$TIFFIN_HOME``, which is unique because one home serves one server at a time."""

NODE_LEASE_ENV = "TIFFIN_NODE_LEASE"
"""Seconds a server's heartbeat may stay still before the others take its deployments and jobs over;
default 10 (it beats five times per lease)."""

ADVERTISE_URL_ENV = "TIFFIN_ADVERTISE_URL"
"""The URL the other servers sharing the store use to reach this one's replicas (``http://HOST:PORT``)."""

ASSETS_DIR_ENV = "TIFFIN_ASSETS_DIR"
"""Where registered models' and data assets' files are kept (``blobs/``); default ``$TIFFIN_HOME/assets``.
Servers sharing a store share it too, mounted at the same path on each."""

JOBS_DIR_ENV = "TIFFIN_JOBS_DIR"
"""Where batch jobs keep their logs, output parts and outputs; default ``$TIFFIN_HOME/jobs``. Servers sharing
a store share it too (one folder on shared storage), so a job taken over goes on where it stopped."""


def _positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    from tiffin.errors import TiffinError

    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise TiffinError(f"{name}={raw!r} is not a whole number; set it to a positive integer") from None
    if value < 1:
        raise TiffinError(f"{name}={value} must be at least 1")
    return value


def log_max_bytes(environ: Mapping[str, str] = os.environ) -> int:
    """``$TIFFIN_LOG_MAX_BYTES``: a log file past this size is rotated (a server setting)."""
    return _positive_int(environ, LOG_MAX_BYTES_ENV, 10 * 1024 * 1024)


def log_backups(environ: Mapping[str, str] = os.environ) -> int:
    """``$TIFFIN_LOG_BACKUPS``: rotated copies kept of each log file (a server setting)."""
    return _positive_int(environ, LOG_BACKUPS_ENV, 3)


def max_instances(environ: Mapping[str, str] = os.environ) -> int:
    """``$TIFFIN_MAX_INSTANCES``: the cap on an online deployment's ``instance_count`` (a server setting)."""
    return _positive_int(environ, MAX_INSTANCES_ENV, 16)


def max_workers(environ: Mapping[str, str] = os.environ) -> int:
    """``$TIFFIN_MAX_WORKERS``: the cap on one batch job's concurrent workers (a server setting)."""
    return _positive_int(environ, MAX_WORKERS_ENV, 32)


def max_input_files(environ: Mapping[str, str] = os.environ) -> int:
    """``$TIFFIN_MAX_INPUT_FILES``: the cap on one batch job's input files (a server setting)."""
    return _positive_int(environ, MAX_INPUT_FILES_ENV, 100_000)


def input_roots(environ: Mapping[str, str] = os.environ) -> tuple[Path, ...]:
    """``$TIFFIN_INPUT_ROOTS``: folders an endpoint credential's batch inputs may come from, besides the
    datastores (absolute paths, ``os.pathsep``-separated; empty entries ignored)."""
    from tiffin.errors import TiffinError

    roots = []
    for entry in (environ.get(INPUT_ROOTS_ENV) or "").split(os.pathsep):
        if not entry.strip():
            continue
        root = Path(entry).expanduser()
        if not root.is_absolute():  # relative to what? The server's directory is not the user's intent
            raise TiffinError(f"{INPUT_ROOTS_ENV} entry {entry!r} is not an absolute path; give absolute folders")
        roots.append(root)
    return tuple(roots)


def input_url_prefixes(environ: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """``$TIFFIN_INPUT_URL_PREFIXES``: the ``http(s)://`` prefixes an endpoint credential's inputs may be under."""
    from tiffin.errors import TiffinError

    prefixes = tuple(p for p in (environ.get(INPUT_URL_PREFIXES_ENV) or "").replace(",", " ").split() if p)
    for prefix in prefixes:
        if not prefix.startswith(("http://", "https://")) or "/" not in prefix.split("://", 1)[1]:
            raise TiffinError(
                f"{INPUT_URL_PREFIXES_ENV} entry {prefix!r} is not a URL prefix; give http(s)://HOST/PATH/ entries "
                "(a host and a path ending in /)"
            )
    return prefixes


def input_url_max_bytes(environ: Mapping[str, str] = os.environ) -> int:
    """``$TIFFIN_INPUT_URL_MAX_BYTES``: the cap on one downloaded batch input (default 1 GiB)."""
    return _positive_int(environ, INPUT_URL_MAX_BYTES_ENV, 1 << 30)


def input_url_timeout(environ: Mapping[str, str] = os.environ) -> int:
    """``$TIFFIN_INPUT_URL_TIMEOUT``: seconds one batch input's download may take (default 600)."""
    return _positive_int(environ, INPUT_URL_TIMEOUT_ENV, 600)


def tiffin_home(environ: Mapping[str, str] = os.environ) -> Path:
    """``$TIFFIN_HOME`` or ``~/.tiffin``: the store, replica logs, model mounts, the admin token."""
    return Path(environ.get("TIFFIN_HOME") or Path.home() / ".tiffin").expanduser()


def node_id(home: Path, environ: Mapping[str, str] = os.environ) -> str:
    """``$TIFFIN_NODE_ID``, else ``HOSTNAME-DIGEST`` of this host and ``home`` (see :data:`NODE_ID_ENV`)."""
    import hashlib
    import socket

    from tiffin.errors import TiffinError

    given = environ.get(NODE_ID_ENV)
    if given:
        if len(given) > 255 or not given.isprintable():
            raise TiffinError(f"{NODE_ID_ENV} must be at most 255 printable characters")
        return given
    digest = hashlib.sha256(str(home.expanduser().resolve()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()}-{digest}"


def node_lease(environ: Mapping[str, str] = os.environ) -> float:
    """``$TIFFIN_NODE_LEASE`` in seconds (default 10; at least 0.5)."""
    from tiffin.errors import TiffinError

    raw = environ.get(NODE_LEASE_ENV) or "10"
    try:
        value = float(raw)
    except ValueError:
        raise TiffinError(f"{NODE_LEASE_ENV}={raw!r} is not a number of seconds") from None
    if not value >= 0.5:
        raise TiffinError(f"{NODE_LEASE_ENV}={raw} must be at least 0.5 seconds")
    return value


def assets_root(home: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """``$TIFFIN_ASSETS_DIR``, else ``home/assets`` (see :data:`ASSETS_DIR_ENV`)."""
    given = environ.get(ASSETS_DIR_ENV)
    return Path(given).expanduser() if given else home / "assets"


def jobs_root(home: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """``$TIFFIN_JOBS_DIR``, else ``home/jobs`` (see :data:`JOBS_DIR_ENV`)."""
    given = environ.get(JOBS_DIR_ENV)
    return Path(given).expanduser() if given else home / "jobs"


def advertise_url(environ: Mapping[str, str] = os.environ) -> str | None:
    """``$TIFFIN_ADVERTISE_URL``: where the other servers sharing the store reach this one (default: the
    URL it serves on, with ``127.0.0.1`` for every interface, which only servers on this machine can use)."""
    given = environ.get(ADVERTISE_URL_ENV)
    return given.rstrip("/") if given else None


def tiffin_url(environ: Mapping[str, str] = os.environ) -> str:
    """``$TIFFIN_URL``: where the CLI and SDK find ``tiffin serve``."""
    return (environ.get("TIFFIN_URL") or DEFAULT_URL).rstrip("/")


def configure_logging(log_file: Path | None = None, environ: Mapping[str, str] = os.environ) -> None:
    """tiffin's own messages at INFO on stderr, with time and process; once per process. With ``log_file``
    (``tiffin serve``: ``TIFFIN_HOME/logs/server.log``), also to that file, rotated at ``TIFFIN_LOG_MAX_BYTES``
    with ``TIFFIN_LOG_BACKUPS`` copies kept.

    Only the ``tiffin`` logger here: a replica sets the root logger to INFO itself, as Azure's server does
    (:mod:`tiffin.replica.console`), and ``tiffin serve``'s libraries keep Python's WARNING default.
    """
    logger = logging.getLogger("tiffin")
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    if log_file is not None and not any(
        getattr(h, "baseFilename", None) == os.path.abspath(log_file) for h in logger.handlers
    ):
        from logging.handlers import RotatingFileHandler

        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = RotatingFileHandler(
            log_file, maxBytes=log_max_bytes(environ), backupCount=log_backups(environ), encoding="utf-8"
        )
        to_file.setFormatter(formatter)
        logger.addHandler(to_file)


def parse_cpu_list(text: str) -> frozenset[int]:
    """``"1-3,5"`` as ``{1, 2, 3, 5}`` (the ``taskset -c`` syntax); raise TiffinError naming the mistake."""
    from tiffin.errors import TiffinError

    cpus: set[int] = set()
    for part in text.replace(" ", "").split(","):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise TiffinError(f"CPU list '{text}' is not valid: write CPU numbers and ranges like 1-3,5")
        cpus.update(range(int(low), int(high if dash else low) + 1))
    return frozenset(cpus)


def pin_to_cpus(cpus: frozenset[int]) -> None:
    """Run this process (and the processes it starts later) on ``cpus`` only; where it is not possible
    (another OS, CPUs this machine lacks) say so once and carry on unpinned."""
    try:
        os.sched_setaffinity(0, cpus)
    except (AttributeError, OSError, ValueError) as exc:
        logging.getLogger("tiffin").warning("could not pin to CPUs %s: %s", sorted(cpus), exc)
