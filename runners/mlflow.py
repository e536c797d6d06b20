"""Serves an MLflow model with no scoring script, as Azure ML does for ``type: mlflow_model``.

The model is loaded with ``mlflow.pyfunc.load_model`` from a local folder or from ``runs:/…`` and
``models:/name/version`` / ``models:/name@alias`` (resolved against ``MLFLOW_TRACKING_URI`` /
``MLFLOW_REGISTRY_URI``). Requests are parsed and answered by MLflow's own scoring-server code
(``mlflow.pyfunc.scoring_server.invocations``), so every payload ``mlflow models serve`` accepts works
the same here (``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``, CSV); Azure's own
``{"input_data": …}`` shape for MLflow deployments is accepted too. The model signature becomes the
swagger schema, and a payload that does not fit it answers 422 with MLflow's reason (the missing or
mistyped column).
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tiffin.errors import BadRequestError, RunnerLoadError, ScoringError, ValidationError
from tiffin.runners import _json
from tiffin.runners.protocol import Runner, RunnerSchema, ScoreRequest, ScoreResponse

__all__ = ["MLflowRunner", "MLflowRunnerConfig"]

logger = logging.getLogger("tiffin.runners.mlflow")

_JSON_TYPES = {
    "double": "number", "float": "number", "long": "integer", "integer": "integer", "boolean": "boolean",
    "string": "string", "binary": "string", "datetime": "string",
}  # fmt: skip


# How MLflow words a payload that parses but does not fit the model signature (answered 422, not 400).
_SIGNATURE_HINTS = ("schema", "missing inputs", "signature", "failed to convert column")


@dataclass(frozen=True)
class MLflowRunnerConfig:
    """Where the model is and the environment it loads in."""

    model_uri: str
    environment_variables: Mapping[str, str] = field(default_factory=dict)


class MLflowRunner(Runner):
    """A :class:`~tiffin.runners.Runner` over an MLflow model (any pyfunc flavor)."""

    score_paths = ("/score", "/invocations")
    """``/invocations`` is MLflow's own scoring route: clients of ``mlflow models serve`` work unchanged."""
    v2_input_key = "inputs"
    """V2 input tensors reach MLflow as its ``inputs`` payload (one entry per input name)."""

    def __init__(self, config: MLflowRunnerConfig) -> None:
        self.config = config
        self._model: Any = None
        self._input_schema: Any = None
        self._numeric_columns: tuple[str, ...] | None = None
        self._schema = RunnerSchema()

    def load(self) -> None:
        """Load the model (MLflow resolves ``runs:/`` and ``models:/`` against the tracking URI)."""
        os.environ.update(self.config.environment_variables)
        try:
            import mlflow.pyfunc
        except ImportError as exc:  # pragma: no cover - mlflow is a dependency of tiffin
            raise RunnerLoadError("MLflow deployments need the mlflow package: pip install mlflow") from exc
        try:
            self._model = mlflow.pyfunc.load_model(self.config.model_uri)
        except Exception as exc:
            logger.error("loading %s failed:\n%s", self.config.model_uri, traceback.format_exc())
            raise RunnerLoadError(
                f"cannot load the MLflow model {self.config.model_uri}: {exc}; check model.path (a folder with an "
                "MLmodel file, runs:/RUN/PATH or models:/NAME/VERSION) and MLFLOW_TRACKING_URI"
            ) from exc
        self._input_schema = self._model.metadata.get_input_schema()
        self._numeric_columns = _numeric_columns(self._input_schema)
        self._schema = RunnerSchema(
            input=_request_schema(self._input_schema),
            output={"type": "object", "properties": {"predictions": {"type": "array", "items": {}}}},
        )

    def health(self) -> bool:
        """True once the model is loaded."""
        return self._model is not None

    def close(self) -> None:
        """Drop the model."""
        self._model = None

    def schema(self) -> RunnerSchema:
        """The request schema derived from the model signature."""
        return self._schema

    def predict(self, request: ScoreRequest) -> ScoreResponse:
        """Score with MLflow's scoring-server logic; map its input errors to 400/422."""
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import invocations

        if request.method != "POST":
            raise BadRequestError("MLflow deployments score POST requests with a JSON or CSV body")
        content_type = request.headers.get("content-type") or "application/json"
        body: Any = request.body
        if content_type.split(";")[0].strip() in ("application/json", "application/x-www-form-urlencoded", ""):
            content_type, body = "application/json", _from_azure_shape(request.body)
            fast = self._fast_predict(body)
            if fast is not None:
                return fast
        try:
            answer = invocations(body, content_type, self._model, self._input_schema)
        except MlflowException as exc:
            message = exc.message.split("\nError: ", 1)[-1]  # MLflow prefixes the whole input's repr
            if any(hint in message.lower() for hint in _SIGNATURE_HINTS):
                raise ValidationError(message) from None
            raise BadRequestError(message) from None
        except Exception as exc:
            logger.error("the MLflow model raised:\n%s", traceback.format_exc())
            raise ScoringError("the model raised an error while predicting; see the replica's log") from exc
        return ScoreResponse(
            body=answer.response.encode() if isinstance(answer.response, str) else answer.response,
            status=answer.status,
            content_type=answer.mimetype or "application/json",
        )

    def _fast_predict(self, body: bytes) -> ScoreResponse | None:
        """Tabular payloads for an all-numeric column signature, without MLflow's generic parsing.

        Profiled, MLflow's JSON → DataFrame parsing and per-column casting were half of a request's
        time. When the signature is numeric columns only and the payload names exactly those columns,
        one float64 array is the same frame MLflow would build; the model's ``predict`` still enforces
        the signature. Anything else (other columns, other types, a value that is not a number) takes
        MLflow's own path, which gives MLflow's own answers and messages.
        """
        columns = self._numeric_columns
        if columns is None:
            return None
        try:
            document = json.loads(body)
        except ValueError:
            return None
        rows = _rows_in_order(document, columns)
        if rows is None:
            return None
        import numpy as np
        import pandas as pd

        try:
            frame = pd.DataFrame(np.asarray(rows, dtype=np.float64), columns=list(columns))
        except (TypeError, ValueError):
            return None
        predictions = self._model.predict(frame)
        if hasattr(predictions, "to_dict"):
            predictions = predictions.to_dict(orient="records")
        return ScoreResponse(body=_json.dumps({"predictions": predictions}))


