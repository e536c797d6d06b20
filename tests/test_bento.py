"""A deployment under plain `bentoml serve`, and a Bento built from it served again: real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tiffin.testing import free_port, serve_command

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PLAIN = Path(__file__).parent / "deployments" / "plain"
BENTOML = str(Path(sys.executable).parent / "bentoml")
TIFFIN = [sys.executable, "-m", "tiffin.cli"]


@pytest.fixture
def homes(tmp_path, monkeypatch):
    # Not ".../tiffin": `bentoml serve` puts its working directory first on sys.path, where a folder
    # named tiffin would shadow the package.
    env = {"BENTOML_HOME": str(tmp_path / "bentoml"), "TIFFIN_HOME": str(tmp_path / "tiffin-home")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _score(url: str) -> httpx.Response:
    return httpx.post(url + "/score", json={"data": [[1, 2], [3, 4]]}, timeout=30)


def test_bentoml_serve_serves_a_deployment_yaml(homes, tmp_path):
    port = free_port()
    env = {**homes, "TIFFIN_DEPLOYMENT": str(PLAIN / "deployment.yml")}
    command = [BENTOML, "serve", "tiffin.replica.service:Deployment", "--port", str(port), "--host", "127.0.0.1"]
    with serve_command(command, f"http://127.0.0.1:{port}/", env=env, cwd=tmp_path) as server:
        assert httpx.get(server.url + "/").text == "Healthy"
        r = _score(server.url)
        assert r.status_code == 200
        assert r.json() == {"sums": [6, 14], "raw_type": "str"}
        assert r.headers["x-ms-run-function-failed"] == "False"
        assert httpx.get(server.url + "/swagger.json").json()["swagger"] == "2.0"
        # BentoML's own probes stay beside the Azure contract.
        assert httpx.get(server.url + "/livez").status_code == 200


def test_tiffin_build_makes_a_self_contained_bento(homes, tmp_path):
    # Build from a copy that is deleted afterwards: the Bento must carry code, model and spec.
    source = tmp_path / "src"
    shutil.copytree(PLAIN, source)
    done = subprocess.run(
        [*TIFFIN, "build", "-f", str(source / "deployment.yml"), "--version", "v1", "-o", "json"],
        capture_output=True,
        text=True,
        env={**homes, **dict(os.environ)},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["tag"] == "tests-plain:v1"
    assert "instance_type" in info["ignored"]
    shutil.rmtree(source)

    port = free_port()
    command = [BENTOML, "serve", info["tag"], "--port", str(port), "--host", "127.0.0.1"]
    with serve_command(command, f"http://127.0.0.1:{port}/", env=homes, cwd=tmp_path) as server:
        r = _score(server.url)
        assert r.status_code == 200, r.text
        assert r.json() == {"sums": [6, 14], "raw_type": "str"}


def test_generated_build_context_works_with_bentoml_build(homes, tmp_path):
    context = tmp_path / "ctx"
    done = subprocess.run(
        [*TIFFIN, "build", "-f", str(PLAIN / "deployment.yml"), "--output-dir", str(context), "--version", "v2"],
        capture_output=True,
        text=True,
        env={**dict(os.environ), **homes},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (context / "bentofile.yaml").is_file() and (context / "model" / "model" / "weights.json").is_file()
    rebuilt = subprocess.run(
        [BENTOML, "build", "--version", "v3", "."],
        cwd=context,
        capture_output=True,
        text=True,
        env={**dict(os.environ), **homes},
        timeout=300,
    )
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    listed = subprocess.run(
        [BENTOML, "list", "-o", "json"], capture_output=True, text=True, env={**dict(os.environ), **homes}, timeout=120
    )
    tags = {b["tag"] for b in json.loads(listed.stdout)}
    assert {"tests-plain:v2", "tests-plain:v3"} <= tags


def test_build_of_a_bad_spec_fails_with_the_field(homes, tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("name: x\ninstance_count: two\ncode_configuration: {code: ., scoring_script: s.py}\n")
    done = subprocess.run([*TIFFIN, "build", "-f", str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "instance_count" in done.stderr and "Traceback" not in done.stderr


def test_bentoml_serve_runs_tiffin_serve_itself(homes, tmp_path):
    """docs/performance.md: the gateway (with the control plane and supervisor) can be mounted in a BentoML service."""
    from tiffin.sdk import TiffinClient
    from tiffin.specs import OnlineDeployment, load_spec

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [BENTOML, "serve", "tiffin.service:Tiffin", "--port", str(port), "--host", "127.0.0.1"]
    # A working directory of its own: BentoML puts it first on sys.path, so nothing in it may shadow tiffin.
    workdir = tmp_path / "work"
    workdir.mkdir()
    with serve_command(command, url + "/api/health", env={**homes, "TIFFIN_URL": url}, cwd=workdir) as server:
        token = (Path(homes["TIFFIN_HOME"]) / "admin-token").read_text().strip()
        client = TiffinClient(url, token)
        client.online_endpoints.create_or_update({"name": "ep", "auth_mode": "key"})
        spec = load_spec(PLAIN / "deployment.yml", OnlineDeployment, overrides=["readiness_probe.period=1"]).spec
        client.online_deployments.create_or_update(spec, "ep", all_traffic=True, timeout=120)
        assert json.loads(client.online_endpoints.invoke("ep", body={"data": [[1, 2]]})) == {
            "sums": [6],
            "raw_type": "str",
        }
        assert httpx.get(server.url + "/livez").status_code == 200  # BentoML's own probe beside it
    # Stopping BentoML stops the replicas tiffin started.
    deadline = time.monotonic() + 20
    while _replicas_of(homes["TIFFIN_HOME"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _replicas_of(homes["TIFFIN_HOME"]) == []


def _replicas_of(home: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"{home}/deployments"], capture_output=True, text=True).stdout
    return out.split()


def _listen_addresses(port: int) -> set[str]:
    """The local addresses that TCP sockets listening on ``port`` are bound to (from /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net/tcp (Linux)")
def test_bentoml_serve_of_tiffin_listens_on_loopback_unless_told_otherwise(homes, tmp_path):
    # BentoML's own default host is 0.0.0.0 (while its log says localhost); tiffin's control plane
    # holds the admin API and every endpoint, so it stays on loopback unless --host says otherwise.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [BENTOML, "serve", "tiffin.service:Tiffin", "--port", str(port)]
    workdir = tmp_path / "work"
    workdir.mkdir()
    with serve_command(command, url + "/api/health", env={**homes, "TIFFIN_URL": url}, cwd=workdir):
        assert _listen_addresses(port) == {"0100007F"}  # 127.0.0.1, and nothing else
