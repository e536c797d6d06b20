"""Serves an MLflow model with no scoring script, as Azure ML does for ``type: mlflow_model``.

The model is loaded with ``mlflow.pyfunc.load_model`` from a local folder or from ``runs:/…`` and
``models:/name/version`` / ``models:/name@alias`` (resolved against ``MLFLOW_TRACKING_URI`` /
``MLFLOW_REGISTRY_URI``). Requests are parsed and answered by MLflow's own scoring-server code
(``mlflow.pyfunc.scoring_server.invocations``), so every payload ``mlflow models serve`` accepts works
the same here (``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs``, CSV); Azure's own
``{"input_data": …}`` shape for MLflow deployments is accepted too. The model signature becomes the
swagger schema, and a payload that does not fit it answers 422 with MLflow's reason (the missing or
mistyped column).

The MLflow is the deployment environment's, any version from 1.x on (:mod:`tiffin.environments.runtime`).
MLflow before 2.6 has no ``invocations`` function; there the same payloads are read with the parsers of its
``mlflow.utils.proto_json_utils`` (:func:`_legacy_invocations`), and answers have the same
``{"predictions": ...}`` shape, so a client sees one contract whatever MLflow the model was logged with.
MLflow 1.x's own bodies (a bare ``{"columns", "data"}`` frame or a list of records) are read too there.

With MLflow 3.17 or newer, a scikit-learn model with an all-``double`` column signature is scored by
:mod:`tiffin.runners._mlflow_fast`: the model's own ``predict`` on the frame MLflow would build, the answer's
bytes MLflow's (tests/test_mlflow_fast.py); any payload it does not take, and any error, goes through MLflow.
"""

from __future__ import annotations

import io
import json
import logging
import os
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tiffin.errors import BadRequestError, RunnerLoadError, ScoringError, TiffinError, ValidationError
from tiffin.runners import _json, _mlflow_fast
from tiffin.runners.protocol import Runner, RunnerSchema, ScoreRequest, ScoreResponse

__all__ = ["MLflowRunner", "MLflowRunnerConfig"]

logger = logging.getLogger("tiffin.runners.mlflow")

_JSON_TYPES = {
    "double": "number", "float": "number", "long": "integer", "integer": "integer", "boolean": "boolean",
    "string": "string", "binary": "string", "datetime": "string",
}  # fmt: skip


# How MLflow words a payload that parses but does not fit the model signature (answered 422, not 400).
_SIGNATURE_HINTS = ("schema", "missing inputs", "signature", "failed to convert column")

