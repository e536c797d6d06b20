"""`tiffin serve` end to end: real server, real supervisor, real replica processes, HTTP only.

Load loops here are bounded in count and time and only ever talk to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from tiffin.auth import issue_token
from tiffin.testing import command_lines, serve_tiffin

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent / "deployments"
QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"
FAST_PROBES = [
    "readiness_probe.initial_delay=1",
    "readiness_probe.period=1",
    "liveness_probe.initial_delay=1",
    "liveness_probe.period=1",
]


def deployment_spec(path: Path, name: str, *overrides: str) -> dict:
    from tiffin.specs import OnlineDeployment, load_spec

    return load_spec(path, OnlineDeployment, overrides=[f"name={name}", *FAST_PROBES, *overrides]).spec.to_yaml_dict()


def cli(server, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "tiffin.cli", *args], capture_output=True, text=True, env=server.env, timeout=300
    )
    if check:
        assert done.returncode == 0, f"tiffin {' '.join(args)} -> {done.returncode}\n{done.stderr}"
    return done


def processes_of(home: Path) -> list[int]:
    """PIDs of live processes whose command line mentions ``home`` (replicas carry their spec path)."""
    return [pid for pid, cmdline in command_lines() if str(home) in cmdline]


class Load:
    """Requests from a few threads until stopped (or a hard cap on time), counting the outcomes."""

    def __init__(self, url: str, headers: dict[str, str], body: dict, threads: int = 4, max_seconds: float = 60):
        self.url, self.headers, self.body = url, headers, body
        self.statuses: Counter[int] = Counter()
        self.deployments: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(headers=self.headers, timeout=30) as client:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                try:
                    r = client.post(self.url, json=self.body)
                    with self._lock:
                        self.statuses[r.status_code] += 1
                        self.deployments[r.headers.get("azureml-model-deployment", "?")] += 1
                        if r.status_code != 200:
                            self.failures.append(f"{r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.statuses[0] += 1
                        self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


@pytest.fixture(scope="module")
def server():
    with serve_tiffin() as running:
        yield running
    # SIGTERM stopped the server: nothing it started may be left.
    time.sleep(0.5)
    assert processes_of(running.home) == []


@pytest.fixture(scope="module")
def split_endpoint(server):
    client = server.client()
    client.online_endpoints.create_or_update({"name": "split", "auth_mode": "key"})
    for name in ("blue", "green"):
        client.online_deployments.create_or_update(deployment_spec(HERE / "plain" / "deployment.yml", name), "split")
    client.online_endpoints.set_traffic("split", {"blue": 70, "green": 30})
    key = client.online_endpoints.get_keys("split")["primaryKey"]
    return {"url": f"{server.url}/endpoints/split/score", "headers": {"Authorization": f"Bearer {key}"}}


def test_split_is_within_3_percent_over_4000_requests(split_endpoint):
    seen = Counter()
    with httpx.Client(headers=split_endpoint["headers"], timeout=30) as client:
        for _ in range(4000):
            r = client.post(split_endpoint["url"], json={"data": [[1, 2]]})
            assert r.status_code == 200
            seen[r.headers["azureml-model-deployment"]] += 1
    assert abs(seen["blue"] / 4000 - 0.70) <= 0.03, seen
    assert abs(seen["green"] / 4000 - 0.30) <= 0.03, seen


def test_pin_header_overrides_the_split(split_endpoint):
    with httpx.Client(headers={**split_endpoint["headers"], "azureml-model-deployment": "green"}) as client:
        answered = {client.post(split_endpoint["url"], json={"data": [[1]]}).headers["azureml-model-deployment"]
                    for _ in range(30)}  # fmt: skip
    assert answered == {"green"}


def test_swagger_of_the_endpoint(server, split_endpoint):
    doc = httpx.get(f"{server.url}/endpoints/split/swagger.json", headers=split_endpoint["headers"]).json()
    assert "/endpoints/split/score" in doc["paths"]


def test_live_traffic_update_under_load_fails_nothing(server, split_endpoint):
    client = server.client()
    with Load(split_endpoint["url"], split_endpoint["headers"], {"data": [[1, 2]]}) as load:
        for traffic in ({"blue": 100, "green": 0}, {"blue": 0, "green": 100}, {"blue": 50, "green": 50},
                        {"blue": 70, "green": 30}):  # fmt: skip
            time.sleep(0.7)
            client.online_endpoints.set_traffic("split", traffic)
        time.sleep(0.7)
    assert load.total > 100
    assert load.failures == [], load.failures[:5]
    assert set(load.deployments) == {"blue", "green"}


def test_rolling_update_of_a_deployment_under_load_fails_nothing(server, split_endpoint):
    client = server.client()
    with Load(split_endpoint["url"], split_endpoint["headers"], {"data": [[1, 2]]}) as load:
        spec = deployment_spec(HERE / "plain" / "deployment.yml", "blue", "environment_variables.ROLLED=yes")
        client.online_deployments.create_or_update(spec, "split", timeout=120)
        time.sleep(3)  # the old replicas drain and stop while the load goes on
    assert load.total > 100
    assert load.failures == [], load.failures[:5]


def test_killing_a_replica_under_load(server):
    client = server.client()
    client.online_endpoints.create_or_update({"name": "kill", "auth_mode": "key"})
    spec = deployment_spec(HERE / "plain" / "deployment.yml", "blue", "instance_count=2")
    client.online_deployments.create_or_update(spec, "kill", all_traffic=True)
    key = client.online_endpoints.get_keys("kill")["primaryKey"]
    url, headers = f"{server.url}/endpoints/kill/score", {"Authorization": f"Bearer {key}"}

    def replica_pids() -> list[int]:
        return [p for p in processes_of(server.home) if "/deployments/kill/" in _cmdline(p)]

    pids = replica_pids()
    assert len(pids) >= 2, pids
    with Load(url, headers, {"data": [[1, 2]]}) as load:
        time.sleep(1)
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # restarted: two replicas again, a new pid among them
            now = replica_pids()
            if len(now) >= 2 and pids[0] not in now:
                break
            time.sleep(0.2)
        time.sleep(2)
    assert pids[0] not in replica_pids() and len(replica_pids()) >= 2
    assert load.total > 200
    failed = load.total - load.statuses[200]
    assert failed / load.total < 0.005, (failed, load.total, load.failures[:5])
    assert client.online_deployments.get("blue", "kill")["provisioning_state"] == "Succeeded"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_auth_fuzz_lets_nothing_through(server):
    client = server.client()
    client.online_endpoints.create_or_update({"name": "keys", "auth_mode": "key"})
    client.online_endpoints.create_or_update({"name": "tokens", "auth_mode": "aml_token"})
    for ep in ("keys", "tokens"):
        client.online_deployments.create_or_update(deployment_spec(HERE / "plain" / "deployment.yml", "blue"), ep,
                                                   all_traffic=True)  # fmt: skip
    keys = client.online_endpoints.get_keys("keys")
    token = client.online_endpoints.get_keys("tokens")["accessToken"]
    other_key = keys["primaryKey"]
    url = f"{server.url}/endpoints/%s/score"

    def status(ep: str, header: str | None) -> int:
        headers = {"Authorization": header} if header is not None else {}
        return httpx.post(url % ep, json={"data": [[1]]}, headers=headers).status_code

    # The right credentials work...
    assert status("keys", f"Bearer {keys['primaryKey']}") == 200
    assert status("keys", f"Bearer {keys['secondaryKey']}") == 200
    assert status("tokens", f"Bearer {token}") == 200
    # ...and nothing else does.
    header, payload, signature = token.split(".")
    expired = issue_token("tokens", "whatever-secret-that-is-long-enough-0123456789").access_token
    bad = [
        ("keys", None), ("keys", ""), ("keys", "Bearer"), ("keys", "Bearer nope"), ("keys", keys["primaryKey"]),
        ("keys", f"Basic {keys['primaryKey']}"), ("keys", f"Bearer {keys['primaryKey'][:-1]}"),
        ("keys", f"Bearer {keys['primaryKey']}x"), ("keys", f"Bearer {token}"),
        ("keys", f"Bearer {server.admin_token}"),
        ("tokens", None), ("tokens", f"Bearer {other_key}"), ("tokens", f"Bearer {header}.{payload}.{signature[::-1]}"),
        ("tokens", f"Bearer {header}.{payload[:-2]}xx.{signature}"), ("tokens", f"Bearer {expired}"),
        ("tokens", f"Bearer {token}extra"),
    ]  # fmt: skip
    assert [(ep, h, status(ep, h)) for ep, h in bad if status(ep, h) != 401] == []

    # Regenerating revokes at once: the old primary key, then every old token.
    client.online_endpoints.regenerate_keys("keys", "primary")
    assert status("keys", f"Bearer {keys['primaryKey']}") == 401
    assert status("keys", f"Bearer {keys['secondaryKey']}") == 200
    new_primary = client.online_endpoints.get_keys("keys")["primaryKey"]
    assert status("keys", f"Bearer {new_primary}") == 200
    client.online_endpoints.regenerate_keys("tokens")
    assert status("tokens", f"Bearer {token}") == 401
    assert status("tokens", f"Bearer {client.online_endpoints.get_keys('tokens')['accessToken']}") == 200


def test_request_settings_from_the_yaml_give_408_429_and_413(server):
    client = server.client()
    client.online_endpoints.create_or_update({"name": "limits", "auth_mode": "key"})
    spec = deployment_spec(HERE / "slow" / "deployment.yml", "slow")  # timeout 1000 ms, 1 at a time, 200 ms queue
    client.online_deployments.create_or_update(spec, "limits", all_traffic=True)
    key = client.online_endpoints.get_keys("limits")["primaryKey"]
    url, headers = f"{server.url}/endpoints/limits/score", {"Authorization": f"Bearer {key}"}
    r = httpx.post(url, json={"sleep": 2}, headers=headers, timeout=30)
    assert r.status_code == 408 and "1000 ms" in r.json()["message"]
    time.sleep(1.5)
    codes: list[int] = []
    holder = threading.Thread(
        target=lambda: codes.append(httpx.post(url, json={"sleep": 0.8}, headers=headers).status_code)
    )
    holder.start()
    time.sleep(0.2)
    r = httpx.post(url, json={"sleep": 0}, headers=headers)
    holder.join()
    assert r.status_code == 429 and codes == [200]
    r = httpx.post(url, content=b"x" * (101 * 1024 * 1024), headers=headers, timeout=60)
    assert r.status_code == 413


def test_failed_deployment_shows_why(server):
    client = server.client()
    client.online_endpoints.create_or_update({"name": "broken", "auth_mode": "key"})
    done = cli(server, "online-deployment", "create", "-f", str(HERE / "init_fails" / "deployment.yml"),
               "-e", "broken", *[a for o in FAST_PROBES for a in ("--set", o)], check=False)  # fmt: skip
    assert done.returncode == 1
    assert "cannot find the model file" in done.stderr
    shown = json.loads(cli(server, "online-deployment", "show", "-n", "init-fails", "-e", "broken").stdout)
    assert shown["provisioning_state"] == "Failed" and "cannot find the model file" in shown["reason"]
    logs = cli(server, "online-deployment", "get-logs", "-n", "init-fails", "-e", "broken", "--lines", "50").stdout
    assert "RuntimeError: cannot find the model file" in logs


def test_cli_end_to_end_like_an_azure_script(server, tmp_path):
    """Azure's deploy script, `az ml` replaced by `tiffin`: create, invoke, shift traffic, delete."""
    endpoint = yaml.safe_load((QUICKSTART / "endpoint.yml").read_text())
    assert endpoint["name"] == "my-endpoint"
    subprocess.run([sys.executable, str(QUICKSTART / "train.py")], check=True, capture_output=True)
    cli(server, "online-endpoint", "create", "-f", str(QUICKSTART / "endpoint.yml"))
    probes = [a for o in FAST_PROBES for a in ("--set", o)]
    created = json.loads(
        cli(
            server,
            "online-deployment",
            "create",
            "-f",
            str(QUICKSTART / "blue-deployment.yml"),
            "--all-traffic",
            *probes,
        ).stdout
    )
    assert created["provisioning_state"] == "Succeeded"
    cli(server, "online-deployment", "create", "-f", str(QUICKSTART / "green-deployment.yml"), *probes)
    shown = json.loads(cli(server, "online-endpoint", "show", "-n", "my-endpoint").stdout)
    assert shown["traffic"] == {"blue": 100}
    assert shown["scoring_uri"] == f"{server.url}/endpoints/my-endpoint/score"
    assert shown["openapi_uri"] == f"{server.url}/endpoints/my-endpoint/swagger.json"
    assert {"name", "auth_mode", "mirror_traffic", "provisioning_state"} <= set(shown)

    request = str(QUICKSTART / "sample-request.json")
    blue = json.loads(cli(server, "online-endpoint", "invoke", "-n", "my-endpoint", "--request-file", request).stdout)
    green = json.loads(cli(server, "online-endpoint", "invoke", "-n", "my-endpoint", "--request-file", request,
                           "--deployment-name", "green").stdout)  # fmt: skip
    assert len(blue) == len(green) == 2 and blue != green  # two models, two answers

    # As with az, an update may take its name from the file.
    cli(server, "online-endpoint", "update", "-f", str(QUICKSTART / "endpoint.yml"), "--set", "description=quick")
    cli(server, "online-endpoint", "update", "-n", "my-endpoint", "--traffic", "blue=90 green=10")
    shown = json.loads(cli(server, "online-endpoint", "show", "-n", "my-endpoint").stdout)
    assert shown["traffic"] == {"blue": 90, "green": 10} and shown["description"] == "quick"
    green = cli(server, "online-endpoint", "show", "-n", "my-endpoint", "-o", "tsv", "--query", "traffic.green")
    assert green.stdout.strip() == "10"
    key = cli(
        server, "online-endpoint", "get-credentials", "-n", "my-endpoint", "-o", "tsv", "--query", "primaryKey"
    ).stdout.strip()
    r = httpx.post(shown["scoring_uri"], content=Path(request).read_bytes(), headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200

    cli(server, "online-endpoint", "update", "-n", "my-endpoint", "--mirror-traffic", "green=20",
        "--traffic", "blue=100 green=0")  # fmt: skip
    auth = {"Authorization": f"Bearer {key}"}
    for _ in range(30):
        r = httpx.post(shown["scoring_uri"], content=Path(request).read_bytes(), headers=auth)
        assert r.headers["azureml-model-deployment"] == "blue"
    time.sleep(0.5)
    stats = server.client().online_endpoints.stats("my-endpoint")
    assert stats["mirror"]["green"]["sent"] > 0

    refused = cli(server, "online-deployment", "delete", "-n", "blue", "-e", "my-endpoint", "--yes", check=False)
    assert refused.returncode == 1 and "traffic" in refused.stderr
    cli(server, "online-endpoint", "delete", "-n", "my-endpoint", "--yes")
    gone = cli(server, "online-endpoint", "show", "-n", "my-endpoint", check=False)
    assert gone.returncode == 1 and "not found" in gone.stderr


def test_sigterm_stops_everything_it_started(tmp_path):
    with serve_tiffin(tmp_path / "home") as running:
        client = running.client()
        client.online_endpoints.create_or_update({"name": "ep", "auth_mode": "key"})
        spec = deployment_spec(HERE / "plain" / "deployment.yml", "blue", "instance_count=2")
        client.online_deployments.create_or_update(spec, "ep", all_traffic=True)
        assert len(processes_of(running.home)) >= 2  # the 2 replicas (their spec files live in the home)
        running.process.send_signal(signal.SIGTERM)
        running.process.wait(30)
        # uvicorn shuts down gracefully, then re-raises the signal it caught: exit "by SIGTERM".
        assert running.process.returncode in (0, -signal.SIGTERM)
        assert "Traceback" not in running.log()
    deadline = time.monotonic() + 10
    while processes_of(tmp_path / "home") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of(tmp_path / "home") == []


def test_sigkill_of_the_server_still_takes_the_replicas_down(tmp_path):
    with serve_tiffin(tmp_path / "home") as running:
        client = running.client()
        client.online_endpoints.create_or_update({"name": "ep", "auth_mode": "key"})
        client.online_deployments.create_or_update(deployment_spec(HERE / "plain" / "deployment.yml", "blue"), "ep")
        running.process.send_signal(signal.SIGKILL)
        running.process.wait(10)
        deadline = time.monotonic() + 15
        while processes_of(tmp_path / "home") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_of(tmp_path / "home") == []


def test_root_and_unknown_paths(server):
    assert httpx.get(server.url + "/").json()["api"] == "/api/openapi.json"
    r = httpx.get(server.url + "/nope")
    assert r.status_code == 404 and "openapi" in r.json()["message"]
    r = httpx.get(server.url + "/api/openapi.json")
    assert r.status_code == 200 and "/online-endpoints" in r.json()["paths"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or not hasattr(os, "sched_getaffinity"), reason="needs 2 CPUs")
def test_replica_cpus_keep_replicas_and_the_gateway_apart(tmp_path):
    last = (os.cpu_count() or 2) - 1
    with serve_tiffin(tmp_path / "home", extra_args=["--replica-cpus", str(last)]) as running:
        client = running.client()
        client.online_endpoints.create_or_update({"name": "ep", "auth_mode": "key"})
        client.online_deployments.create_or_update(deployment_spec(HERE / "plain" / "deployment.yml", "blue"), "ep")
        (replica,) = processes_of(running.home)
        assert os.sched_getaffinity(replica) == {last}
        assert last not in os.sched_getaffinity(running.process.pid)
