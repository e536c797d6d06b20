"""A batch worker process: ``init()`` once, then one mini-batch after another, as the job's pool sends them.

Started by :class:`tiffin.batch.pool.LocalPool` in one of two ways: forked from its fork server into
:func:`run_worker` (a deployment with no environment: tiffin's own Python, modules preloaded), or as
``ENV/bin/python -m tiffin.batch.worker_main`` (:func:`main`) for a deployment that declares an environment,
where it imports tiffin from the runtime copy (:mod:`tiffin.environments.runtime`). Either way it talks to the
pool over a :class:`multiprocessing.connection.Connection`, so what the scoring code prints goes to the job's
log, not into the protocol:

* pool → worker: the job's settings once (``("settings", settings)``, sent only to a worker started as a
  process of its own; a forked one gets them as an argument), then ``("run", index, items, part_path)`` per
  mini-batch, or ``("stop",)``;
* worker → pool: ``("ready",)`` or ``("load_failed", message)``, then ``("done", index, rows,
  failed_items)`` or ``("error", index, message)`` per mini-batch.

Messages are tuples of str, int, lists and dicts of them, pickled at protocol 4 or 5 (both ends may be different
Pythons, 3.8 at the oldest, which reads 5). This module imports only the standard library: the settings were
computed from the spec on tiffin's side (:func:`tiffin.batch.launch.worker_settings`), so a worker never parses
YAML or loads pydantic.

The mini-batch's output part is written to a temporary file and renamed into place, so a part either
exists whole or not at all. A worker whose pool process goes away exits (it must not outlive the
server that started it, nor write parts nobody waits for).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Dict  # noqa: UP035

__all__ = [
    "OUTPUT_PATH_ENV", "WorkerSettings", "main", "make_scorer", "run_spare", "run_worker", "serve", "write_part",
]  # fmt: skip


def write_part(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: whole, or not at all (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


WorkerSettings = Dict[str, Any]  # noqa: UP006  (a value, evaluated on Python 3.8 too)
"""``{"scorer": the scorer's settings (:func:`tiffin.runners.batch.scorer_settings`), "output_path": the job's
output folder, "logging_level": "INFO"...}``, plain JSON-able values.

``output_path`` becomes ``AZUREML_BI_OUTPUT_PATH``, as Azure's batch driver sets it: the folder of the job's
``score`` output, where ``append_row`` puts ``output_file_name`` and where scoring code writes files of its own
(Azure's "custom outputs": a ``summary_only`` deployment writing one file per input there)."""

OUTPUT_PATH_ENV = "AZUREML_BI_OUTPUT_PATH"


def make_scorer(settings: WorkerSettings) -> Any:
    """The deployment's scorer, from the settings the pool computed (its model already laid out)."""
    from tiffin.runners.batch import scorer_from_settings

    if settings.get("output_path"):  # set before init() runs: Azure's scripts read it there
        os.environ[OUTPUT_PATH_ENV] = settings["output_path"]
    return scorer_from_settings(settings["scorer"])


_WATCHING: dict[str, bool] = {}


def _exit_with_parent() -> None:
    """Exit when the process that started this one goes (once per process, however often called)."""
    if _WATCHING.setdefault("parent", False):
        return
    _WATCHING["parent"] = True
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="tiffin-parent-watch", daemon=True).start()


def serve(conn: Connection, settings: WorkerSettings) -> int:
    """Load the scorer, then score what ``conn`` sends until told to stop; the exit code."""
    from tiffin.errors import TiffinError

    try:
        scorer = make_scorer(settings)
        scorer.load()
    except TiffinError as exc:
        conn.send(("load_failed", exc.message))
        return 1
    except Exception as exc:
        traceback.print_exc()
        conn.send(("load_failed", f"{type(exc).__name__}: {exc}"))
        return 1
    conn.send(("ready",))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return 0  # the pool is gone
        if message[0] != "run":
            return 0
        _, index, items, part = message
        try:
            output = scorer.score(items)
            if part:
                write_part(Path(part), output.csv)
        except Exception as exc:
            print(f"mini-batch {index} failed:", file=sys.stderr)
            traceback.print_exc()
            text = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            conn.send(("error", index, text))
            continue
        conn.send(("done", index, output.rows, output.failed_items))


def run_worker(conn: Connection, settings: WorkerSettings, log_path: str, env: dict[str, str]) -> None:
    """A worker forked by the pool: a session of its own, output to the job log, the deployment's variables
    set, then :func:`serve` until stopped."""
    os.setsid()
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.update(env)
    _enter(settings)
    with contextlib.suppress(BrokenPipeError, EOFError, OSError):
        os._exit(serve(conn, settings))
    os._exit(1)