_FRAME_KEYS = ("dataframe_split", "dataframe_records")
_TENSOR_KEYS = ("instances", "inputs")
_SHAPES = "dataframe_split, dataframe_records, instances or inputs (or Azure's input_data)"


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
        self._fast: _mlflow_fast.FastPath | None = None
        self._schema = RunnerSchema()
        self._invocations: Callable[..., Any] | None = None

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
        try:
            self._invocations = _invocations_of(_mlflow_version())
        except ImportError as exc:  # mlflow-skinny: its scoring server needs flask, which it does not bring
            raise RunnerLoadError(
                f"MLflow's scoring server does not import in the deployment's environment ({exc}); add the full "
                "mlflow package (not mlflow-skinny) to its requirements"
            ) from exc
        self._numeric_columns = _numeric_columns(self._input_schema)
        self._fast = _mlflow_fast.plan(self._model, self._input_schema, _mlflow_version())
        logger.info("%s: %s", self.config.model_uri, "fast path (native model)" if self._fast else "MLflow's path")
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

        assert self._invocations is not None, "load() must be called before predict()"
        if request.method != "POST":
            raise BadRequestError("MLflow deployments score POST requests with a JSON or CSV body")
        content_type = request.headers.get("content-type") or "application/json"
        mime_type = content_type.split(";")[0].strip()
        body: Any = request.body
        if mime_type in ("application/json", "application/x-www-form-urlencoded", ""):
            content_type, mime_type = "application/json", "application/json"
            document, body = _azure_as_mlflow(request.body)
            fast = self._fast_predict(document)
            if fast is not None:
                return fast
        if mime_type in ("application/json", "text/csv"):
            # As text, as MLflow's own server hands it over (the CSV reader of many MLflow versions takes only text).
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadRequestError(f"the request body is not UTF-8: {exc}") from None
        try:
            answer = self._invocations(body, content_type, self._model, self._input_schema)
        except MlflowException as exc:
            message = exc.message.split("\nError: ", 1)[-1]  # MLflow prefixes the whole input's repr
            if any(hint in message.lower() for hint in _SIGNATURE_HINTS):
                raise ValidationError(message) from None
            raise BadRequestError(message) from None
        except TiffinError:  # the payload refused before MLflow saw it (_legacy_invocations)
            raise
        except Exception as exc:
            logger.error("the MLflow model raised:\n%s", traceback.format_exc())
            raise ScoringError("the model raised an error while predicting; see the replica's log") from exc
        return ScoreResponse(
            body=answer.response.encode() if isinstance(answer.response, str) else answer.response,
            status=answer.status,
            content_type=answer.mimetype or "application/json",
        )

    def _fast_predict(self, document: Any) -> ScoreResponse | None:
        """A decoded JSON payload answered without MLflow's generic parsing, or None (MLflow's own path).

        With MLflow 3.17 on, a scikit-learn model of a double-column signature is called directly
        (:mod:`tiffin.runners._mlflow_fast`), answering MLflow's bytes. Otherwise, profiled, MLflow's
        JSON → DataFrame parsing and per-column casting were half of a request's
        time. When the signature is numeric columns only and the payload names exactly those columns,
        one float64 array is the same frame MLflow would build; the model's ``predict`` still enforces
        the signature. Anything else (other columns, other types, a value that is not a number) takes
        MLflow's own path, which gives MLflow's own answers and messages.
        """
        if self._fast is not None:
            answer = self._fast.answer(document)
            return None if answer is None else ScoreResponse(body=answer.encode(), content_type="application/json")
        columns = self._numeric_columns
        if columns is None:
            return None
        rows = _rows_in_order(document, columns)
        # JSON floats only: numpy would also read true, 1 or "1.5" as a float where MLflow refuses or casts them.
        if rows is None or not all(isinstance(r, list) and all(type(v) is float for v in r) for r in rows):
            return None
        import numpy as np
        import pandas as pd

        try:
            frame = pd.DataFrame(np.asarray(rows, dtype=np.float64), columns=list(columns))
        except (TypeError, ValueError):
            return None
        try:
            predictions = self._model.predict(frame)
        except Exception:
            return None
        if hasattr(predictions, "to_dict"):
            predictions = predictions.to_dict(orient="records")
        return ScoreResponse(body=_json.dumps({"predictions": predictions}))


class _Answer:
    """What :func:`_legacy_invocations` answers: the attributes of MLflow's ``InvocationsResponse``."""

    def __init__(self, response: str, status: int = 200, mimetype: str = "application/json") -> None:
        self.response, self.status, self.mimetype = response, status, mimetype


def _mlflow_version() -> tuple[int, int]:
    from mlflow.version import VERSION

    parts = []
    for part in VERSION.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit()) or "0"
        parts.append(int(digits))
    return (parts[0], parts[1] if len(parts) > 1 else 0)


def _invocations_of(version: tuple[int, int]) -> Callable[..., Any]:
    """MLflow's own ``invocations`` (2.6 and newer), else :func:`_legacy_invocations`."""
    if version >= (2, 6):
        from mlflow.pyfunc.scoring_server import invocations

        return invocations
    return _legacy_invocations


