"""MLflow deployments (no scoring script) served by real replicas; models logged by the test with mlflow."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import eventually

from tiffin.testing import serve_deployment

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
ROW = {"age": 0.03, "sex": 0.05, "bmi": 0.06, "bp": 0.02, "s1": -0.04, "s2": -0.03, "s3": -0.04, "s4": 0.0,
       "s5": 0.02, "s6": -0.01}  # fmt: skip

_LOG = r"""
import json, sys, mlflow, pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
root = sys.argv[1]
mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
mlflow.set_experiment("tiffin") if mlflow.get_experiment_by_name("tiffin") else mlflow.create_experiment(
    "tiffin", artifact_location=f"{root}/artifacts")
mlflow.set_experiment("tiffin")
x, y = load_diabetes(return_X_y=True, as_frame=True)
model = Ridge().fit(x, y)
with mlflow.start_run() as run:
    info = mlflow.sklearn.log_model(model, name="model", signature=infer_signature(x, model.predict(x)),
                                    registered_model_name="diabetes")
    custom = mlflow.pyfunc.log_model(name="echo", python_model=sys.argv[2],
                                     input_example=pd.DataFrame({"x": [1.0], "label": ["a"]}))
MlflowClient().set_registered_model_alias("diabetes", "champion", "1")
local = mlflow.artifacts.download_artifacts(info.model_uri, dst_path=f"{root}/local")
print(json.dumps({"run_id": run.info.run_id, "local": local, "custom": custom.model_uri,
                  "expected": float(model.predict(pd.DataFrame([json.loads(sys.argv[3])]))[0])}))
