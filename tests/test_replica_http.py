"""Scoring scripts served by real replica processes, checked over HTTP against azmlinfsrv's contract."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
import pytest
from conftest import eventually

from tiffin.testing import serve_deployment

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent / "deployments"
# Azure's inference server (for @rawhttp) pins packages that clash with BentoML's, so the test set-up
# installs it with --no-deps into a directory of its own; only the rawhttp replica sees it.
AZMLINFSRV_API = Path(sys.prefix) / "azmlinfsrv-api"


@pytest.fixture(scope="module")
def plain():
    with serve_deployment(HERE / "plain" / "deployment.yml") as replica:
        yield replica


@pytest.fixture(scope="module")
def numpy_replica():
    with serve_deployment(HERE / "schema_numpy" / "deployment.yml") as replica:
        yield replica


def test_health_probe_says_healthy(plain):
    r = httpx.get(plain.url + "/")
    assert r.status_code == 200
    assert r.text == "Healthy"


def test_plain_script_gets_raw_string_and_sibling_module_imports(plain):
    r = httpx.post(plain.url + "/score", content=b'{"data": [[1, 2], [3, 4]]}')
    assert r.status_code == 200, r.text
    # weights.json says scale 2: the model folder is at $AZUREML_MODEL_DIR/model/ as on Azure.
    assert r.json() == {"sums": [6, 14], "raw_type": "str"}
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-ms-run-function-failed"] == "False"


def test_environment_is_azures(plain):
    r = httpx.post(
        plain.url + "/score",
        json={"echo_env": ["AZUREML_MODEL_DIR", "TIFFIN_MODEL_DIR", "GREETING"]},
    )
    env = r.json()
    assert env["GREETING"] == "hello"  # environment_variables from the YAML
    assert env["AZUREML_MODEL_DIR"] == env["TIFFIN_MODEL_DIR"]
    model_dir = Path(env["AZUREML_MODEL_DIR"])
    assert (model_dir / "model" / "weights.json").read_text().strip() == '{"scale": 2}'


def test_request_ids(plain):
    r = httpx.post(plain.url + "/score", json={"data": [[1]]}, headers={"x-ms-client-request-id": "abc-123"})
    assert r.headers["x-ms-request-id"] == "abc-123"
    assert r.headers["x-ms-client-request-id"] == "abc-123"
    assert r.headers["x-request-id"]
    r = httpx.post(plain.url + "/score", json={"data": [[1]]}, headers={"x-request-id": "rid-1"})
    assert r.headers["x-request-id"] == "rid-1"
    assert r.headers["x-ms-request-id"] == "rid-1"
    r = httpx.post(plain.url + "/score", json={"data": [[1]]}, headers={"x-request-id": "x" * 101})
    assert r.status_code == 431
    assert "x-request-id" in r.json()["message"]


def test_unknown_route_and_method(plain):
    r = httpx.get(plain.url + "/nope")
    assert r.status_code == 404
    assert "message" in r.json()
    r = httpx.put(plain.url + "/score", content=b"{}")
    assert r.status_code == 405
    assert httpx.options(plain.url + "/score").status_code == 200


def test_swagger_for_undecorated_script(plain):
    doc = httpx.get(plain.url + "/swagger.json").json()
    assert doc["swagger"] == "2.0"
    assert doc["definitions"]["ServiceInput"] == {"type": "object", "example": {}}
    doc3 = httpx.get(plain.url + "/swagger.json", params={"version": "3"}).json()
    assert doc3["openapi"].startswith("3.")
    assert "/score" in doc3["paths"]
    r = httpx.get(plain.url + "/swagger.json", params={"version": "7"})
    assert r.status_code == 404
    assert "not valid" in r.json()["message"]


def test_single_file_model_is_directly_under_model_dir():
    with serve_deployment(HERE / "plain" / "single-file-deployment.yml") as replica:
        r = httpx.post(replica.url + "/score", content=b"{}")
        assert r.json() == {"scale": 2, "listing": ["weights.json"]}


def test_inference_schema_numpy_gets_typed_arrays(numpy_replica):
    r = httpx.post(numpy_replica.url + "/score", json={"data": [[1, 2, 3], [4, 5, 6]], "factor": 2})
    assert r.status_code == 200, r.text
    assert r.json() == {"total": [12.0, 30.0], "dtype": "float64"}
    # factor has a default in run(): it may be left out, as with azmlinfsrv.
    r = httpx.post(numpy_replica.url + "/score", json={"data": [[1, 1, 1]]})
    assert r.json()["total"] == [3.0]


def test_inference_schema_input_errors(numpy_replica):
    r = httpx.post(numpy_replica.url + "/score", json={"factor": 2})
    assert r.status_code == 400
    assert "'data'" in r.json()["message"]
    r = httpx.post(numpy_replica.url + "/score", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = httpx.post(numpy_replica.url + "/score", content=b"{bad json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "JSON" in r.json()["message"]
    r = httpx.post(numpy_replica.url + "/score", content=b"a=1", headers={"content-type": "text/plain"})
    assert r.status_code == 415


def test_inference_schema_swagger(numpy_replica):
    doc = httpx.get(numpy_replica.url + "/swagger.json").json()
    props = doc["definitions"]["ServiceInput"]["properties"]
    assert set(props) == {"data", "factor"}
    assert props["data"]["type"] == "array"
    assert doc["definitions"]["ServiceOutput"]["type"] == "object"
    doc3 = httpx.get(numpy_replica.url + "/swagger.json?version=3").json()
    assert set(doc3["components"]["schemas"]["ServiceInput"]["properties"]) == {"data", "factor"}


def test_inference_schema_pandas_and_request_headers():
    with serve_deployment(HERE / "schema_pandas" / "deployment.yml") as replica:
        r = httpx.post(
            replica.url + "/score",
            json={"frame": [{"age": 40, "income": 60000.0, "city": "Porto"}]},
            headers={"X-Custom": "yes"},
        )
        assert r.status_code == 200, r.text
        rows = r.json()
        assert rows[0] == {"city": "Porto", "score": 100.0}
        assert rows[1] == {"header": "yes"}
        doc = httpx.get(replica.url + "/swagger.json").json()
        assert "frame" in doc["definitions"]["ServiceInput"]["properties"]


def test_script_exception_is_500_without_details_and_logged():
    with serve_deployment(HERE / "raises" / "deployment.yml") as replica:
        r = httpx.post(replica.url + "/score", json={"fail": True})
        assert r.status_code == 500
        assert r.headers["x-ms-run-function-failed"] == "True"
        message = r.json()["message"]
        assert "12345" not in message and "Check the logs" in message
        r = httpx.post(replica.url + "/score", json={"unencodable": True})
        assert r.status_code == 500
        assert "JSON" in r.json()["message"]
        # A failing request does not break the replica.
        r = httpx.post(replica.url + "/score", json={})
        assert r.status_code == 200 and r.json() == "ok"
        log = replica.log()
        assert "secret internal detail 12345" in log and "Traceback" in log


def test_tiffin_typed_decorator():
    with serve_deployment(HERE / "typed" / "deployment.yml") as replica:
        r = httpx.post(replica.url + "/score", json={"data": [[1, 2], [3, 4]], "options": {"label": "a", "scale": 2}})
        assert r.status_code == 200, r.text
        assert r.json() == {"label": "a", "totals": [6.0, 14.0]}
        r = httpx.post(replica.url + "/score", json={"data": [[1]], "options": {"scale": 2}})
        assert r.status_code == 422
        assert r.json()["message"] == "field 'options.label': Field required"
        r = httpx.post(replica.url + "/score", json={"data": [["x"]], "options": {"label": "a"}})
        assert r.status_code == 422
        assert "field 'data'" in r.json()["message"]
        doc = httpx.get(replica.url + "/swagger.json?version=3").json()
        schemas = doc["components"]["schemas"]
        assert schemas["ServiceInput"]["required"] == ["data", "options"]
        options = schemas["ServiceInput"]["properties"]["options"]
        assert options["required"] == ["label"] and options["properties"]["scale"]["default"] == 1.0
        assert set(schemas["ServiceOutput"]["properties"]) == {"label", "totals"}
        assert schemas["ServiceInput"]["example"]["options"]["label"] == "x"


def test_init_failure_stops_the_replica_with_the_reason(tmp_path):
    with pytest.raises(RuntimeError) as info, serve_deployment(HERE / "init_fails" / "deployment.yml", timeout=60):
        pass
    assert "cannot find the model file" in str(info.value)


def test_rawhttp_without_azure_package_says_what_to_install():
    with pytest.raises(RuntimeError) as info, serve_deployment(HERE / "rawhttp" / "deployment.yml", timeout=60):
        pass
    assert "pip install azureml-inference-server-http" in str(info.value)


@pytest.mark.skipif(
    not AZMLINFSRV_API.is_dir(), reason=f"azureml-inference-server-http not installed in {AZMLINFSRV_API}"
)
def test_rawhttp_script_gets_flask_request_and_returns_amlresponse():
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(AZMLINFSRV_API), os.environ.get("PYTHONPATH")]))}
    with serve_deployment(HERE / "rawhttp" / "deployment.yml", env=env) as replica:
        r = httpx.post(replica.url + "/score", content=b"abc", headers={"content-type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        assert r.content == b"cba"
        assert r.headers["x-reversed"] == "yes"
        assert r.headers["content-type"] == "application/octet-stream"
        r = httpx.get(replica.url + "/score", params={"q": "hi"})
        assert r.text == "query=hi"


@pytest.mark.skipif(
    not AZMLINFSRV_API.is_dir(), reason=f"azureml-inference-server-http not installed in {AZMLINFSRV_API}"
)
def test_the_older_azureml_contrib_services_path_works_where_azures_server_is_installed():
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(AZMLINFSRV_API), os.environ.get("PYTHONPATH")]))}
    with serve_deployment(HERE / "rawhttp_contrib" / "deployment.yml", env=env) as replica:
        r = httpx.post(replica.url + "/score", content=b"abc", headers={"content-type": "application/octet-stream"})
        assert r.status_code == 200, r.text
        assert r.content == b"cba"


def test_the_older_azureml_contrib_services_path_without_azures_server_says_what_to_install():
    with pytest.raises(RuntimeError) as info, serve_deployment(HERE / "rawhttp_contrib" / "deployment.yml", timeout=60):
        pass
    assert "pip install azureml-inference-server-http" in str(info.value)


def test_worker_count_runs_init_once_per_worker_process():
    with serve_deployment(
        HERE / "plain" / "deployment.yml", overrides=["environment_variables.WORKER_COUNT=2"]
    ) as replica:
        for _ in range(10):
            assert httpx.post(replica.url + "/score", json={"data": [[1]]}).status_code == 200

        # "ready" means one worker answers; the other may still be in init(): give it a moment.
        def init_pids() -> set[str]:
            pids = {line.rsplit(" ", 1)[1] for line in replica.log().splitlines() if line.startswith("init done")}
            assert len(pids) >= 2, replica.log()
            return pids

        assert len(eventually(init_pids, timeout=30)) == 2, replica.log()


def test_runner_capabilities_are_declared_on_the_protocol_with_defaults():
    """A runner that subclasses Runner and declares nothing more scores on /score only; one that declares a
    capability gets it. The replica reads these as attributes, with no getattr fallbacks of its own."""
    import asyncio

    from tiffin.replica.app import ReplicaApp
    from tiffin.runners import Runner, RunnerSchema, ScoreRequest, ScoreResponse

    class Echo(Runner):
        def load(self) -> None: ...

        def predict(self, request: ScoreRequest) -> ScoreResponse:
            return ScoreResponse(body=request.path.encode(), content_type="text/plain")

        def health(self) -> bool:
            return True

        def close(self) -> None: ...

        def schema(self) -> RunnerSchema:
            return RunnerSchema()

    class EchoEverything(Echo):
        score_paths = ("/score", "/predict")
        passthrough = True

    assert (Runner.score_paths, Runner.passthrough, Runner.v2_native, Runner.v2_input_key) == (
        ("/score",), False, False, None,
    )  # fmt: skip
    assert Echo().v2_upstream is None

    def status(runner: Runner, path: str) -> int:
        app = ReplicaApp(runner, scoring_threads=0, tune_gc=False)
        app.startup()
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
        asyncio.run(app(scope, receive, send))
        app.shutdown()
        return sent[0]["status"]

    assert [status(Echo(), p) for p in ("/score", "/predict", "/other")] == [200, 404, 404]
    assert [status(EchoEverything(), p) for p in ("/score", "/predict", "/other")] == [200, 200, 200]


def test_the_data_plane_answers_without_any_transport():
    """DataPlane is the replica apart from HTTP (as KServe's dataplane.py): scoring, health, V2 model
    names and metadata, swagger, called as plain methods."""
    import asyncio
    import json

    from tiffin.errors import NotFoundError, UnavailableError
    from tiffin.replica.dataplane import DataPlane
    from tiffin.runners import Runner, RunnerSchema, ScoreRequest, ScoreResponse

    class Doubler(Runner):
        def load(self) -> None: ...

        def predict(self, request: ScoreRequest) -> ScoreResponse:
            return ScoreResponse(body=json.dumps([2 * x for x in json.loads(request.body)]).encode())

        def health(self) -> bool:
            return True

        def close(self) -> None: ...

        def schema(self) -> RunnerSchema:
            return RunnerSchema(input={"type": "array"})

    dataplane = DataPlane(Doubler(), name="blue", version="3", model_names=frozenset({"ep"}), tune_gc=False)
    with pytest.raises(UnavailableError):
        asyncio.run(dataplane.score(ScoreRequest(body=b"[1]")))
    assert asyncio.run(dataplane.healthy()) is False
    dataplane.startup()
    try:
        assert asyncio.run(dataplane.healthy()) is True
        assert asyncio.run(dataplane.score(ScoreRequest(body=b"[1, 2]"))).body == b"[2, 4]"
        dataplane.check_model("ep")
        dataplane.check_model("blue")
        with pytest.raises(NotFoundError, match="models: blue, ep"):
            dataplane.check_model("red")
        assert dataplane.model_metadata("ep")["platform"] == "tiffin-doubler"
        assert json.loads(dataplane.swagger("3"))["openapi"].startswith("3")
        with pytest.raises(NotFoundError, match="not valid"):
            dataplane.swagger("4")
    finally:
        dataplane.shutdown()
