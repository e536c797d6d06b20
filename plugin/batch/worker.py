"""A batch worker process: ``init()`` once, then one mini-batch after another, as the job's pool sends them.

Started by :class:`tiffin.batch.pool.LocalPool`, forked from its fork server into :func:`run_worker`. It
talks to the pool over a pipe (a :class:`multiprocessing.connection.Connection`), so what the scoring code
prints goes to the job's log, not into the protocol:

* pool → worker: the job's settings once, then ``("run", index, items, part_path)`` per mini-batch,
  or ``("stop",)``;
* worker → pool: ``("ready",)`` or ``("load_failed", message)``, then ``("done", index, rows,
  failed_items)`` or ``("error", index, message)`` per mini-batch.

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
from typing import Any

__all__ = ["OUTPUT_PATH_ENV", "WorkerSettings", "make_scorer", "run_worker", "serve", "write_part"]


def write_part(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: whole, or not at all (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


WorkerSettings = dict[str, Any]
"""``{"spec": batch deployment spec (dict), "home": TIFFIN_HOME, "identity": "batch/ENDPOINT/DEPLOYMENT/MODEL",
"output_path": the job's output folder}``.

``identity`` is the model mount's (:func:`tiffin.paths.batch_mount_identity`). ``output_path`` becomes
``AZUREML_BI_OUTPUT_PATH``, as Azure's batch driver sets it: the folder of the job's ``score`` output, where
``append_row`` puts ``output_file_name`` and where scoring code writes files of its own (Azure's "custom
outputs": a ``summary_only`` deployment writing one file per input there)."""

OUTPUT_PATH_ENV = "AZUREML_BI_OUTPUT_PATH"


def make_scorer(settings: WorkerSettings) -> Any:
    """The deployment's scorer, its model laid out under ``AZUREML_MODEL_DIR`` for a scoring script."""
    from tiffin.paths import model_mounts_dir
    from tiffin.replica.layout import stage_model
    from tiffin.runners.batch import batch_scorer_for
    from tiffin.runners.factory import is_mlflow_model
    from tiffin.specs import BatchDeployment, parse_spec

    deployment = parse_spec(settings["spec"], BatchDeployment, "batch deployment").spec
    if settings.get("output_path"):  # set before init() runs: Azure's scripts read it there
        os.environ[OUTPUT_PATH_ENV] = settings["output_path"]
    model_dir = None
    if not is_mlflow_model(deployment):
        model_dir = stage_model(deployment, model_mounts_dir(Path(settings["home"])), identity=settings["identity"])
    return batch_scorer_for(deployment, model_dir=model_dir)


def _exit_with_parent() -> None:
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
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    os.environ.update(env)
    # Azure's logging_level: what the scoring code logs at that level or above reaches the job log.
    level = str((settings.get("spec") or {}).get("settings", {}).get("logging_level", "info")).upper()
    logging.basicConfig(
        level=getattr(logging, level, logging.INFO), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _exit_with_parent()
    with contextlib.suppress(BrokenPipeError, EOFError, OSError):
        os._exit(serve(conn, settings))
    os._exit(1)