"""


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    done = subprocess.run(
        [sys.executable, "-c", _LOG, str(root), str(HERE / "mlflow_models" / "echo_model.py"), json.dumps(ROW)],
        capture_output=True, text=True, timeout=300, cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])
    info.update(root=root, env={"MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"})
    return info


def deployment(tmp_path: Path, name: str, path: str, model_type: str | None = "mlflow_model") -> Path:
    model = {"path": path} | ({"type": model_type} if model_type else {})
    spec = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json",
        "name": name, "endpoint_name": "tests", "model": model, "instance_type": "Standard_DS3_v2",
    }  # fmt: skip
    file = tmp_path / f"{name}.yml"
    file.write_text(yaml.safe_dump(spec))
    return file


@pytest.mark.parametrize(
    "uri",
    ["local", "runs:/{run_id}/model", "models:/diabetes/1", "models:/diabetes@champion"],
)
def test_each_model_uri_form_serves_the_same_predictions(logged, tmp_path, uri):
    path = logged["local"] if uri == "local" else uri.format(**logged)
    # A local folder with an MLmodel file needs no `type:`; URIs say it, as Azure's YAML does.
    file = deployment(tmp_path, "mlf", path, None if uri == "local" else "mlflow_model")
    with serve_deployment(file, env=logged["env"], timeout=180) as replica:
        r = httpx.post(replica.url + "/score", json={"dataframe_records": [ROW]}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0] == pytest.approx(logged["expected"])


@pytest.fixture(scope="module")
def sklearn_replica(logged, tmp_path_factory):
    file = deployment(tmp_path_factory.mktemp("dep"), "mlf", "models:/diabetes/1")
    with serve_deployment(file, env=logged["env"], timeout=180) as replica:
        yield replica


def test_every_mlflow_payload_shape_and_azures(logged, sklearn_replica):
    columns = list(ROW)
    payloads = [
        {"dataframe_records": [ROW]},
        {"dataframe_split": {"columns": columns, "data": [list(ROW.values())]}},
        {"instances": [ROW]},
        {"inputs": {c: [v] for c, v in ROW.items()}},
        {"input_data": {"columns": columns, "index": [0], "data": [list(ROW.values())]}},  # Azure's shape
    ]
    for path in ("/score", "/invocations"):
        for payload in payloads:
            r = httpx.post(sklearn_replica.url + path, json=payload, timeout=30)
            assert r.status_code == 200, (path, payload, r.text)
            assert r.json()["predictions"][0] == pytest.approx(logged["expected"])
    csv = ",".join(columns) + "\n" + ",".join(str(v) for v in ROW.values()) + "\n"
    r = httpx.post(sklearn_replica.url + "/invocations", content=csv, headers={"content-type": "text/csv"})
    assert r.status_code == 200 and r.json()["predictions"][0] == pytest.approx(logged["expected"])


def test_signature_violations_are_422_naming_the_column(sklearn_replica):
    r = httpx.post(sklearn_replica.url + "/score", json={"dataframe_records": [{"age": 0.1}]})
    assert r.status_code == 422
    assert "missing inputs" in r.json()["message"] and "'bmi'" in r.json()["message"]
    r = httpx.post(sklearn_replica.url + "/score", json={"dataframe_records": [{**ROW, "bmi": "fat"}]})
    assert r.status_code == 422 and "bmi" in r.json()["message"]
    r = httpx.post(sklearn_replica.url + "/score", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_signature_becomes_the_swagger_schema(sklearn_replica):
    doc = httpx.get(sklearn_replica.url + "/swagger.json?version=3").json()
    records = doc["components"]["schemas"]["ServiceInput"]["properties"]["dataframe_records"]
    assert records["items"]["properties"]["bmi"] == {"type": "number"}


def test_custom_pyfunc_model(logged, tmp_path):
    file = deployment(tmp_path, "echo", logged["custom"])
    with serve_deployment(file, env=logged["env"], timeout=180) as replica:
        r = httpx.post(replica.url + "/score", json={"dataframe_records": [{"x": 2.5, "label": "b"}]})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == [{"double": 5.0, "label": "b"}]


def test_unknown_model_fails_to_start_with_a_message(logged, tmp_path):
    file = deployment(tmp_path, "nope", "models:/does-not-exist/7")
    with pytest.raises(RuntimeError) as info, serve_deployment(file, env=logged["env"], timeout=120):
        pass
    assert "cannot load the MLflow model models:/does-not-exist/7" in str(info.value)


def test_mlflow_deployment_behind_an_endpoint_with_a_script_deployment(logged, tmp_path):
    """An endpoint mixing an MLflow deployment (no script) and an Azure score.py, through tiffin serve."""
    from tiffin.specs import OnlineDeployment, load_spec
    from tiffin.testing import serve_tiffin

    with serve_tiffin(tmp_path / "home", env=logged["env"]) as server:
        client = server.client()
        client.online_endpoints.create_or_update({"name": "mixed", "auth_mode": "key"})
        mlflow_spec = load_spec(deployment(tmp_path, "blue", "models:/diabetes@champion"), OnlineDeployment).spec
        client.online_deployments.create_or_update(mlflow_spec, "mixed", timeout=180)
        script = load_spec(
            HERE / "deployments" / "plain" / "deployment.yml", OnlineDeployment, overrides=["name=green"]
        )
        client.online_deployments.create_or_update(script.spec, "mixed", timeout=180)
        client.online_endpoints.set_traffic("mixed", {"blue": 50, "green": 50})
        blue = client.online_endpoints.invoke("mixed", body={"dataframe_records": [ROW]}, deployment_name="blue")
        assert json.loads(blue)["predictions"][0] == pytest.approx(logged["expected"])
        green = client.online_endpoints.invoke("mixed", body={"data": [[1, 2]]}, deployment_name="green")
        assert json.loads(green)["sums"] == [6]
        shown = client.online_deployments.get("blue", "mixed")
        assert shown["provisioning_state"] == "Succeeded" and shown["model"]["type"] == "mlflow_model"


# --- bring your own container: a real third-party server (mlflow models serve) as the command ----------


def byoc_deployment(tmp_path: Path, environment: dict) -> Path:
    spec = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json",
        "name": "byoc", "endpoint_name": "tests", "environment": environment,
    }  # fmt: skip
    file = tmp_path / "byoc.yml"
    file.write_text(yaml.safe_dump(spec))
    return file


def test_byoc_command_serves_behind_the_azure_contract(logged, tmp_path):
    routes = {
        "liveness_route": {"path": "/ping", "port": 5000},
        "readiness_route": {"path": "/ping", "port": 5000},
        "scoring_route": {"path": "/invocations", "port": 5000},
    }
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    command = f"{mlflow_cli} models serve -m models:/diabetes/1 --env-manager local -h 127.0.0.1 -p $PORT"
    file = byoc_deployment(tmp_path, {"command": command, "inference_config": routes})
    env = {**logged["env"], "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    with serve_deployment(file, env=env, timeout=180) as replica:
        # /score reaches the server's scoring route; the replica adds Azure's headers.
        r = httpx.post(replica.url + "/score", json={"dataframe_records": [ROW]}, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0] == pytest.approx(logged["expected"])
        assert r.headers["x-ms-request-id"]
        # Other paths go through as they are; the server's own errors come back as it sent them.
        assert httpx.get(replica.url + "/ping").status_code == 200
        assert httpx.get(replica.url + "/").text == "Healthy"
        bad = httpx.post(replica.url + "/score", json={"dataframe_records": [{"age": 1}]}, timeout=30)
        assert bad.status_code == 400 and "missing inputs" in bad.text.lower()
        server_pids = subprocess.run(
            ["pgrep", "-f", "models serve -m models:/diabetes/1"], capture_output=True, text=True
        )
        assert server_pids.stdout.split()
    # Stopping the replica stopped the server it started.
    pattern = f"models serve -m models:/diabetes/1 .*-p {replica.url.rsplit(':', 1)[1]}"
    eventually(lambda: subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.strip() == "")


def test_byoc_image_without_a_container_engine_says_so(tmp_path):
    engine = shutil.which("docker") or shutil.which("podman")
    if engine and subprocess.run([engine, "info"], capture_output=True).returncode == 0:
        pytest.skip(f"a container engine runs here ({engine}); this test is for machines without one")
    routes = {"scoring_route": {"path": "/score", "port": 5001}, "readiness_route": {"path": "/", "port": 5001}}
    file = byoc_deployment(tmp_path, {"image": "myregistry/my-model:1", "inference_config": routes})
    with pytest.raises(RuntimeError) as info, serve_deployment(file, timeout=60):
        pass
    assert "needs a container engine" in str(info.value) and "environment.command" in str(info.value)


def test_v2_tensors_reach_an_mlflow_model_as_its_inputs(logged, sklearn_replica):
    import numpy as np
    import tritonclient.http as triton

    client = triton.InferenceServerClient(sklearn_replica.url.removeprefix("http://"))
    assert client.is_model_ready("tests")
    tensors = []
    for column, value in ROW.items():  # one tensor per signature column, as Triton clients send tabular data
        tensor = triton.InferInput(column, [1], "FP64")
        tensor.set_data_from_numpy(np.array([value], dtype=np.float64), binary_data=False)
        tensors.append(tensor)
    result = client.infer("tests", tensors, outputs=[triton.InferRequestedOutput("predictions", binary_data=False)])
    assert result.as_numpy("predictions")[0] == pytest.approx(logged["expected"])
