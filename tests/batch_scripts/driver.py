"""An Azure batch scoring script for tiffin's batch tests: ``init()`` once, ``run(mini_batch)`` per mini-batch.

Unmodified Azure contract: ``mini_batch`` is a list of file paths, the result has one row per file. What it
does besides is chosen by environment variables (the deployment's ``settings.environment_variables``):

* ``BATCH_INIT_FAIL=raise|exit``: ``init()`` raises (a broken model), or ends its process with exit code 3
  (a native library that aborts);
* ``BATCH_LABEL``: a word put in the last column of every row (tells deployments apart);
* ``BATCH_SLEEP``: seconds each ``run()`` call sleeps first (a slow model); a job's literal input ``sleep``
  (``invoke --set inputs.sleep=S``, which reaches the script as ``AZUREML_BI_SLEEP``) overrides it;
* ``BATCH_PID_DIR``: ``init()`` creates the file ``<pid>`` in that folder (tests find every worker process);
* ``BATCH_BUSY_DIR``: while ``run()`` works, the file ``<pid>`` exists in that folder (tests find a busy worker);
* ``BATCH_FAIL_BAD=1``: ``run()`` raises for a mini-batch holding a file whose name contains ``bad``;
* ``BATCH_MARKERS`` + ``BATCH_FIRST_ATTEMPT=raise|hang``: the first attempt of each mini-batch raises, or
  hangs for ten minutes (a marker file per mini-batch in the folder ``BATCH_MARKERS`` remembers it);
* ``BATCH_SIDE_LOG``: a file that gets one line ``<pid> <file name>`` per file scored;
* ``BATCH_RETURN=dataframe``: return a pandas DataFrame instead of a list of lists.

``run()`` logs one line at INFO per call (the deployment's ``logging_level`` decides whether it shows).

Each row: ``file name, count, value, label``: for a ``.csv`` file (columns ``x,y``) its number of rows and
``FACTOR * sum(x)``; for any other file its number of words and its first word upper-cased. ``FACTOR`` is
read in ``init()`` from ``$AZUREML_MODEL_DIR/model/factor.txt``.
"""

import csv
import hashlib
import logging
import os
import time
from pathlib import Path

FACTOR = None
INIT_PID = None


def init():
    global FACTOR, INIT_PID
    if os.environ.get("BATCH_INIT_FAIL") == "exit":
        os._exit(3)
    if os.environ.get("BATCH_INIT_FAIL"):
        raise OSError("the model file is corrupt (on purpose)")
    FACTOR = int((Path(os.environ["AZUREML_MODEL_DIR"]) / "model" / "factor.txt").read_text())
    INIT_PID = os.getpid()
    if os.environ.get("BATCH_PID_DIR"):
        (Path(os.environ["BATCH_PID_DIR"]) / str(INIT_PID)).touch()


def _first_attempt(mini_batch):
    """Whether this mini-batch runs for the first time (creates its marker file if so)."""
    key = hashlib.sha1("\n".join(sorted(mini_batch)).encode()).hexdigest()
    try:
        with open(Path(os.environ["BATCH_MARKERS"]) / key, "x"):
            return True
    except FileExistsError:
        return False


def _score(path):
    name = os.path.basename(path)
    if path.endswith(".csv"):
        with open(path, newline="") as file:
            xs = [float(row["x"]) for row in csv.DictReader(file)]
        return [name, len(xs), FACTOR * sum(xs)]
    words = Path(path).read_text().split()
    return [name, len(words), words[0].upper() if words else ""]


def run(mini_batch):
    assert FACTOR is not None and os.getpid() == INIT_PID, "init() did not run in this process"
    logging.getLogger("driver").info("scoring %d file(s) in process %d", len(mini_batch), os.getpid())
    busy = Path(os.environ["BATCH_BUSY_DIR"]) / str(os.getpid()) if os.environ.get("BATCH_BUSY_DIR") else None
    if busy is not None:
        busy.touch()
    try:
        mode = os.environ.get("BATCH_FIRST_ATTEMPT")
        if mode and _first_attempt(mini_batch):
            if mode == "raise":
                raise RuntimeError("the first attempt of this mini-batch fails on purpose")
            time.sleep(600)
        time.sleep(float(os.environ.get("AZUREML_BI_SLEEP") or os.environ.get("BATCH_SLEEP") or 0))
    finally:
        if busy is not None:
            busy.unlink(missing_ok=True)
    if os.environ.get("BATCH_FAIL_BAD") and any("bad" in os.path.basename(p) for p in mini_batch):
        raise ValueError(f"cannot score {[os.path.basename(p) for p in mini_batch]}")
    label = os.environ.get("BATCH_LABEL", "")
    rows = [[*_score(path), label] for path in mini_batch]
    side_log = os.environ.get("BATCH_SIDE_LOG")
    if side_log:
        with open(side_log, "a") as log:
            log.writelines(f"{os.getpid()} {row[0]}\n" for row in rows)
    if os.environ.get("BATCH_RETURN") == "dataframe":
        import pandas as pd

        return pd.DataFrame(rows, columns=["file", "count", "value", "label"])
    return rows
