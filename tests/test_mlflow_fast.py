"""The MLflow fast path answers exactly what MLflow's own scoring path answers (runners/_mlflow_fast.py).

A corpus of scikit-learn models saved with MLflow, times payloads: each payload goes to a runner with the fast path and
to one without it (MLflow's ``invocations`` then scores it), and the answers must be the same bytes, status and
content type, or the same error class and message. Payloads the fast path is meant to take are checked to have
been taken (MLflow's path not called), so a fast path that silently fell back fails here too.
"""

from __future__ import annotations

import json
import warnings

import pytest

pytest.importorskip("mlflow")
pytest.importorskip("sklearn")

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature
from sklearn.datasets import load_diabetes, load_iris
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tiffin.errors import TiffinError
from tiffin.runners import _mlflow_fast
from tiffin.runners.mlflow import MLflowRunner, MLflowRunnerConfig
from tiffin.runners.protocol import ScoreRequest

DIABETES = load_diabetes(as_frame=True)
IRIS = load_iris(as_frame=True)


PROBA = {"pyfunc_predict_fn": "predict_proba"}  # the pyfunc calls predict_proba: MLflow's path


def _fit(name):
    """(fitted model, the frame its signature is inferred from, fast path expected, save_model arguments)."""
    x, y = DIABETES.data, DIABETES.target
    ix, iy = IRIS.data, IRIS.target
    return {
        "ridge_frame": (Ridge().fit(x, y), x, True, {}),
        "ridge_ndarray": (Ridge().fit(x.to_numpy(), y), x, True, {}),  # no feature names: sklearn warns on both paths
        "pipeline": (make_pipeline(StandardScaler(), Ridge()).fit(x, y), x, True, {}),
        "logistic": (LogisticRegression(max_iter=500).fit(ix, iy), ix, True, {}),
        "ridge_classifier": (RidgeClassifier().fit(ix, iy), ix, True, {}),  # a classifier with no predict_proba
        "logistic_proba": (LogisticRegression(max_iter=500).fit(ix, iy), ix, False, PROBA),
        "float32_signature": (Ridge().fit(x, y), x.astype(np.float32), False, {}),
        "no_signature": (Ridge().fit(x, y), None, False, {}),
    }[name]  # fmt: skip


MODELS = ["ridge_frame", "ridge_ndarray", "pipeline", "logistic", "ridge_classifier", "logistic_proba",
          "float32_signature", "no_signature"]  # fmt: skip


@pytest.fixture(scope="module", params=MODELS)
def runners(request, tmp_path_factory):
    model, frame, fast, kwargs = _fit(request.param)
    path = tmp_path_factory.mktemp(request.param) / "model"
    signature = None if frame is None else infer_signature(frame, model.predict(frame.to_numpy()))
    mlflow.sklearn.save_model(model, str(path), signature=signature, pip_requirements=["scikit-learn"], **kwargs)
    fast_runner, slow_runner = (MLflowRunner(MLflowRunnerConfig(model_uri=str(path))) for _ in range(2))
    fast_runner.load()
    slow_runner.load()
    slow_runner._fast, slow_runner._numeric_columns = None, None  # MLflow's own path for everything
    assert (fast_runner._fast is not None) is fast, f"{request.param}: fast path planned? expected {fast}"
    columns = list((frame if frame is not None else DIABETES.data).columns)
    return fast_runner, slow_runner, columns, (frame if frame is not None else DIABETES.data).iloc[:200]


