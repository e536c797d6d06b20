"""Batch scoring: one mini-batch of input files in, output rows out, as Azure's batch driver does it.

Two scorers, chosen by :func:`batch_scorer_for` from a batch deployment spec:

* :class:`ScriptBatchScorer`: an Azure batch scoring script, unmodified. ``init()`` runs once per
  worker; ``run(mini_batch)`` gets the list of file paths and returns a list or a pandas DataFrame,
  whose elements (rows) go to the output as they are. Azure counts each returned element as one input
  that succeeded, so fewer elements than inputs count the difference as failed.
* :class:`MLflowBatchScorer`: an MLflow model with no script, Azure's behaviour: each CSV or parquet file is
  read into a DataFrame, ``predict`` is called once per file, and each prediction becomes a row
  ``row,prediction,file``: the row's index in its file, the prediction as ``predict`` returned it, the file's
  name (Azure's columns, read back by its notebooks with ``pd.read_csv(path, names=["row", "prediction",
  "file"])``).

Rows are written as Azure's batch driver (ParallelRunStep's ``append_row``) writes what ``run()`` returns
(:func:`write_rows`): a DataFrame's rows separated by spaces, without header or index (Azure's notebooks read
them with ``pd.read_csv(path, header=None, names=[...], sep=" ")``); a list's elements one per line, each as
``str(element)``. The job's writer concatenates the mini-batches' parts.

The scorer is described by plain settings (:func:`scorer_settings`, computed from the spec on tiffin's own
Python) and built from them in the worker (:func:`scorer_from_settings`): a worker may run in the deployment's
environment, on Python 3.8 with no pydantic, so this module imports only the standard library (pandas, numpy
and MLflow come from that environment, any version, when the scorer needs them).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tiffin.errors import RunnerLoadError, ScoringError

__all__ = [
    "BatchOutput",
    "BatchScorer",
    "MLflowBatchScorer",
    "ScriptBatchScorer",
    "batch_scorer_for",
    "scorer_from_settings",
    "scorer_settings",
    "write_rows",
]

_TABULAR = (".csv", ".parquet", ".pq")


@dataclass
class BatchOutput:
    """What one mini-batch produced: its output rows as CSV text, how many, and how many inputs failed."""

    csv: bytes
    rows: int
    failed_items: int = 0


class BatchScorer(Protocol):
    """Scores mini-batches in a worker process; ``load`` once, then ``score`` per mini-batch."""

    def load(self) -> None:
        """Load the model / run ``init()``; RunnerLoadError on failure."""

    def score(self, items: Sequence[str]) -> BatchOutput:
        """Score one mini-batch of file paths; raise to fail it (it is then retried)."""


@dataclass(frozen=True)
class ScriptBatchScorer:
    """An Azure batch scoring script (``init()``, ``run(mini_batch)``)."""

    code_dir: Path
    scoring_script: str
    model_dir: Path | None = None
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    _state: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def load(self) -> None:
        """Import the script and call its ``init()`` (see :func:`tiffin.runners.script.import_scoring_script`)."""
        from tiffin.runners.script import ScriptRunnerConfig, call_init, import_scoring_script

        config = ScriptRunnerConfig(self.code_dir, self.scoring_script, self.model_dir, self.environment_variables)
        module, script = import_scoring_script(config)
        call_init(module, script)
        self._state["run"] = module.run

    def score(self, items: Sequence[str]) -> BatchOutput:
        """``run(mini_batch)`` with the list of paths; its list or DataFrame becomes the rows."""
        try:
            result = self._state["run"](list(items))
        except Exception as exc:
            raise ScoringError(f"run() raised {type(exc).__name__}: {exc}") from exc
        if result is None:
            raise ScoringError("run() returned None; return a list or a pandas DataFrame with one row per input")
        csv_bytes, rows = write_rows(result)
        return BatchOutput(csv_bytes, rows, failed_items=max(0, len(items) - rows))


@dataclass(frozen=True)
class MLflowBatchScorer:
    """An MLflow model scored file by file, as Azure's no-code MLflow batch deployments do."""

    model_uri: str
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    _state: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def load(self) -> None:
        """Load the model with ``mlflow.pyfunc``."""
        os.environ.update(self.environment_variables)
        try:
            import mlflow.pyfunc

            self._state["model"] = mlflow.pyfunc.load_model(self.model_uri)
        except Exception as exc:
            raise RunnerLoadError(f"cannot load the MLflow model {self.model_uri}: {exc}") from exc

    def score(self, items: Sequence[str]) -> BatchOutput:
        """Read each file, predict, and write ``row,prediction,file`` rows in the files' row order."""
        import pandas as pd

        model = self._state["model"]
        frames = []
        for path in items:
            data = _read_table(path)
            predictions = model.predict(data)
            frame = _prediction_frame(predictions, len(data))
            # allow_duplicates: a model's own "row" or "file" column stays beside Azure's.
            frame.insert(0, "row", range(len(frame)), allow_duplicates=True)
            frame.insert(len(frame.columns), "file", os.path.basename(path), allow_duplicates=True)
            frames.append(frame)
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return BatchOutput(_frame_csv(out), len(out))


