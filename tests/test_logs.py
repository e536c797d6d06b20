"""Console logs, the storage-initializer log and serve's own log, with real replicas (issue 15, logs).

A scoring script whose ``init()`` calls ``logging.info`` and ``print`` shows both in ``get-logs`` (CLI and SDK),
each line with its time and instance id; ``--lines``, ``--container``, ``--instance-id`` and ``--follow`` work as
``az ml online-deployment get-logs``'s; replica logs rotate; the log routes take only the admin token and no path
outside ``TIFFIN_HOME/logs``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import eventually
from tiffin.paths import replica_log_path, server_log_path
from tiffin.testing import serve_tiffin

FAST_PROBES = {
    "readiness_probe": {"initial_delay": 1, "period": 1},
    "liveness_probe": {"initial_delay": 1, "period": 1},
}
SCORE = """\
import logging
import sys


def init():
    logging.info("marker-from-logging %s", "init")
    print("marker2-from-print")
    print("to-stderr", file=sys.stderr)


def run(raw_data):
    print("scored " + raw_data)
    return {"ok": True}
"""
NOISY = """\
def init():
    pass


def run(raw_data):
    for _ in range(20):
        print("x" * 100)
    return {"ok": True}
"""
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
MAX_BYTES = 20_000


def cli(server, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "tiffin.cli", *args], capture_output=True, text=True, env=server.env, timeout=120
    )
    if check:
        assert done.returncode == 0, f"tiffin {' '.join(args)} -> {done.returncode}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def server():
    with serve_tiffin(env={"TIFFIN_LOG_MAX_BYTES": str(MAX_BYTES), "TIFFIN_LOG_BACKUPS": "2"}) as running:
        yield running


def deploy(server, tmp: Path, endpoint: str, name: str, script: str, instances: int = 1) -> dict:
    code = tmp / f"{endpoint}-{name}"
    code.mkdir()
    (code / "score.py").write_text(script)
    spec = {
        "name": name,
        "code_configuration": {"code": str(code), "scoring_script": "score.py"},
        "instance_count": instances,
        **FAST_PROBES,
    }
    client = server.client()
    client.online_endpoints.create_or_update({"name": endpoint, "auth_mode": "key"})
    deployed = client.online_deployments.create_or_update(spec, endpoint, all_traffic=True, timeout=120)
    return {"deployment": deployed, "key": client.online_endpoints.get_keys(endpoint)["primaryKey"]}


def score(server, endpoint: str, key: str, body: str) -> None:
    answer = httpx.post(
        f"{server.url}/endpoints/{endpoint}/score", content=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def marked(server, tmp_path_factory):
    return deploy(server, tmp_path_factory.mktemp("code"), "logs", "blue", SCORE, instances=2)


def test_init_logging_and_prints_show_in_get_logs_with_time_and_instance(server, marked):
    client = server.client()

    def console() -> str | None:
        text = client.online_deployments.get_logs("blue", "logs", container="inference-server")
        return text if "marker-from-logging" in text else None

    text = eventually(console)
    # logging.info from init(): the root logger is at INFO with azmlinfsrv's format, under a stamped line.
    assert re.search(rf"^{STAMP} blue-0 \| I \[\d+\] root - marker-from-logging init$", text, re.M), text
    assert re.search(rf"^{STAMP} blue-0 \| marker2-from-print$", text, re.M), text
    assert re.search(rf"^{STAMP} blue-0 \| to-stderr$", text, re.M), text
    # Replica 1's console is its own file and says its own instance id.
    second = client.online_deployments.get_logs("blue", "logs", instance=1, container="inference-server")
    assert re.search(rf"^{STAMP} blue-1 \| marker2-from-print$", second, re.M), second
    assert "blue-0" not in second

    # The CLI: the same lines; --lines; --instance-id by id or number; the endpoint's shorthand.
    shown = cli(server, "online-deployment", "get-logs", "-n", "blue", "-e", "logs", "-c", "inference-server").stdout
    assert "marker-from-logging init" in shown and "marker2-from-print" in shown
    one = cli(
        server, "online-deployment", "get-logs", "-n", "blue", "-e", "logs", "--lines", "1", "-c", "inference-server"
    )
    assert len(one.stdout.splitlines()) == 1
    by_id = cli(server, "online-deployment", "get-logs", "-n", "blue", "-e", "logs", "--instance-id", "blue-1", "-c",
                "inference-server").stdout  # fmt: skip
    assert " blue-1 | marker2-from-print" in by_id and " blue-0 |" not in by_id
    short = cli(server, "online-endpoint", "get-logs", "-n", "logs", "-i", "1", "-c", "inference-server").stdout
    assert " blue-1 | marker2-from-print" in short
    wrong = cli(server, "online-deployment", "get-logs", "-n", "blue", "-e", "logs", "-i", "green-1", check=False)
    assert wrong.returncode == 1 and "blue-N or N" in wrong.stderr


def test_storage_initializer_shows_what_prepared_the_deployment(server, marked):
    text = server.client().online_deployments.get_logs("blue", "logs", container="storage-initializer")
    assert "[tiffin] runner: script" in text and "[tiffin] scoring_script: score.py" in text, text
    assert "no environment to build" in text and "marker2-from-print" not in text
    both = cli(server, "online-deployment", "get-logs", "-n", "blue", "-e", "logs", "--lines", "400").stdout
    assert both.index("[tiffin] runner: script") < both.index("marker2-from-print")
    bad = cli(server, "online-deployment", "get-logs", "-n", "blue", "-e", "logs", "-c", "sidecar", check=False)
    assert bad.returncode == 1 and "inference-server or storage-initializer" in bad.stderr


def test_follow_prints_a_line_logged_after_it_started(server, marked):
    follower = subprocess.Popen(
        [sys.executable, "-m", "tiffin.cli", "online-deployment", "get-logs", "-n", "blue", "-e", "logs", "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server.env,
        start_new_session=True,
    )
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(follower.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        eventually(lambda: any("marker2-from-print" in line for line in seen), timeout=20)
        marker = f"follow-{uuid.uuid4().hex}"

        def followed() -> bool | None:
            # Requests until one lands on replica 0, the one followed (two replicas share the traffic).
            score(server, "logs", marked["key"], f'"{marker}"')
            time.sleep(0.5)
            return any(marker in line for line in seen) or None

        eventually(followed, timeout=30)
    finally:
        follower.terminate()
        follower.wait(10)
    line = next(line for line in seen if marker in line)
    assert re.match(rf"^{STAMP} blue-0 \| scored ", line), line


def test_replica_logs_rotate_and_stay_bounded(server, tmp_path):
    noisy = deploy(server, tmp_path, "noisy", "loud", NOISY)
    log = replica_log_path(server.home, "noisy", "loud", 0)
    for _ in range(4):  # 4 x 12 requests x ~2.8 kB: past MAX_BYTES each round, rotated in between
        for _ in range(12):
            score(server, "noisy", noisy["key"], "{}")
        eventually(lambda: log.stat().st_size <= MAX_BYTES or None, timeout=10)
    assert log.with_name("replica-0.log.1").is_file() and log.with_name("replica-0.log.2").is_file()
    assert not log.with_name("replica-0.log.3").exists()  # TIFFIN_LOG_BACKUPS=2
    kept = sum(p.stat().st_size for p in log.parent.glob("replica-0.log*"))
    assert kept < 4 * 12 * 2_800, kept
    # The newest lines are still there, and get-logs reads them.
    tail = server.client().online_deployments.get_logs("loud", "noisy", lines=3, container="inference-server")
    assert tail.count("x" * 100) == 3


def test_serve_writes_its_own_log_file_and_says_where(server):
    path = server_log_path(server.home)
    assert f"tiffin serve logs to stderr and {path}" in server.log()
    eventually(lambda: "started replica" in path.read_text() or None)
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_log_and_event_routes_need_the_admin_token_and_stay_in_their_folder(server, marked):
    base = f"{server.url}/api/online-endpoints/logs/deployments/blue"
    for route in ("/logs", "/events"):
        assert httpx.get(base + route).status_code == 401
        assert httpx.get(base + route, headers={"Authorization": "Bearer not-the-token"}).status_code == 401
        assert httpx.get(base + route, headers={"Authorization": f"Bearer {marked['key']}"}).status_code == 401
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    for name in ("..%2F..%2Fadmin-token", "..", "blue%2F..%2F..", "%2e%2e"):
        for route in ("/logs", "/events"):
            answer = httpx.get(f"{server.url}/api/online-endpoints/logs/deployments/{name}{route}", headers=admin)
            assert 400 <= answer.status_code < 500, (name, route, answer.status_code)
            assert server.admin_token not in answer.text
    assert httpx.get(base + "/logs", params={"lines": 10_001}, headers=admin).status_code == 400
    assert httpx.get(base + "/logs", params={"container": "x"}, headers=admin).status_code == 400
    assert httpx.get(base + "/events", params={"limit": 0}, headers=admin).status_code == 400


def test_offset_reads_only_what_came_after(server, marked):
    client = server.client()
    _, offset = client.online_deployments.read_logs("blue", "logs", None)
    assert offset == replica_log_path(server.home, "logs", "blue", 0).stat().st_size
    text, again = client.online_deployments.read_logs("blue", "logs", offset)
    assert (text, again) == ("", offset)
    _, start = client.online_deployments.read_logs("blue", "logs", 10**9)  # past the end (rotated): from 0
    assert start == offset
