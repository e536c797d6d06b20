"""The MLflow fast path: a scikit-learn model's own ``predict`` on the frame MLflow would have given it.

A request to an MLflow deployment through MLflow's own code (``scoring_server.invocations``) spends most of
its time outside the model: JSON → DataFrame parsing, per-column casting, and ``PyFuncModel.predict``'s
signature enforcement, all redone for every request with the same columns. For the one flavour whose pyfunc
``predict`` is a plain call of the native model, this module does that work once per column layout and
calls the model itself, answering the bytes MLflow's server would.

Flavours (read in MLflow 3.17's source; older MLflow takes MLflow's own path, see :data:`FAST_SINCE`):

* ``mlflow.sklearn``: ``_SklearnModelWrapper.predict(data, params)`` is ``self.sklearn_model.predict(data)``.
  Taken only when the pyfunc's ``predict_fn`` is ``predict`` (not ``predict_proba`` & co.), the model has no
  params schema and no type-hint signature, and every input is a required ``double`` column.
* not ``mlflow.xgboost`` / ``mlflow.lightgbm``: not installed here, so no equality corpus covers them (their
  wrappers also convert the input: xgboost builds a ``DMatrix``, lightgbm passes params through).

The model gets what ``_enforce_named_col_schema`` builds: a DataFrame made from a dict of float64 columns in
the signature's order (one consolidated block, so the array scikit-learn reads has the same memory layout,
hence the same BLAS summation order, as MLflow's). A DataFrame, not an ndarray: a model fitted with feature
names warns on an ndarray, and its feature-name check is part of what MLflow's path does.

Only payloads naming exactly the signature's columns with JSON floats as values are taken (booleans, ints,
strings, nulls, extra or missing columns, ``params``, an ``index``: MLflow's path). If the model raises, the
request is answered by MLflow's path too, so errors are MLflow's own. ``tests/test_mlflow_fast.py`` checks the
answers equal MLflow's byte for byte over a corpus of models and payloads.

Imports only the stdlib at module level (the runtime modules load on Python 3.8+ without numpy).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

__all__ = ["FAST_SINCE", "FastPath", "plan"]

FAST_SINCE = (3, 17)
"""The MLflow whose sklearn wrapper, schema enforcement and JSON answer were read and are tested here."""

_MAX_LAYOUTS = 64  # distinct column orders remembered; more are checked per request (no unbounded growth)


class FastPath:
    """Answers a decoded JSON request for one sklearn model, or None for MLflow's own path."""

    def __init__(self, impl: Any, columns: tuple[str, ...], to_json: Callable[..., Any]) -> None:
        import numpy
        import pandas

        self._np, self._pd = numpy, pandas
        self._impl = impl
        self._columns = columns
        self._to_json = to_json
        # column layout (as the request names them) -> positions of the signature's columns in it, or None
        self._layouts: dict[tuple[str, ...], tuple[int, ...] | None] = {}

    def answer(self, document: Any) -> str | None:
        """MLflow's response text for ``document``, or None when MLflow's own path must answer."""
        if not isinstance(document, dict) or len(document) != 1:
            return None
        ((key, value),) = document.items()
        if key == "dataframe_split":
            arrays = self._split(value)
        elif key in ("dataframe_records", "instances"):
            arrays = self._records(value)
        elif key == "inputs":
            arrays = self._column_lists(value)
        else:
            return None
        if arrays is None:
            return None
        frame = self._pd.DataFrame(dict(zip(self._columns, arrays)))  # noqa: B905 (strict= is 3.10+)
        try:
            predictions = self._impl.sklearn_model.predict(frame)
            out = io.StringIO()
            self._to_json(predictions, out)
        except Exception:
            return None
        return out.getvalue()

    def _order(self, given: tuple[str, ...]) -> tuple[int, ...] | None:
        """Where each signature column is in ``given``; None unless ``given`` names exactly those columns."""
        if given in self._layouts:
            return self._layouts[given]
        order: tuple[int, ...] | None = None
        if len(given) == len(self._columns) and set(given) == set(self._columns):
            order = tuple(given.index(c) for c in self._columns)
        if len(self._layouts) < _MAX_LAYOUTS:
            self._layouts[given] = order
        return order

    def _split(self, value: Any) -> list[Any] | None:
        if not isinstance(value, dict) or set(value) != {"columns", "data"}:
            return None
        given, rows = value["columns"], value["data"]
        if not isinstance(given, list) or not all(type(c) is str for c in given):
            return None
        order = self._order(tuple(given))
        if order is None or not isinstance(rows, list) or not rows:
            return None
        width = len(order)
        for row in rows:
            if type(row) is not list or len(row) != width or not all(type(v) is float for v in row):
                return None
        matrix = self._np.array(rows, dtype=self._np.float64)
        return [matrix[:, i] for i in order]

    def _records(self, records: Any) -> list[Any] | None:
        if not isinstance(records, list) or not records or type(records[0]) is not dict:
            return None
        first = tuple(records[0])
        if not all(type(c) is str for c in first) or self._order(first) is None:
            return None
        columns, width = self._columns, len(first)
        rows = []
        for record in records:
            if type(record) is not dict or len(record) != width:
                return None
            try:
                row = [record[c] for c in columns]
            except KeyError:
                return None
            if not all(type(v) is float for v in row):
                return None
            rows.append(row)
        matrix = self._np.array(rows, dtype=self._np.float64)
        return [matrix[:, i] for i in range(width)]

    def _column_lists(self, value: Any) -> list[Any] | None:
        if not isinstance(value, dict) or not all(type(c) is str for c in value):
            return None
        if self._order(tuple(value)) is None:
            return None
        lists = [value[c] for c in self._columns]
        length = len(lists[0]) if type(lists[0]) is list else 0
        if not length or not all(type(x) is list and len(x) == length for x in lists):
            return None
        if not all(type(v) is float for x in lists for v in x):
            return None
        return [self._np.array(x, dtype=self._np.float64) for x in lists]


def plan(model: Any, input_schema: Any, version: tuple[int, int]) -> FastPath | None:
    """The fast path for a loaded pyfunc model, or None when it must always take MLflow's own path."""
    if version < FAST_SINCE:
        return None
    try:
        from mlflow.pyfunc import PyFuncModel
        from mlflow.pyfunc.scoring_server import predictions_to_json
        from mlflow.sklearn import _SklearnModelWrapper
    except ImportError:
        return None
    try:
        if type(model) is not PyFuncModel or model.loader_module != "mlflow.sklearn":
            return None
        impl = model._model_impl
        if type(impl) is not _SklearnModelWrapper:
            return None
        # predict_fn: predict_proba & co. are other methods of the wrapper; only its plain predict is read.
        if getattr(model._predict_fn, "__func__", None) is not _SklearnModelWrapper.predict:
            return None
        metadata = model.metadata
        if metadata.get_params_schema() is not None:
            return None
        for hinted in ("_is_signature_from_type_hint", "_is_type_hint_from_example"):
            if getattr(metadata, hinted)():
                return None
        columns = _double_columns(input_schema)
    except Exception:
        return None
    if not columns:
        return None
    return FastPath(impl, columns, predictions_to_json)


def _double_columns(schema: Any) -> tuple[str, ...] | None:
    """The signature's column names when all are required, distinct ``double`` columns, else None."""
    if schema is None or not schema.has_input_names() or schema.is_tensor_spec():
        return None
    names = []
    for spec in schema.inputs:
        if not spec.required or str(spec.type).split(".")[-1].lower() != "double":
            return None
        names.append(spec.name)
    return tuple(names) if len(set(names)) == len(names) else None
