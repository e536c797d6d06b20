"""The examples run as a newcomer runs them: real scripts, real `tiffin serve`, HTTP only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tiffin.testing import free_port, serve_tiffin, stop_process_group

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BIN = str(Path(sys.executable).parent)


def test_safe_rollout_script_runs_unchanged_against_tiffin_serve(tmp_path):
    with serve_tiffin(tmp_path / "home") as server:
        done = subprocess.run(
            ["bash", str(EXAMPLES / "rollout" / "safe-rollout.sh")],
            env={**server.env, "TIFFIN_BIN": BIN, "ENDPOINT_NAME": "rollout"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert 'traffic: {"blue":100}' in done.stdout
        assert 'traffic: {"blue":0,"green":100}' in done.stdout
        assert "rollout of rollout done" in done.stdout
        # The endpoint is gone, and so are its replicas once the supervisor caught up.
        assert server.client().online_endpoints.list() == []


@contextmanager
def run_script(script: Path, tmp_path: Path, *, timeout: float = 300) -> Iterator[str]:
    """Run an example's run.sh as a newcomer does (fresh TIFFIN_HOME, a free port) until it prints its
    'Ctrl-C stops' line; yield what it printed; then Ctrl-C it and check that nothing it started is left."""
    port = free_port()
    env = {**os.environ, "TIFFIN_HOME": str(tmp_path / "home"), "TIFFIN_PORT": str(port), "TIFFIN_BIN": BIN}
    for name in ("TIFFIN_URL", "TIFFIN_ADMIN_TOKEN", "TIFFIN_STORE_URL"):
        env.pop(name, None)
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            ["bash", str(script)], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout
        while "Ctrl-C stops" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        assert f"http://127.0.0.1:{port}/endpoints/" in text, text
        yield text
        # Ctrl-C (SIGINT to the script) stops the server and every replica.
        os.killpg(process.pid, signal.SIGINT)
        process.wait(60)
    finally:
        stop_process_group(process)
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "home")], capture_output=True, text=True).stdout
    assert leftovers.strip() == ""


def test_quickstart_run_sh_prints_a_curl_line_that_works(tmp_path):
    with run_script(EXAMPLES / "quickstart" / "run.sh", tmp_path, timeout=180) as text:
        assert "blue 90% / green 10%" in text, text
        uri = text.split("scoring URL:")[1].split()[0]
        key = text.split("key:")[1].split()[0]
        assert uri.endswith("/endpoints/my-endpoint/score")
        curl = text.split("try it:")[1].splitlines()[0].strip()
        assert curl.startswith("curl ") and key in curl
        answer = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=30)
        assert answer.returncode == 0 and answer.stdout.startswith("["), answer.stdout + answer.stderr
        r = httpx.post(uri, content=(EXAMPLES / "quickstart" / "sample-request.json").read_bytes(),
                       headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert r.status_code == 200 and r.headers["azureml-model-deployment"] in {"blue", "green"}


def test_mixed_endpoint_mlflow_and_triton_agree_through_score_and_v2(tmp_path):
    """examples/triton/run.sh: blue is an MLflow model, green the same model on a real tritonserver, 50/50."""
    import numpy as np
    import tritonclient.http as triton

    with run_script(EXAMPLES / "triton" / "run.sh", tmp_path) as text:
        answers = {
            line.split(":", 1)[0]: line.split(":", 1)[1] for line in text.splitlines() if line[:4] in ("/sco", "V2, ")
        }
        assert len(answers) == 4, text
        expected = json.loads(answers["/score, blue"])["predictions"]
        for label, line in answers.items():
            values = json.loads(line.split(" - ")[-1]) if label.startswith("V2") else json.loads(line)["predictions"]
            assert values == pytest.approx(expected, rel=1e-9), (label, line)

        uri = text.split("scoring URL:")[1].split()[0]
        key = text.split("key:")[1].split()[0]
        auth = {"Authorization": f"Bearer {key}"}
        request = json.loads((EXAMPLES / "triton" / "sample-request.json").read_text())
        seen = set()
        v2 = triton.InferenceServerClient(uri.removeprefix("http://").removesuffix("/score"))
        for _ in range(30):  # unpinned: 50/50 between the two model servers, the same predictions either way
            r = httpx.post(uri, json=request, headers=auth)
            assert r.status_code == 200 and r.json()["predictions"] == pytest.approx(expected, rel=1e-9)
            seen.add(r.headers["azureml-model-deployment"])
            inputs = []
            for name, values in request["inputs"].items():
                tensor = triton.InferInput(name, [len(values)], "FP64")
                tensor.set_data_from_numpy(np.asarray(values, dtype=np.float64))
                inputs.append(tensor)
            result = v2.infer("diabetes", inputs, headers=dict(auth))
            assert result.as_numpy("predictions").tolist() == pytest.approx(expected, rel=1e-9)
        assert seen == {"blue", "green"}
    assert subprocess.run(["pgrep", "-f", "examples/triton/models"], capture_output=True).returncode == 1


def test_batch_example_scores_with_an_mlflow_model_and_azures_batch_driver(tmp_path):
    """examples/batch/run.sh: one batch endpoint, an MLflow deployment (no script) and Azure's batch driver
    loading the same model from AZUREML_MODEL_DIR; both jobs write one row per input row, the same rows."""
    import pandas as pd

    env = {**os.environ, "TIFFIN_HOME": str(tmp_path / "home"), "TIFFIN_PORT": str(free_port()), "TIFFIN_BIN": BIN}
    for name in ("TIFFIN_URL", "TIFFIN_ADMIN_TOKEN", "TIFFIN_STORE_URL", "TIFFIN_RAY_ADDRESS"):
        env.pop(name, None)
    done = subprocess.run(["bash", str(EXAMPLES / "batch" / "run.sh")], env=env, capture_output=True, text=True,
                          timeout=600, start_new_session=True)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count('"status": "Completed"') == 2, done.stdout
    inputs = sorted((EXAMPLES / "batch" / "data").glob("*.csv"))
    expected_rows = sum(len(pd.read_csv(f)) for f in inputs)
    outputs = {}
    out = EXAMPLES / "batch" / "out"
    # Read as Azure's notebooks read them: the MLflow deployment's rows are row,prediction,file; the script's
    # DataFrame rows are separated by spaces.
    mlflow = pd.read_csv(
        out / "mlflow" / "named-outputs" / "score" / "predictions.csv", names=["row", "prediction", "file"]
    )
    script = pd.read_csv(out / "script" / "named-outputs" / "score" / "predictions.csv", header=None,
                         names=["file", "prediction"], sep=" ")  # fmt: skip
    for deployment, frame in (("mlflow", mlflow[["file", "prediction"]]), ("script", script)):
        assert len(frame) == expected_rows
        outputs[deployment] = frame.sort_values(["file", "prediction"])
    assert set(outputs["mlflow"]["file"]) == {f.name for f in inputs}
    pd.testing.assert_frame_equal(outputs["mlflow"].reset_index(drop=True), outputs["script"].reset_index(drop=True))
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "home")], capture_output=True, text=True).stdout
    assert leftovers.strip() == ""
