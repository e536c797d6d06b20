"""The Open Inference Protocol (V2): pure translation, then tritonclient against real deployments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tiffin.errors import BadRequestError
from tiffin.testing import serve_deployment, serve_tiffin
from tiffin.v2 import decode_infer_request, encode_infer_response

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"
ROW = [0.038, 0.050, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017]


def test_decode_reshapes_and_types_each_input():
    body = json.dumps({
        "id": "7",
        "inputs": [
            {"name": "data", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
            {"name": "flag", "shape": [1], "datatype": "BOOL", "data": [True]},
        ],
        "outputs": [{"name": "output"}],
    }).encode()  # fmt: skip
    inputs, wanted, request_id = decode_infer_request(body, {})
    assert inputs == {"data": [[1.0, 2.0], [3.0, 4.0]], "flag": [True]}
    assert wanted == ["output"] and request_id == "7"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"nope", "not JSON"),
        (b'{"inputs": []}', "needs 'inputs'"),
        (b'{"inputs": [{"name": "x"}]}', "name, shape, datatype and data"),
        (b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP99", "data": [1, 2, 3]}]}', "FP99"),
        (b'{"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}]}', "does not fit shape"),
    ],
)
def test_decode_errors_say_what_is_wrong(body, message):
    with pytest.raises(BadRequestError, match=message):
        decode_infer_request(body, {})


def test_binary_extension_is_refused_with_a_hint():
    with pytest.raises(BadRequestError, match="binary_data=False"):
        decode_infer_request(b"{}", {"inference-header-content-length": "10"})


def test_encode_dict_results_as_one_tensor_per_key_else_output():
    response = encode_infer_response("m", {"predictions": [1.5, 2.5], "labels": ["a", "b"]}, None, "id-1")
    assert response["id"] == "id-1" and response["model_name"] == "m"
    by_name = {o["name"]: o for o in response["outputs"]}
    assert by_name["predictions"] == {"name": "predictions", "shape": [2], "datatype": "FP64", "data": [1.5, 2.5]}
    assert by_name["labels"]["datatype"] == "BYTES" and by_name["labels"]["data"] == ["a", "b"]
    only = encode_infer_response("m", [[1, 2], [3, 4]], None)
    assert only["outputs"] == [{"name": "output", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]}]
    assert encode_infer_response("m", {"a": 1, "b": 2}, ["b"])["outputs"][0]["name"] == "b"
    with pytest.raises(BadRequestError, match="unknown output"):
        encode_infer_response("m", {"a": 1}, ["zzz"])


@pytest.fixture(scope="module")
def trained():
    subprocess.run([sys.executable, str(QUICKSTART / "train.py")], check=True, capture_output=True)


def infer(client: triton.InferenceServerClient, model: str, headers=None) -> np.ndarray:
    x = np.array([ROW], dtype=np.float64)
    tensor = triton.InferInput("data", list(x.shape), "FP64")
    tensor.set_data_from_numpy(x, binary_data=False)
    wanted = [triton.InferRequestedOutput("output", binary_data=False)]
    return client.infer(model, [tensor], outputs=wanted, headers=headers).as_numpy("output")


@pytest.mark.slow
def test_tritonclient_talks_to_an_azure_score_py(trained):
    with serve_deployment(QUICKSTART / "blue-deployment.yml") as replica:
        client = triton.InferenceServerClient(replica.url.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("my-endpoint") and client.is_model_ready("blue")
        assert client.get_model_metadata("my-endpoint")["name"] == "my-endpoint"
        via_v2 = infer(client, "my-endpoint")
        via_score = httpx.post(replica.url + "/score", json={"data": [ROW]}).json()
        assert via_v2.tolist() == pytest.approx(via_score)
        with pytest.raises(InferenceServerException, match="not served here"):
            infer(client, "other-model")


@pytest.mark.slow
def test_tritonclient_through_the_gateway_with_a_key(trained, tmp_path):
    from tiffin.specs import OnlineDeployment, load_spec

    with serve_tiffin(tmp_path / "home") as server:
        client = server.client()
        client.online_endpoints.create_or_update({"name": "v2ep", "auth_mode": "key"})
        for file in ("blue-deployment.yml", "green-deployment.yml"):
            spec = load_spec(QUICKSTART / file, OnlineDeployment, overrides=["endpoint_name=v2ep"]).spec
            client.online_deployments.create_or_update(spec, "v2ep", timeout=120)
        client.online_endpoints.set_traffic("v2ep", {"blue": 50, "green": 50})
        key = client.online_endpoints.get_keys("v2ep")["primaryKey"]
        auth = {"Authorization": f"Bearer {key}"}
        v2 = triton.InferenceServerClient(f"{server.url.removeprefix('http://')}/endpoints/v2ep")
        assert v2.is_server_live(headers=auth) and v2.is_model_ready("v2ep", headers=auth)
        # Pinned to each deployment, V2 and /score agree; unauthenticated V2 is refused like /score.
        for deployment in ("blue", "green"):
            pinned = {**auth, "azureml-model-deployment": deployment}
            via_v2 = infer(v2, "v2ep", headers=pinned)
            via_score = httpx.post(f"{server.url}/endpoints/v2ep/score", json={"data": [ROW]}, headers=pinned).json()
            assert via_v2.tolist() == pytest.approx(via_score)
        with pytest.raises(InferenceServerException):
            v2.is_model_ready("v2ep", headers={"Authorization": "Bearer wrong"}) or infer(v2, "v2ep", headers={})
