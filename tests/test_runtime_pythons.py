"""tiffin's runtime inside real environments on Python 3.8 to 3.13 (issue 13, item 5).

Each environment is built by :func:`tiffin.environments.runtime.prepare` (the real uv, pyenv's interpreters, PyPI
through uv's default cache) with only :data:`~tiffin.environments.runtime.RUNTIME_REQUIREMENTS` and what the model
needs; the replica is started as the supervisor starts it (``ENV/bin/python -m tiffin.replica.run --plan P --uds
S`` with :meth:`~tiffin.environments.runtime.PreparedEnvironment.process_env`) and asked over its Unix socket.
The scoring script reports what the replica process imported, so tiffin's control-plane libraries (pydantic,
YAML, typer, SQLAlchemy, aiohttp, httpx, BentoML) are seen never to load there.

MLflow models are logged inside their environment (its Python, its MLflow, scikit-learn, pandas and numpy) and
served from it: MLflow 1.30 on Python 3.8 (pandas 1.x, numpy 1.x), 2.3 (before MLflow had ``invocations``) and a
late 2.x (MLflow's own ``invocations``).
"""

from __future__ import annotations

import dataclasses
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tiffin.environments.runtime import PreparedEnvironment, prepare
from tiffin.environments.spec import SUPPORTED_PYTHONS, EnvironmentSpec
from tiffin.errors import EnvironmentBuildError
from tiffin.replica.plan import ReplicaPlan, write_plan
from tiffin.runners.kinds import runner_to_json
from tiffin.runners.mlflow import MLflowRunnerConfig
from tiffin.runners.script import ScriptRunnerConfig
from tiffin.testing import stop_process_group, wait_for_line

pytestmark = pytest.mark.slow

CONTROL_PLANE = ("pydantic", "yaml", "typer", "sqlalchemy", "aiohttp", "httpx", "bentoml")
"""What a replica in an environment must never import (tiffin's own side needs them; the runtime must not)."""

SCORE_PY = textwrap.dedent(
    """
    import json
    import os
    import sys

    CONTROL_PLANE = {control_plane!r}

    def init():
        global SCALE
        SCALE = float(os.environ["SCALE"])

    def run(raw_data):
        data = json.loads(raw_data)["data"]
        try:
            import numpy as np
        except ImportError:
            np = None
            doubled = [x * SCALE for x in data]
        else:
            doubled = np.asarray(data, dtype=float) * SCALE  # a numpy answer: tiffin's JSON encoder meets it
        return {{
            "doubled": doubled,
            "python": list(sys.version_info[:2]),
            "numpy": np.__version__ if np is not None else None,
            "tiffin": sys.modules["tiffin"].__file__,
            "modules": sorted(m for m in sys.modules if m.split(".")[0] in CONTROL_PLANE),
        }}
    """
).format(control_plane=set(CONTROL_PLANE))


# --- helpers -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One TIFFIN_HOME for the module: environments are built into it once and shared by the tests."""
    return tmp_path_factory.mktemp("home")


def build(home: Path, python: str, *requirements: str) -> PreparedEnvironment:
    """The environment for ``python`` and ``requirements`` with tiffin's runtime, built with uv's default cache."""
    log = io.StringIO()
    try:
        return prepare(EnvironmentSpec(python=python, requirements=requirements), home, log=log)
    except EnvironmentBuildError as exc:
        raise AssertionError(f"{exc}\n{log.getvalue()}") from None


class UnixClient:
    """HTTP/1.1 over a replica's Unix socket, with the standard library only."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.headers: dict[str, str] = {}
        """The last response's headers, names lower-cased."""

    def request(self, method: str, target: str, body: Any = None, content_type: str = "application/json") -> Any:
        class Connection(http.client.HTTPConnection):
            def connect(inner) -> None:
                inner.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                inner.sock.settimeout(60)
                inner.sock.connect(self.path)

        connection = Connection("localhost", timeout=60)
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        if isinstance(body, str):
            data = body.encode()
        headers = {"content-type": content_type} if data is not None else {}
        try:
            connection.request(method, target, body=data, headers=headers)
            response = connection.getresponse()
            self.headers = {k.lower(): v for k, v in response.getheaders()}
            return response.status, response.read()
        finally:
            connection.close()

    def json(self, method: str, target: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        status, raw = self.request(method, target, body, **kwargs)
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")


@contextmanager
def serve(prepared: PreparedEnvironment, plan: ReplicaPlan, folder: Path) -> Iterator[UnixClient]:
    """The replica of ``plan`` on ``prepared``'s interpreter, as the supervisor starts it, until the block ends."""
    plan_path = folder / "deployment.plan.json"
    write_plan(plan, plan_path)
    sockets = Path(tempfile.mkdtemp(prefix="tiffin-rt-"))  # short: a Unix socket's path is at most 107 bytes
    sock = sockets / "replica.sock"
    log_path = folder / "replica.log"
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [str(prepared.python), "-m", "tiffin.replica.run", "--plan", str(plan_path), "--uds", str(sock)],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=prepared.process_env(os.environ),
            text=True,
            start_new_session=True,
        )
    try:
        wait_for_line(log_path, process, "tiffin replica ready", 180)
        yield UnixClient(str(sock))
    finally:
        stop_process_group(process)
        shutil.rmtree(sockets, ignore_errors=True)