def _numeric_columns(schema: Any) -> tuple[str, ...] | None:
    """The signature's column names when all are required numeric columns, else None."""
    try:
        specs = schema.inputs
        if not schema.has_input_names() or getattr(schema, "is_tensor_spec", lambda: False)():
            return None
    except AttributeError:
        return None
    names = []
    for spec in specs:
        if getattr(spec, "optional", False) or str(spec.type).split(".")[-1].lower() not in ("double", "float"):
            return None
        names.append(spec.name)
    return tuple(names)


def _rows_in_order(document: Any, columns: tuple[str, ...]) -> list[list[Any]] | None:
    """The payload's rows, columns in signature order, if it is one of the tabular shapes naming
    exactly the signature's columns; None otherwise (MLflow's own path handles it)."""
    if not isinstance(document, dict) or len(document) != 1:
        return None
    ((key, value),) = document.items()
    if key == "dataframe_split" and isinstance(value, dict) and set(value) <= {"columns", "data", "index"}:
        given = value.get("columns")
        data = value.get("data")
        if not isinstance(given, list) or not isinstance(data, list) or set(given) != set(columns):
            return None
        if tuple(given) == columns:
            return data
        order = [given.index(c) for c in columns]
        return [[row[i] for i in order] for row in data] if all(isinstance(r, list) for r in data) else None
    if key in ("dataframe_records", "instances") and isinstance(value, list) and value:
        if not all(isinstance(r, dict) and len(r) == len(columns) for r in value):
            return None
        try:
            return [[r[c] for c in columns] for r in value]
        except KeyError:
            return None
    return None


def _from_azure_shape(body: bytes) -> bytes:
    """Azure ML's MLflow payload ``{"input_data": {"columns", "index", "data"}}`` as MLflow's own."""
    try:
        document = json.loads(body)
    except ValueError:
        return body  # MLflow's parser reports it
    if isinstance(document, dict) and set(document) <= {"input_data", "params"} and "input_data" in document:
        data = document.pop("input_data")
        key = "dataframe_split" if isinstance(data, dict) and "data" in data else "inputs"
        return json.dumps({key: data, **document}).encode()
    return body


def _json_type(mlflow_type: Any) -> str:
    return _JSON_TYPES.get(str(mlflow_type).split(".")[-1].lower(), "string")


def _request_schema(signature_inputs: Any) -> dict[str, Any] | None:
    """The JSON schema of a ``dataframe_records`` / ``dataframe_split`` request for a column signature."""
    if signature_inputs is None:
        return None
    try:
        columns = {
            c.name: _JSON_TYPES.get(str(c.type).split(".")[-1].lower(), "string") for c in signature_inputs.inputs
        }
    except AttributeError:  # tensor signatures have no named columns of simple types
        return {"type": "object", "properties": {"inputs": {}, "instances": {}}}
    record = {"type": "object", "properties": {n: {"type": t} for n, t in columns.items() if n}}
    return {
        "type": "object",
        "properties": {
            "dataframe_records": {"type": "array", "items": record},
            "dataframe_split": {
                "type": "object",
                "properties": {
                    "columns": {"type": "array", "items": {"type": "string", "enum": list(columns)}},
                    "data": {"type": "array", "items": {"type": "array"}},
                },
            },
            "instances": {"type": "array"},
            "inputs": {},
        },
        "example": {"dataframe_split": {"columns": list(columns), "data": []}},
    }
