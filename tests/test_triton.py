"""Triton deployments: a real tritonserver (NVIDIA's, from the nvidia-pytriton wheel) serving a model
repository the tests write, behind a replica and behind ``tiffin serve``; plus the pure parts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import yaml
from conftest import eventually
from tritonclient.utils import InferenceServerException

from tiffin.errors import RunnerLoadError, ValidationError
from tiffin.runners.tritonserver import MANIFEST, TRITONSERVER_ENV, TritonInstall, find_tritonserver
from tiffin.testing import free_port, serve_deployment, serve_tiffin, stop_process_group
from tiffin.v2 import schema_from_metadata, tensors_from_json

# --- pure: finding tritonserver, typing JSON by model metadata -------------------------------------------


def test_no_tritonserver_says_how_to_get_one(tmp_path):
    with pytest.raises(RunnerLoadError, match="tiffin triton install"):
        find_tritonserver({"PATH": str(tmp_path)}, home=tmp_path)
    with pytest.raises(RunnerLoadError, match="neither a tritonserver binary nor a folder"):
        find_tritonserver({TRITONSERVER_ENV: str(tmp_path / "nope")}, home=tmp_path)


def test_an_install_folder_is_read_from_its_manifest(tmp_path):
    binary = tmp_path / "bin" / "tritonserver"
    binary.parent.mkdir()
    binary.write_text("")
    manifest = {"tritonserver": str(binary), "backend_directory": str(tmp_path / "backends"),
                "library_path": ["/libs"], "path": ["/venv/bin"]}  # fmt: skip
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    install = find_tritonserver({TRITONSERVER_ENV: str(tmp_path)})
    assert install.binary == binary
    env = install.environment({"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/old"})
    assert env["PATH"] == "/venv/bin:/usr/bin" and env["LD_LIBRARY_PATH"] == "/libs:/old"
    command = install.command(Path("/repo"), 8123, shm_prefix="tiffin_1_")
    assert "--model-repository=/repo" in command and "--http-port=8123" in command
    assert (
        "--http-address=127.0.0.1" in command and "--backend-config=python,shm-region-prefix-name=tiffin_1_" in command
    )
    # NVIDIA's own layout: backends beside bin/.
    (tmp_path / "backends").mkdir()
    assert find_tritonserver({TRITONSERVER_ENV: str(binary)}) == TritonInstall(binary, tmp_path / "backends")


METADATA = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}, {"name": "tag", "datatype": "BYTES", "shape": [1]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
}


def test_json_inputs_are_typed_and_shaped_by_the_model_metadata():
    arrays = tensors_from_json({"inputs": {"x": [1, 2, 3], "tag": ["a"]}}, METADATA["inputs"])
    assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (1, 3)
    assert arrays["tag"].dtype == object and arrays["tag"].tolist() == ["a"]
    same = tensors_from_json({"x": [[1, 2, 3], [4, 5, 6]], "tag": ["b"]}, METADATA["inputs"])
    assert same["x"].shape == (2, 3)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"inputs": {"x": [1, 2, 3]}}, "missing input.* tag"),
        ({"x": [1, 2, 3], "tag": ["a"], "z": [1]}, "unknown input.* z; the model takes x, tag"),
        ({"x": [1, 2], "tag": ["a"]}, r"input 'x': data of shape \[2\] does not fit the model's shape \[-1, 3\]"),
        ({"x": ["one", 2, 3], "tag": ["a"]}, "input 'x' must hold FP32 values"),
        ([1, 2, 3], "send a JSON object"),
    ],
)
def test_json_inputs_that_do_not_fit_name_the_input(document, message):
    with pytest.raises(ValidationError, match=message):
        tensors_from_json(document, METADATA["inputs"])


def test_metadata_becomes_the_swagger_schema():
    request, response = schema_from_metadata(METADATA)
    x = request["properties"]["inputs"]["properties"]["x"]
    assert x == {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
    assert request["properties"]["inputs"]["required"] == ["x", "tag"]
    assert response["properties"]["y"]["items"]["items"] == {"type": "number"}


# --- real tritonserver -----------------------------------------------------------------------------------

ADD_CONFIG = """
name: "add_one"
backend: "python"
max_batch_size: 8
input [ { name: "x", data_type: TYPE_FP32, dims: [ 3 ] } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [ 3 ] } ]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""
ADD_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", (x + 1).astype(np.float32))]))
        return out
"""
UPPER_CONFIG = """
name: "upper"
backend: "python"
max_batch_size: 0
input [ { name: "text", data_type: TYPE_STRING, dims: [ -1 ] } ]
output [ { name: "shout", data_type: TYPE_STRING, dims: [ -1 ] } ]
"""
UPPER_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils

class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "text").as_numpy()
            shout = np.array([t.decode().upper().encode() for t in text], dtype=np.object_)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("shout", shout)]))
        return out
"""


@pytest.fixture(scope="module")
def tritonserver() -> TritonInstall:
    """The tritonserver the tests run; CI (`make test`) installs one and requires it."""
    try:
        return find_tritonserver()
    except RunnerLoadError as exc:
        if os.environ.get("TIFFIN_REQUIRE_TRITON"):
            raise
        pytest.skip(f"{exc.message} (make test installs one)")