def script_plan(code_dir: Path, name: str) -> ReplicaPlan:
    code_dir.mkdir(parents=True, exist_ok=True)
    (code_dir / "score.py").write_text(SCORE_PY, encoding="utf-8")
    config = ScriptRunnerConfig(code_dir=code_dir, scoring_script="score.py", environment_variables={"SCALE": "2"})
    kind, runner = runner_to_json(config)
    return ReplicaPlan(kind=kind, runner=runner, name=name)


def check_script_replica(client: UnixClient, prepared: PreparedEnvironment, python: str) -> dict[str, Any]:
    status, body = client.request("GET", "/")
    assert (status, body) == (200, b"Healthy")
    status, answer = client.json("POST", "/score", {"data": [1, 2.5]})
    assert status == 200, answer
    assert answer["doubled"] == [2.0, 5.0]
    assert answer["python"] == [int(p) for p in python.split(".")]
    # tiffin comes from the runtime copy, not from tiffin's own installation, and brought none of its own side.
    assert Path(answer["tiffin"]).is_relative_to(prepared.runtime), answer["tiffin"]
    assert answer["modules"] == []
    status, swagger = client.json("GET", "/swagger.json")
    assert status == 200 and swagger["swagger"] == "2.0"
    return answer


def v2_infer(client: UnixClient, name: str) -> tuple[int, Any]:
    tensor = {"name": "data", "shape": [2], "datatype": "FP64", "data": [1.0, 2.5]}
    return client.json("POST", f"/v2/models/{name}/infer", {"inputs": [tensor]})


# --- a scoring script on every supported Python ---------------------------------------------------------


@pytest.mark.parametrize("python", SUPPORTED_PYTHONS)
def test_a_scoring_script_is_served_from_an_environment(home: Path, tmp_path: Path, python: str):
    prepared = build(home, python, "numpy")
    assert prepared.python.is_file()
    with serve(prepared, script_plan(tmp_path / "code", "blue"), tmp_path) as client:
        answer = check_script_replica(client, prepared, python)
        # numpy is the environment's choice: 1.x on 3.8 (the last to support it), 2.x on the others.
        major = int(answer["numpy"].split(".")[0])
        assert major == (1 if python == "3.8" else 2), answer["numpy"]
        status, infer = v2_infer(client, "blue")  # V2 tensors, which import numpy only now
        assert status == 200, infer
        assert infer["outputs"][0]["name"] == "doubled" and infer["outputs"][0]["data"] == [2.0, 5.0]


def test_an_environment_without_numpy_serves_and_v2_says_numpy_is_missing(home: Path, tmp_path: Path):
    """Only the runtime's requirements, on the oldest Python and so the oldest uvicorn, with two worker processes
    (uvicorn's Multiprocess supervisor, each worker building the app from the plan)."""
    prepared = build(home, "3.8")
    plan = dataclasses.replace(script_plan(tmp_path / "code", "bare"), workers=2)
    with serve(prepared, plan, tmp_path) as client:
        answer = check_script_replica(client, prepared, "3.8")
        assert answer["numpy"] is None
        status, infer = v2_infer(client, "bare")
        assert status == 500 and "numpy" in infer["error"], infer
        # Nothing else of the replica needed numpy: it still answers.
        assert client.request("GET", "/")[0] == 200