def _legacy_invocations(data: str, content_type: str, model: Any, input_schema: Any) -> _Answer:
    """``invocations`` for MLflow before 2.6: the payloads MLflow 2's server reads, parsed with the helpers MLflow
    1.x and 2.0-2.5 share (``proto_json_utils``), the prediction answered as ``{"predictions": ...}``."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils import proto_json_utils as parsing

    mime_type = content_type.split(";")[0].strip()
    try:
        if mime_type == "text/csv":
            frame = _csv_frame(data, input_schema)
        elif mime_type == "application/json":
            frame = _legacy_json_input(data, input_schema, parsing)
        else:
            return _Answer(f"this model takes application/json or text/csv, not {content_type}", 415, "text/plain")
    except (MlflowException, BadRequestError):
        raise
    except Exception as exc:  # pandas' and MLflow's parsers raise what they meet (ValueError, KeyError...)
        raise BadRequestError(f"the payload could not be read as the model's input: {exc}") from None
    predictions = model.predict(frame)
    jsonable = parsing._get_jsonable_obj(predictions, pandas_orient="records")
    return _Answer(json.dumps({"predictions": jsonable}, cls=parsing.NumpyEncoder))


def _legacy_json_input(data: str, input_schema: Any, parsing: Any) -> Any:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise BadRequestError(f"the request body is not JSON: {exc}") from None
    if isinstance(document, dict) and document.get("params") is not None:
        raise BadRequestError(
            "'params' needs MLflow 2.6 or newer in the deployment's environment; this model's environment has an "
            "older one (send the payload without params, or log the model with a newer MLflow)"
        )
    if isinstance(document, dict):
        document.pop("params", None)
        shapes = [key for key in (*_FRAME_KEYS, *_TENSOR_KEYS) if key in document]
        if len(shapes) == 1 and shapes[0] in _TENSOR_KEYS:
            return parsing.parse_tf_serving_input(document, schema=input_schema)
        if len(shapes) == 1:
            return _frame(document[shapes[0]], shapes[0][len("dataframe_") :], input_schema, parsing)
        if not shapes and "data" in document and not hasattr(parsing, "dataframe_from_parsed_json"):
            return _frame(document, "split", input_schema, parsing)  # MLflow 1.x's own body: a bare split frame
    elif isinstance(document, list) and not hasattr(parsing, "dataframe_from_parsed_json"):
        return _frame(document, "records", input_schema, parsing)  # MLflow 1.x's own body: a list of records
    raise BadRequestError(f"send a JSON object with exactly one of {_SHAPES}")


def _frame(value: Any, orient: str, input_schema: Any, parsing: Any) -> Any:
    """A DataFrame of a decoded ``split`` or ``records`` value, typed by the signature as MLflow types it."""
    if hasattr(parsing, "dataframe_from_parsed_json"):  # MLflow 2.0-2.5
        return parsing.dataframe_from_parsed_json(value, pandas_orient=orient, schema=input_schema)
    return parsing._dataframe_from_json(json.dumps(value), pandas_orient=orient, schema=input_schema)


def _csv_frame(data: str, input_schema: Any) -> Any:
    """A CSV body as MLflow's own server reads it: columns of the signature typed by it."""
    import pandas as pd

    if input_schema is None or not input_schema.has_input_names():
        return pd.read_csv(io.StringIO(data))
    dtypes = dict(zip(input_schema.input_names(), input_schema.pandas_types()))  # noqa: B905 (strict= is 3.10+)
    return pd.read_csv(io.StringIO(data), dtype=dtypes)


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


def _azure_as_mlflow(body: bytes) -> tuple[Any, bytes]:
    """The decoded payload (None if it is not JSON) and its body, Azure ML's MLflow payload
    ``{"input_data": {"columns", "index", "data"}}`` turned into MLflow's own (decoded once per request)."""
    try:
        document = json.loads(body)
    except ValueError:
        return None, body  # MLflow's parser reports it
    if isinstance(document, dict) and set(document) <= {"input_data", "params"} and "input_data" in document:
        data = document.pop("input_data")
        key = "dataframe_split" if isinstance(data, dict) and "data" in data else "inputs"
        document = {key: data, **document}
        return document, json.dumps(document).encode()
    return document, body


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