def write_model(repository: Path, name: str, config: str, code: str) -> None:
    (repository / name / "1").mkdir(parents=True)
    (repository / name / "config.pbtxt").write_text(config)
    (repository / name / "1" / "model.py").write_text(code)


@pytest.fixture
def repository(tmp_path) -> Path:
    repo = tmp_path / "models"
    write_model(repo, "add_one", ADD_CONFIG, ADD_MODEL)
    return repo


def deployment_file(tmp_path: Path, path: str | Path, name: str = "blue", **extra) -> Path:
    spec = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json",
        "name": name, "endpoint_name": "my-endpoint", "instance_type": "Standard_NC6s_v3",
        "model": {"name": "triton-model", "version": 1, "path": str(path), "type": "triton_model"}, **extra,
    }  # fmt: skip
    file = tmp_path / f"{name}.yml"
    file.write_text(yaml.safe_dump(spec))
    return file


def v2_infer(client: triton.InferenceServerClient, model: str, x: np.ndarray, headers=None) -> np.ndarray:
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)  # binary tensors: tritonclient's default, as in Azure's samples
    # A copy: tritonclient adds its own headers to the dict it is given.
    headers = dict(headers or {})
    return client.infer(model, [tensor], outputs=[triton.InferRequestedOutput("y")], headers=headers).as_numpy("y")


@pytest.mark.slow
def test_replica_serves_a_repository_through_score_v2_and_swagger(tritonserver, repository, tmp_path):
    write_model(repository, "upper", UPPER_CONFIG, UPPER_MODEL)
    file = deployment_file(tmp_path, repository, environment_variables={"TIFFIN_TRITON_MODEL": "add_one"})
    with serve_deployment(file, timeout=180) as replica:
        assert httpx.get(replica.url + "/").text == "Healthy"
        # /score: tensors by name, typed and shaped by the default model's metadata.
        r = httpx.post(replica.url + "/score", json={"inputs": {"x": [[1, 2, 3], [4, 5, 6]]}})
        assert r.status_code == 200 and r.json() == {"y": [[2.0, 3.0, 4.0], [5.0, 6.0, 7.0]]}
        assert httpx.post(replica.url + "/score", json={"x": [1, 2, 3]}).json() == {"y": [[2.0, 3.0, 4.0]]}
        bad = httpx.post(replica.url + "/score", json={"inputs": {"z": [1]}})
        assert bad.status_code == 422 and "unknown input(s) z; the model takes x" in bad.json()["message"]
        # A V2 request body on /score goes to the default model as it is.
        body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0, 0, 0]}]}
        assert httpx.post(replica.url + "/score", json=body).json()["outputs"][0]["data"] == [1.0, 1.0, 1.0]
        # V2 passes through: the Triton models by their names, and the endpoint's/deployment's name aliases.
        client = triton.InferenceServerClient(replica.url.removeprefix("http://"))
        x = np.array([[1, 2, 3]], dtype=np.float32)
        for name in ("add_one", "my-endpoint", "blue"):
            assert v2_infer(client, name, x).tolist() == [[2.0, 3.0, 4.0]]
        text = triton.InferInput("text", [2], "BYTES")
        text.set_data_from_numpy(np.array(["a", "bé"], dtype=np.object_))
        assert client.infer("upper", [text]).as_numpy("shout").tolist() == [b"A", "BÉ".encode()]
        assert client.get_model_metadata("my-endpoint")["platform"] == "python"
        with pytest.raises(InferenceServerException, match="unknown"):
            v2_infer(client, "no-such-model", x)
        swagger = httpx.get(replica.url + "/swagger.json?version=3").json()
        schema = swagger["components"]["schemas"]["ServiceInput"]
        assert schema["properties"]["inputs"]["properties"]["x"]["items"]["items"] == {"type": "number"}


def triton_pid(repository: Path) -> int:
    """The pid of the tritonserver serving ``repository``."""
    found = subprocess.run(["pgrep", "-f", f"model-repository={repository}"], capture_output=True, text=True).stdout
    return int(found.split()[0])


@pytest.mark.slow
def test_readiness_follows_triton_and_the_replica_stops_its_tritonserver(tritonserver, repository, tmp_path):
    file = deployment_file(tmp_path, repository)
    with serve_deployment(file, timeout=180) as replica:
        server_pid = triton_pid(repository)
        assert httpx.get(replica.url + "/").status_code == 200
        os.kill(server_pid, signal.SIGKILL)
        eventually(lambda: httpx.get(replica.url + "/").status_code == 503)
    with serve_deployment(file, timeout=180) as replica:
        pids = subprocess.run(["pgrep", "-f", f"model-repository={repository}"], capture_output=True, text=True).stdout
        assert pids.strip()
    # Stopping the replica must stop its tritonserver.
    eventually(
        lambda: not subprocess.run(["pgrep", "-f", f"model-repository={repository}"], capture_output=True).stdout
    )


