"""The examples run as a newcomer runs them: real scripts, real `tiffin serve`, HTTP only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


def test_quickstart_run_sh_prints_a_curl_line_that_works(tmp_path):
    port = free_port()
    env = {**os.environ, "TIFFIN_HOME": str(tmp_path / "home"), "TIFFIN_PORT": str(port), "TIFFIN_BIN": BIN}
    for name in ("TIFFIN_URL", "TIFFIN_ADMIN_TOKEN", "TIFFIN_STORE_URL"):
        env.pop(name, None)
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            ["bash", str(EXAMPLES / "quickstart" / "run.sh")], stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while "Ctrl-C stops" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        assert "blue 90% / green 10%" in text, text
        uri = text.split("scoring URL:")[1].split()[0]
        key = text.split("key:")[1].split()[0]
        assert uri == f"http://127.0.0.1:{port}/endpoints/my-endpoint/score"
        curl = text.split("try it:")[1].splitlines()[0].strip()
        assert curl.startswith("curl ") and key in curl
        answer = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=30)
        assert answer.returncode == 0 and answer.stdout.startswith("["), answer.stdout + answer.stderr
        r = httpx.post(uri, content=(EXAMPLES / "quickstart" / "sample-request.json").read_bytes(),
                       headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert r.status_code == 200 and r.headers["azureml-model-deployment"] in {"blue", "green"}
        # Ctrl-C (SIGINT to the script) stops the server and every replica.
        os.killpg(process.pid, signal.SIGINT)
        process.wait(60)
    finally:
        stop_process_group(process)
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "home")], capture_output=True, text=True).stdout
    assert leftovers.strip() == ""