def run_spare(conn: Connection, env: dict[str, str], mlflow_model: str | None, say_warm: bool) -> None:
    """A spare forked by the pool ahead of a job (:meth:`tiffin.batch.pool.LocalPool.keep_spares`): a session of its
    own, the deployment's variables set, the MLflow model's flavour imported (the fork server has the rest), then
    ``("warm",)`` if asked, and idle until a job sends ``("settings", settings, log_path)``; from then on it is
    :func:`run_worker`'s worker, its output on that job's log."""
    os.setsid()
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)
    os.close(quiet)
    os.environ.update(env)
    _warm("", mlflow_model)
    try:
        if say_warm:
            conn.send(("warm",))
        message = conn.recv()
    except (EOFError, OSError):  # the pool went away: no job will take it
        os._exit(0)
    if not (isinstance(message, tuple) and len(message) == 3 and message[0] == "settings"):
        os._exit(2)
    log = os.open(message[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    _enter(message[1])
    with contextlib.suppress(BrokenPipeError, EOFError, OSError):
        os._exit(serve(conn, message[1]))
    os._exit(1)


def main(argv: Any = None) -> int:
    """A worker started on an environment's interpreter (``python -m tiffin.batch.worker_main --fd N``): the pool
    started it in a session of its own with its output on the job log and the deployment's variables set; the
    connection is the inherited socket ``N``, whose first message is the settings.

    ``--spare`` starts it ahead of a job (:func:`tiffin.batch.pool.take_spare`): it imports ``--preload``'s
    modules (comma-separated) and warms an MLflow model's imports (``--warm-mlflow PATH``) while no job waits (then
    sends ``("warm",)`` with ``--say-warm``), then waits for ``("settings", settings, log_path)``: its output goes
    to the job's log from then on."""
    args = list(sys.argv[1:] if argv is None else argv)
    options = _options(args)
    if options is None:
        print("usage: python -m tiffin.batch.worker_main --fd N (started by tiffin's batch pool)", file=sys.stderr)
        return 2
    conn = Connection(int(options["--fd"]))
    spare = "--spare" in options
    if not spare:
        _exit_with_parent()  # before anything that can block: a pool gone while we wait must not leave us behind
    else:  # no watch thread while idle: the pool's end of the socket closing (EOF below) is its going away
        _warm(options.get("--preload", ""), options.get("--warm-mlflow"))
        if "--say-warm" in options:  # a deployment being provisioned waits for this before it is Succeeded
            with contextlib.suppress(OSError):
                conn.send(("warm",))
    try:
        message = conn.recv()
    except (EOFError, OSError):
        return 0
    if not (isinstance(message, tuple) and len(message) in (2, 3) and message[0] == "settings"):
        print(f"tiffin batch worker: expected the settings first, got {message!r:.200}", file=sys.stderr)
        return 2
    settings = message[1]
    if len(message) == 3:  # a spare taken by a job: its output joins the job's log now
        log = os.open(message[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
    _enter(settings)
    try:
        return serve(conn, settings)
    except (BrokenPipeError, EOFError, OSError):
        return 1


def _options(args: list) -> Any:
    """``--fd N`` and the spare's options as a dict; None when they do not parse."""
    options = {}
    while args:
        name = args.pop(0)
        if name in ("--spare", "--say-warm"):
            options[name] = ""
        elif name in ("--fd", "--preload", "--warm-mlflow") and args:
            options[name] = args.pop(0)
        else:
            return None
    return options if options.get("--fd", "").isdigit() else None


def _warm(preload: str, mlflow_model: Any) -> None:
    """Import what the job's scorer will (best effort: a failure here is the scorer's to report when it loads)."""
    import importlib

    for module in filter(None, preload.split(",")):
        with contextlib.suppress(Exception):
            importlib.import_module(module)
    if mlflow_model:
        # Loading the model once imports its flavour's modules (scikit-learn, skops...), most of a worker's start;
        # the model itself is loaded again by the job's scorer, with the job's settings. Built-in flavours only:
        # a custom python_model's load_context is user code, run when a job asks for it, not before.
        with contextlib.suppress(Exception):
            from mlflow.models import Model
            from mlflow.pyfunc import load_model

            flavor = Model.load(mlflow_model).flavors.get("python_function") or {}
            loader = str(flavor.get("loader_module") or "")
            if loader.startswith("mlflow.") and loader != "mlflow.pyfunc.model":
                load_model(mlflow_model)


def _enter(settings: WorkerSettings) -> None:
    """What both kinds of worker do before loading the scorer: line-buffered output (the job log is read while
    the job runs), logging at the deployment's level, and exit with the pool."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    # Azure's logging_level: what the scoring code logs at that level or above reaches the job log.
    level = str(settings.get("logging_level") or "INFO").upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _exit_with_parent()