@pytest.mark.slow
def test_a_hung_tritonserver_does_not_stall_the_replica(tritonserver, repository, tmp_path):
    """Asking Triton whether it is ready must not block the replica's event loop: while a stopped
    (SIGSTOP) tritonserver keeps a health probe waiting, other requests are answered."""
    file = deployment_file(tmp_path, repository)
    with serve_deployment(file, timeout=180) as replica:
        assert httpx.get(replica.url + "/").status_code == 200
        server_pid = triton_pid(repository)
        os.kill(server_pid, signal.SIGSTOP)
        answered: list[tuple[str, int]] = []

        def health() -> None:
            answered.append(("health", httpx.get(replica.url + "/", timeout=60).status_code))

        try:
            time.sleep(1.5)  # past the replica's one-second memory of Triton's last "ready"
            probe = threading.Thread(target=health)
            probe.start()
            time.sleep(0.3)  # the health probe is now waiting for Triton, whose answer cannot come
            answered.append(("swagger", httpx.get(replica.url + "/swagger.json", timeout=60).status_code))
            probe.join(60)
        finally:
            os.kill(server_pid, signal.SIGCONT)
        # The swagger document was served while the health probe still waited; the probe then gave up (503).
        assert answered == [("swagger", 200), ("health", 503)]
        assert httpx.get(replica.url + "/").status_code == 200


@pytest.mark.slow
def test_an_existing_triton_url_is_used_and_left_running(tritonserver, repository, tmp_path):
    port = free_port()
    command = tritonserver.command(repository, port, shm_prefix=f"tiffin_test_{port}_")
    log = open(tmp_path / "triton.log", "w")  # noqa: SIM115 (closed below)
    process = subprocess.Popen(command, env=tritonserver.environment(os.environ), stdout=log, stderr=log,
                               start_new_session=True)  # fmt: skip
    try:
        file = deployment_file(tmp_path, f"http://127.0.0.1:{port}")
        with serve_deployment(file, timeout=180) as replica:
            r = httpx.post(replica.url + "/score", json={"x": [1, 2, 3]})
            assert r.status_code == 200 and r.json() == {"y": [[2.0, 3.0, 4.0]]}
        assert process.poll() is None, "tiffin must not stop a Triton server it did not start"
    finally:
        stop_process_group(process)
        log.close()


@pytest.mark.slow
def test_through_tiffin_serve_v2_goes_straight_to_triton_and_a_broken_model_fails(tritonserver, repository, tmp_path):
    broken = tmp_path / "broken"
    write_model(broken, "bad", ADD_CONFIG.replace("add_one", "bad"), "raise RuntimeError('no weights here')\n")
    # Given relative to where the server starts, as a user types it: replicas, which run elsewhere, find it too.
    given = os.environ.get(TRITONSERVER_ENV)
    env = {TRITONSERVER_ENV: os.path.relpath(given)} if given else None
    with serve_tiffin(tmp_path / "home", env=env) as server:
        client = server.client()
        client.online_endpoints.create_or_update({"name": "tri", "auth_mode": "key"})
        spec = yaml.safe_load(deployment_file(tmp_path, repository).read_text()) | {"endpoint_name": "tri"}
        assert client.online_deployments.create_or_update(spec, "tri", timeout=180)["provisioning_state"] == "Succeeded"
        client.online_endpoints.set_traffic("tri", {"blue": 100})
        key = client.online_endpoints.get_keys("tri")["primaryKey"]
        auth = {"Authorization": f"Bearer {key}"}
        v2 = triton.InferenceServerClient(f"{server.url.removeprefix('http://')}/endpoints/tri")
        x = np.array([[7, 8, 9]], dtype=np.float32)
        assert v2_infer(v2, "tri", x, headers=auth).tolist() == [[8.0, 9.0, 10.0]]
        assert v2_infer(v2, "add_one", x, headers=auth).tolist() == [[8.0, 9.0, 10.0]]
        with pytest.raises(InferenceServerException):
            v2_infer(v2, "tri", x, headers={"Authorization": "Bearer wrong"})
        # The gateway sent V2 to tritonserver itself (one hop): Triton's answer carries none of the request-id
        # headers every replica response has; /score still goes through the replica.
        raw = httpx.get(f"{server.url}/endpoints/tri/v2/models/tri/ready", headers=auth)
        assert raw.status_code == 200 and raw.headers["azureml-model-deployment"] == "blue"
        assert "x-ms-request-id" not in raw.headers
        scored = httpx.post(f"{server.url}/endpoints/tri/score", json={"x": [1, 2, 3]}, headers=auth)
        assert scored.json() == {"y": [[2.0, 3.0, 4.0]]} and "x-ms-request-id" in scored.headers

        failing = yaml.safe_load(deployment_file(tmp_path, broken, name="red").read_text()) | {"endpoint_name": "tri"}
        failing["readiness_probe"] = {"initial_delay": 1, "period": 1}
        with pytest.raises(Exception, match="tritonserver exited") as info:
            client.online_deployments.create_or_update(failing, "tri", timeout=240)
        assert "Failed" in str(info.value) or "failed" in str(info.value)