SCHEMA_SCORE_PY = textwrap.dedent(
    """
    import numpy as np
    import pandas as pd
    from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
    from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
    from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
    from inference_schema.schema_decorators import input_schema, output_schema

    def init():
        pass

    @input_schema("frame", PandasParameterType(pd.DataFrame({"a": [1.0], "b": [2.0]})))
    @input_schema("scale", StandardPythonParameterType(1.0))
    @output_schema(NumpyParameterType(np.array([1.0])))
    def run(frame, scale):
        return {"sums": (frame["a"] + frame["b"]).to_numpy() * scale, "pandas": pd.__version__}
    """
)


@pytest.mark.parametrize(("python", "pandas"), [("3.8", "pandas<2"), ("3.13", "pandas")])
def test_inference_schema_decorators_with_the_environments_pandas(home: Path, tmp_path: Path, python: str, pandas: str):
    """run() decorated with inference-schema gets the body's fields as arguments, typed by the environment's
    pandas and numpy (1.x on Python 3.8, the newest on 3.13); the decorators' schema is the swagger document's."""
    prepared = build(home, python, "inference-schema[pandas-support]", pandas)
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text(SCHEMA_SCORE_PY, encoding="utf-8")
    kind, runner = runner_to_json(ScriptRunnerConfig(code_dir=code, scoring_script="score.py"))
    with serve(prepared, ReplicaPlan(kind=kind, runner=runner, name="typed"), tmp_path) as client:
        status, answer = client.json("POST", "/score", {"frame": [{"a": 1, "b": 2}, {"a": 0.5, "b": 0}], "scale": 2})
        assert status == 200, answer
        assert answer["sums"] == [6.0, 1.0]
        assert answer["pandas"].startswith("1.") == (pandas == "pandas<2"), answer["pandas"]
        status, swagger = client.json("GET", "/swagger.json")
        assert status == 200
        assert set(swagger["definitions"]["ServiceInput"]["properties"]) == {"frame", "scale"}, swagger


# --- MLflow models logged and served in their own environment -------------------------------------------

LOG_MODEL = textwrap.dedent(
    """
    import json, sys
    import numpy as np, pandas as pd
    import mlflow, mlflow.sklearn, sklearn
    from mlflow.models.signature import infer_signature
    from sklearn.linear_model import LinearRegression

    # An integer column: the signature is not all doubles, so every payload goes through MLflow's parsing.
    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0, 0.5], "b": [1.0, 0.0, 1.0, 0.0, 2.0]})
    frame["n"] = np.array([1, 2, 3, 4, 7], dtype="int64")
    model = LinearRegression().fit(frame, 2 * frame["a"] + 3 * frame["b"] + frame["n"])
    # Requirements given, not inferred: MLflow infers them by loading the model again in a subprocess (seconds).
    pins = ["mlflow==" + mlflow.__version__, "scikit-learn==" + sklearn.__version__]
    signature = infer_signature(frame, model.predict(frame))
    mlflow.sklearn.save_model(model, sys.argv[1], signature=signature, pip_requirements=pins)
    print(json.dumps({"mlflow": mlflow.__version__, "sklearn": sklearn.__version__, "pandas": pd.__version__,
                      "numpy": np.__version__}))
    """
)

ROW = {"a": 1.5, "b": 1.0, "n": 2}
EXPECTED = 2 * 1.5 + 3 * 1.0 + 2

MLFLOW_STACKS = [
    # (python, requirements, what the environment must have resolved to)
    pytest.param("3.8", ("mlflow==1.30.1", "scikit-learn==1.0.2"), ("1.30", "1.0", "1.", "1."), id="mlflow1-py38"),
    # Pins such a model's environment has: scikit-learn 1.2 does not bound numpy but its wheels predate numpy 2, and
    # MLflow 2.3 imports pkg_resources without requiring setuptools (which uv's environments do not seed).
    pytest.param(
        "3.9",
        ("mlflow==2.3.2", "scikit-learn==1.2.2", "numpy<2", "setuptools<70"),
        ("2.3", "1.2", "", "1."),
        id="mlflow2.3-py39",
    ),
    pytest.param("3.11", ("mlflow==2.17.2", "scikit-learn==1.5.2"), ("2.17", "1.5", "2.", ""), id="mlflow2.17-py311"),
]


