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
from tiffin.v2 import InferRequest, alias_model, decode_infer_request, encode_infer_response

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
    request = decode_infer_request(body, {})
    assert request.inputs == {"data": [[1.0, 2.0], [3.0, 4.0]], "flag": [True]}
    assert request.outputs == ["output"] and request.id == "7" and request.binary_outputs == frozenset()


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


def test_binary_tensors_as_tritonclient_sends_them():
    x = np.array([[1.5, 2.5], [3.5, 4.5]], dtype=np.float32)
    words = triton.InferInput("words", [2], "BYTES")
    words.set_data_from_numpy(np.array(["héllo", "b"], dtype=np.object_))
    numbers = triton.InferInput("x", [2, 2], "FP32")
    numbers.set_data_from_numpy(x)
    outputs = [triton.InferRequestedOutput("y", binary_data=True), triton.InferRequestedOutput("z", binary_data=False)]
    body, header_length = triton.InferenceServerClient.generate_request_body([numbers, words], outputs, request_id="9")
    request = decode_infer_request(body, {"inference-header-content-length": str(header_length)})
    assert request.inputs == {"x": x.tolist(), "words": ["héllo", "b"]} and request.id == "9"
    assert request.outputs == ["y", "z"] and request.binary_outputs == frozenset({"y"})

    answer, answer_length = encode_infer_response("m", {"y": [[1.0, 2.0]], "z": ["a", "bc"]}, request)
    result = triton.InferenceServerClient.parse_response_body(answer, header_length=answer_length)
    assert result.as_numpy("y").tolist() == [[1.0, 2.0]] and result.as_numpy("z").tolist() == ["a", "bc"]
    assert (
        result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 16
        and result.get_response()["id"] == "9"
    )


def test_binary_parts_that_do_not_add_up_are_refused():
    body = b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}'
    with pytest.raises(BadRequestError, match="past the end"):
        decode_infer_request(body + b"1234", {"inference-header-content-length": str(len(body))})
    with pytest.raises(BadRequestError, match="4 bytes of binary data follow"):
        decode_infer_request(body + b"12345678abcd", {"inference-header-content-length": str(len(body))})
    with pytest.raises(BadRequestError, match="Inference-Header-Content-Length"):
        decode_infer_request(body, {"inference-header-content-length": "9999"})


def test_alias_model_names_the_default_model_only_for_aliases():
    aliases = (b"my-endpoint", b"green")
    assert alias_model(b"/v2/models/my-endpoint/infer", aliases, b"densenet") == b"/v2/models/densenet/infer"
    assert alias_model(b"/v2/models/green/versions/1/ready?x=1", aliases, b"d") == b"/v2/models/d/versions/1/ready?x=1"
    assert alias_model(b"/v2/models/my-endpoint", aliases, b"d") == b"/v2/models/d"
    assert alias_model(b"/v2/models/other/infer", aliases, b"d") == b"/v2/models/other/infer"
    assert alias_model(b"/v2/health/ready", aliases, b"d") == b"/v2/health/ready"


def test_encode_dict_results_as_one_tensor_per_key_else_output():
    body, header_length = encode_infer_response(
        "m", {"predictions": [1.5, 2.5], "labels": ["a", "b"]}, InferRequest({}, id="id-1")
    )
    response = json.loads(body)
    assert header_length is None and response["id"] == "id-1" and response["model_name"] == "m"
    by_name = {o["name"]: o for o in response["outputs"]}
    assert by_name["predictions"] == {"name": "predictions", "shape": [2], "datatype": "FP64", "data": [1.5, 2.5]}
    assert by_name["labels"]["datatype"] == "BYTES" and by_name["labels"]["data"] == ["a", "b"]
    only = json.loads(encode_infer_response("m", [[1, 2], [3, 4]])[0])
    assert only["outputs"] == [{"name": "output", "shape": [2, 2], "datatype": "INT64", "data": [1, 2, 3, 4]}]
    picked = json.loads(encode_infer_response("m", {"a": 1, "b": 2}, InferRequest({}, ["b"]))[0])
    assert [o["name"] for o in picked["outputs"]] == ["b"]
    with pytest.raises(BadRequestError, match="unknown output"):
        encode_infer_response("m", {"a": 1}, InferRequest({}, ["zzz"]))


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