def _frame_csv(frame: Any) -> bytes:
    """A DataFrame as header-less CSV: Arrow's writer (about ten times pandas' ``to_csv``) where it takes the
    columns, else pandas'. Both write each number so that it reads back as the same double; strings are
    quoted only where they must be, as pandas does."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pa_csv

        texts = [i for i, dtype in enumerate(frame.dtypes) if dtype.kind == "O"]  # by position: names may repeat
        plain = all(not any(ch in str(v) for v in frame.iloc[:, i].unique() for ch in ',"\r\n') for i in texts)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        buffer = io.BytesIO()
        options = pa_csv.WriteOptions(include_header=False, quoting_style="none" if plain else "needed")
        pa_csv.write_csv(table, buffer, options)
        return buffer.getvalue()
    except (ImportError, ValueError, TypeError, NotImplementedError):  # Arrow's errors derive from these
        return frame.to_csv(header=False, index=False).encode()


def _read_table(path: str) -> Any:
    import pandas as pd

    suffix = Path(path).suffix.lower()
    if suffix not in _TABULAR:
        raise ScoringError(
            f"file type '{suffix or path}' is not supported by MLflow batch deployments without a scoring script "
            f"(CSV and parquet are); give the deployment a code_configuration to read {os.path.basename(path)}"
        )
    if suffix == ".csv":
        # pyarrow's reader (MLflow brings pyarrow) parses several times faster than pandas' own.
        try:
            return pd.read_csv(path, engine="pyarrow")
        except (ImportError, ValueError):  # no pyarrow, or a pandas before 1.4 that has no such engine
            return pd.read_csv(path)
    return pd.read_parquet(path)


def _prediction_frame(predictions: Any, rows: int) -> Any:
    """MLflow's predictions as a DataFrame with one row per input row: a column ``prediction``, or the
    model's own columns when it returns a DataFrame."""
    import numpy as np
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        return predictions.reset_index(drop=True)
    if isinstance(predictions, pd.Series):
        return pd.DataFrame({"prediction": predictions.to_numpy()})
    array = np.asarray(predictions)
    if array.ndim > 1 and len(array) == rows:  # a vector per row: one JSON list per row
        return pd.DataFrame({"prediction": [json.dumps(v) for v in array.tolist()]})
    return pd.DataFrame({"prediction": array.reshape(-1) if array.ndim else [array.item()]})


def write_rows(result: Any) -> tuple[bytes, int]:
    """``run()``'s result as Azure's ``append_row`` writes it, and its row count: a DataFrame's rows with their
    values separated by spaces (no header, no index; a value holding a space is quoted, so
    ``pd.read_csv(path, header=None, sep=" ")`` reads it back), or one line per list element, ``str(element)``
    (so a list ``["a.csv", 1]`` is the line ``['a.csv', 1]``, as Azure writes it)."""
    if type(result).__name__ == "DataFrame" and hasattr(result, "to_csv"):
        try:
            text = result.to_csv(sep=" ", header=False, index=False, lineterminator="\n")
        except TypeError:  # pandas before 1.5 spells it line_terminator
            text = result.to_csv(sep=" ", header=False, index=False, line_terminator="\n")
        return text.encode(), len(result)
    if isinstance(result, (str, bytes)) or not (isinstance(result, Sequence) or hasattr(result, "tolist")):
        raise ScoringError(
            f"run() returned {type(result).__name__}; return a list or a pandas DataFrame with one row per input"
        )
    lines = [str(element) for element in result]
    return "".join(f"{line}\n" for line in lines).encode(), len(lines)


def scorer_settings(deployment: Any, *, model_dir: Path | None) -> dict[str, Any]:
    """What a worker needs to build the scorer of a batch deployment spec, as plain JSON-able values (computed on
    tiffin's own Python, which reads specs): ``{"kind": "script", "code_dir", "scoring_script", "model_dir",
    "environment_variables"}`` or ``{"kind": "mlflow", "model_uri", "environment_variables"}``. ``model_dir`` is
    the model laid out as ``AZUREML_MODEL_DIR`` (:func:`tiffin.replica.layout.stage_model`), for a script."""
    from tiffin.runners.factory import is_mlflow_model

    code = deployment.code_configuration
    env = {str(k): str(v) for k, v in (deployment.environment_variables or {}).items()}
    if code is not None and code.scoring_script:
        return {
            "kind": "script",
            "code_dir": str(code.code),
            "scoring_script": code.scoring_script,
            "model_dir": str(model_dir) if model_dir is not None else None,
            "environment_variables": env,
        }
    if is_mlflow_model(deployment):
        model = deployment.model
        return {"kind": "mlflow", "model_uri": model if isinstance(model, str) else model.path,
                "environment_variables": env}  # fmt: skip
    raise RunnerLoadError(
        "a batch deployment needs code_configuration (code + scoring_script) or an MLflow model "
        "(model.type: mlflow_model) to run without one"
    )


def scorer_from_settings(settings: Mapping[str, Any]) -> BatchScorer:
    """The scorer :func:`scorer_settings` describes (in the worker, on whatever Python the job runs on)."""
    env = {str(k): str(v) for k, v in (settings.get("environment_variables") or {}).items()}
    if settings.get("kind") == "script":
        model_dir = settings.get("model_dir")
        return ScriptBatchScorer(
            Path(settings["code_dir"]), settings["scoring_script"], Path(model_dir) if model_dir else None, env
        )
    if settings.get("kind") == "mlflow":
        return MLflowBatchScorer(str(settings["model_uri"]), env)
    raise RunnerLoadError(f"unknown batch scorer kind {settings.get('kind')!r}; expected 'script' or 'mlflow'")


def batch_scorer_for(deployment: Any, *, model_dir: Path | None) -> BatchScorer:
    """The scorer of a batch deployment spec: its scoring script, else its MLflow model."""
    return scorer_from_settings(scorer_settings(deployment, model_dir=model_dir))