def _payloads(columns, data):
    rows = data.to_numpy(dtype=np.float64).tolist()
    two = rows[:2]
    records = [dict(zip(columns, r, strict=True)) for r in two]
    reordered = list(reversed(columns))
    j = json.dumps
    taken = {  # the fast path answers these (when the model has one)
        "split": j({"dataframe_split": {"columns": columns, "data": two}}),
        "split_one_row": j({"dataframe_split": {"columns": columns, "data": two[:1]}}),
        "split_200_rows": j({"dataframe_split": {"columns": columns, "data": rows}}),
        "split_reordered": j({"dataframe_split": {"columns": reordered, "data": [r[::-1] for r in two]}}),
        "records": j({"dataframe_records": records}),
        "records_reordered": j({"dataframe_records": [dict(reversed(list(r.items()))) for r in records]}),
        "instances": j({"instances": records}),
        "inputs_columns": j({"inputs": {c: [r[i] for r in two] for i, c in enumerate(columns)}}),
        "azure_input_data": j({"input_data": {"columns": columns, "data": two}}),
    }
    first = dict(records[0])
    mlflows = {  # MLflow's own path answers these (200s and errors alike)
        "csv": (pd.DataFrame(two, columns=columns).to_csv(index=False), "text/csv"),
        "split_with_index": j({"dataframe_split": {"columns": columns, "data": two, "index": [5, 6]}}),
        "azure_with_index": j({"input_data": {"columns": columns, "index": [0, 1], "data": two}}),
        "inputs_records": j({"inputs": records}),
        "int_values": j({"dataframe_split": {"columns": columns, "data": [[1] * len(columns)]}}),
        "bool_value": j({"dataframe_records": [{**first, columns[0]: True}]}),
        "string_value": j({"dataframe_records": [{**first, columns[0]: "0.5"}]}),
        "null_value": j({"dataframe_records": [{**first, columns[0]: None}]}),
        "nan_value": j({"dataframe_split": {"columns": columns, "data": [[float("nan")] * len(columns)]}}),
        "missing_column": j({"dataframe_split": {"columns": columns[1:], "data": [r[1:] for r in two]}}),
        "extra_column": j({"dataframe_records": [{**first, "extra": 1.0}]}),
        "record_missing_key": j({"dataframe_records": [first, {k: v for k, v in first.items() if k != columns[0]}]}),
        "ragged_row": j({"dataframe_split": {"columns": columns, "data": [two[0][:-1]]}}),
        "empty_data": j({"dataframe_split": {"columns": columns, "data": []}}),
        "params": j({"dataframe_split": {"columns": columns, "data": two}, "params": {"alpha": 1}}),
        "two_shapes": j({"dataframe_split": {"columns": columns, "data": two}, "instances": records}),
        "bad_json": '{"dataframe_split": ',
        "not_utf8": (b'{"dataframe_split": "\xff"}', "application/json"),
        "json_list": j([first]),
    }
    return taken, mlflows


def _outcome(runner, payload):
    body, content_type = payload if isinstance(payload, tuple) else (payload, "application/json")
    raw = body if isinstance(body, bytes) else body.encode()
    request = ScoreRequest(body=raw, headers={"content-type": content_type})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            answer = runner.predict(request)
            result = ("answer", answer.status, answer.content_type, answer.body)
        except TiffinError as exc:
            result = (type(exc).__name__, exc.status_code, exc.message)
    # ResourceWarnings are the garbage collector's, about sockets other tests left (it may run during any call):
    # not the model's warnings.
    return result, sorted({f"{w.category.__name__}: {w.message}" for w in caught if w.category is not ResourceWarning})


def _counting(runner):
    calls = []
    invocations = runner._invocations

    def counted(*args):
        calls.append(args)
        return invocations(*args)

    runner._invocations = counted
    return calls


def test_every_payload_answers_as_mlflow_does(runners):
    fast, slow, columns, data = runners
    taken, mlflows = _payloads(columns, data)
    calls = _counting(fast)
    for name, body in {**taken, **mlflows}.items():
        del calls[:]
        fast_result, fast_warnings = _outcome(fast, body)
        slow_result, slow_warnings = _outcome(slow, body)
        assert fast_result == slow_result, name
        # The same frame reaches the model: the same scikit-learn warnings (feature names), none extra.
        assert [w for w in fast_warnings if w not in slow_warnings] == [], name
        if name in taken and fast._fast is not None:
            assert calls == [], f"{name}: took MLflow's path"
            assert fast_result[0] == "answer", name


def test_errors_are_the_same_4xx(runners):
    fast, _, columns, data = runners
    _, mlflows = _payloads(columns, data)
    for name in ("missing_column", "bad_json", "not_utf8", "nan_value", "ragged_row", "json_list", "two_shapes"):
        result, _ = _outcome(fast, mlflows[name])
        assert result[0] != "answer" and 400 <= result[1] < 500, (name, result)


def test_plan_refuses_older_mlflow_and_other_flavours(runners):
    fast, _, _, _ = runners
    assert _mlflow_fast.plan(fast._model, fast._input_schema, (3, 16)) is None
    assert _mlflow_fast.plan(object(), fast._input_schema, (3, 17)) is None


def test_column_layouts_are_compiled_once(runners):
    fast, _, columns, data = runners
    if fast._fast is None:
        pytest.skip("MLflow's path for this model")
    taken, _ = _payloads(columns, data)
    fast._fast._layouts.clear()
    for _ in range(3):
        fast.predict(ScoreRequest(body=taken["split_reordered"].encode(), headers={"content-type": "application/json"}))
    assert tuple(reversed(columns)) in fast._fast._layouts
    assert len(fast._fast._layouts) == 1