def log_model(prepared: PreparedEnvironment, folder: Path) -> dict[str, str]:
    """Save a scikit-learn model with the environment's MLflow, on its interpreter; the versions it used."""
    environ = {**prepared.process_env(os.environ), "PYTHONPATH": ""}  # the user's code: no tiffin needed
    done = subprocess.run(
        [str(prepared.python), "-c", LOG_MODEL, str(folder)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("python", "requirements", "versions"), MLFLOW_STACKS)
def test_an_mlflow_model_logged_and_served_in_its_environment(
    home: Path, tmp_path: Path, python: str, requirements: tuple[str, ...], versions: tuple[str, ...]
):
    prepared = build(home, python, *requirements)
    used = log_model(prepared, tmp_path / "model")
    for key, prefix in zip(("mlflow", "sklearn", "pandas", "numpy"), versions, strict=True):
        assert used[key].startswith(prefix), used
    kind, runner = runner_to_json(MLflowRunnerConfig(model_uri=str(tmp_path / "model")))
    plan = ReplicaPlan(kind=kind, runner=runner, name="diabetes")
    columns = list(ROW)
    payloads = [
        {"dataframe_records": [ROW]},
        {"dataframe_split": {"columns": columns, "data": [list(ROW.values())]}},
        {"instances": [ROW]},
        {"inputs": {c: [v] for c, v in ROW.items()}},
        {"input_data": {"columns": columns, "index": [0], "data": [list(ROW.values())]}},  # Azure's shape
    ]
    if used["mlflow"].startswith("1."):  # what `mlflow models serve` 1.x took: a bare split frame, records
        payloads += [{"columns": columns, "data": [list(ROW.values())]}, [ROW]]
    with serve(prepared, plan, tmp_path) as client:
        assert client.request("GET", "/")[0] == 200
        for path in ("/score", "/invocations"):
            for payload in payloads:
                status, answer = client.json("POST", path, payload)
                assert status == 200, (path, payload, answer)
                assert answer["predictions"][0] == pytest.approx(EXPECTED), (payload, answer)
        csv = ",".join(columns) + "\n" + ",".join(str(v) for v in ROW.values()) + "\n"
        status, answer = client.json("POST", "/invocations", csv, content_type="text/csv")
        assert status == 200 and answer["predictions"][0] == pytest.approx(EXPECTED), answer
        # A payload that misses a column of the signature is 422 naming it; one that is not JSON is 400.
        status, answer = client.json("POST", "/score", {"dataframe_records": [{"a": 1.0, "b": 2.0}]})
        assert status == 422 and "'n'" in answer["message"], answer
        assert client.request("POST", "/score", b"{not json")[0] == 400
        status, swagger = client.json("GET", "/swagger.json?version=3")
        assert status == 200
        records = swagger["components"]["schemas"]["ServiceInput"]["properties"]["dataframe_records"]
        assert records["items"]["properties"]["n"] == {"type": "integer"}


# --- Azure's inference server installed in the environment ----------------------------------------------

RAWHTTP_SCORE_PY = textwrap.dedent(
    """
    import sys

    from azureml.contrib.services.aml_request import AMLRequest, rawhttp
    from azureml.contrib.services.aml_response import AMLResponse

    def init():
        pass

    @rawhttp
    def run(request: AMLRequest):
        if request.method != "POST":
            return AMLResponse("POST a JSON body", 405)
        total = sum(request.get_json()["data"])
        answer = {"total": total, "python": list(sys.version_info[:2]), "path": request.path}
        return AMLResponse(answer, 200, {"x-scored-by": "score.py"}, json_str=True)
    """
)


@pytest.mark.parametrize(
    ("python", "requirement"),
    [
        pytest.param("3.12", "azureml-inference-server-http", id="azureml-inference-server-http-py312"),
        # azureml-defaults (azureml-core and an older inference server) as Azure's curated environments had it.
        pytest.param("3.8", "azureml-defaults", id="azureml-defaults-py38"),
    ],
)
def test_azures_inference_server_in_the_environment_serves_contrib_services_scripts(
    home: Path, tmp_path: Path, python: str, requirement: str
):
    prepared = build(home, python, requirement)
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text(RAWHTTP_SCORE_PY, encoding="utf-8")
    kind, runner = runner_to_json(ScriptRunnerConfig(code_dir=code, scoring_script="score.py"))
    with serve(prepared, ReplicaPlan(kind=kind, runner=runner, name="raw"), tmp_path) as client:
        assert client.request("GET", "/")[0] == 200
        status, answer = client.json("POST", "/score", {"data": [1, 2, 3.5]})
        assert status == 200, answer
        assert answer == {"total": 6.5, "python": [int(p) for p in python.split(".")], "path": "/score"}
        assert client.headers["x-scored-by"] == "score.py"
        assert client.headers["x-ms-run-function-failed"] == "False"
        assert client.request("GET", "/score")[0] == 405  # run()'s own AMLResponse, status and all
