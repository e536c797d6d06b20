"""Guarded rollouts with real replicas (issue 17): a failing deployment is rolled back by the error guard within its
first step, a slow one by the P99 guard, a good one reaches 100%; a mirror phase reports how often the new
deployment answers as the current one; pause, resume and abort; a rollout goes on after tiffin serve restarts.

One server and one endpoint ("ro") with a deployment per behaviour; short steps and small --min-requests. Every
wait polls with a generous deadline (a loaded 2-core machine).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import eventually
from tiffin.sdk import TiffinClient
from tiffin.testing import Load, serve_tiffin

SCRIPT = """import time
calls = 0


def init():
    pass


def run(raw_data):
    global calls
    calls += 1
    time.sleep({sleep})
    if {fail_every} and calls % {fail_every} == 0:
        raise RuntimeError("this deployment fails every {fail_every}th request")
    return {{"y": [1.0, {second}]}}
"""
DEPLOYMENTS: dict[str, dict[str, Any]] = {
    "blue": {"sleep": 0.03, "fail_every": 0, "second": "2.0"},
    "good": {"sleep": 0.03, "fail_every": 0, "second": "2.0000000001"},  # equal within --tolerance 1e-6
    "bad": {"sleep": 0.03, "fail_every": 10, "second": "2.0"},
    # The P99 guard's pair: "slow" takes twice as long as "base" (sleeps long enough that a loaded machine's
    # hiccups of a few tens of milliseconds do not hide a 2x difference from a 1.5x guard). Both run requests side
    # by side (THREADS), so a request's latency is its own time, not its place in a replica's queue.
    "base": {"sleep": 0.15, "fail_every": 0, "second": "2.0"},
    "slow": {"sleep": 0.30, "fail_every": 0, "second": "2.0"},
    "diff": {"sleep": 0.03, "fail_every": 0, "second": "3.0"},
}
THREADS = {"base": 4, "slow": 4}
FAST_PROBES = {
    "readiness_probe": {"initial_delay": 1, "period": 1},
    "liveness_probe": {"initial_delay": 1, "period": 5},
}
ENDPOINT = "ro"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rollout") / "home"


@pytest.fixture(scope="module")
def server(home: Path, tmp_path_factory: pytest.TempPathFactory):
    with serve_tiffin(home) as running:
        client = running.client()
        client.online_endpoints.create_or_update({"name": ENDPOINT, "auth_mode": "key"})
        for name, values in DEPLOYMENTS.items():
            code = tmp_path_factory.mktemp(name)
            (code / "score.py").write_text(SCRIPT.format(**values))
            spec = {
                "name": name,
                "code_configuration": {"code": str(code), "scoring_script": "score.py"},
                "instance_count": 1,
                "request_settings": {"max_concurrent_requests_per_instance": 4, "request_timeout_ms": 30000},
                "environment_variables": {"TIFFIN_SCORING_THREADS": str(THREADS.get(name, 1))},
                **FAST_PROBES,
            }
            client.online_deployments.create_or_update(spec, ENDPOINT, timeout=180)
        client.online_endpoints.set_traffic(ENDPOINT, {"blue": 100})
        yield running


def key_of(server) -> str:
    return server.client().online_endpoints.get_keys(ENDPOINT)["primaryKey"]


def finished(client: TiffinClient, timeout: float = 90) -> dict[str, Any]:
    return eventually(
        lambda: (r := client.online_endpoints.get_rollout(ENDPOINT))["status"] not in ("Running", "Mirroring",
                                                                                      "RollingBack", "Aborting")
        and r,
        timeout=timeout,
        interval=0.2,
    )  # fmt: skip


def traffic(client: TiffinClient) -> dict[str, int]:
    return {k: v for k, v in client.online_endpoints.get(ENDPOINT)["traffic"].items() if v}


def answers(server, deployment: str) -> bool:
    headers = {"Authorization": f"Bearer {key_of(server)}", "azureml-model-deployment": deployment}
    return (
        httpx.post(f"{server.url}/endpoints/{ENDPOINT}/score", json={"data": [1]}, headers=headers).status_code == 200
    )


def events(client: TiffinClient, deployment: str) -> list[str]:
    return [e["name"] for e in client.online_deployments.get_events(deployment, ENDPOINT)]


def test_rollout_routes_need_the_admin_token_and_refuse_bad_input(server):
    url = f"{server.url}/api/online-endpoints/{ENDPOINT}/rollout"
    for method, path in (("GET", ""), ("POST", ""), ("POST", "/pause"), ("POST", "/abort")):
        answer = httpx.request(method, url + path, headers={"Authorization": "Bearer wrong"}, json={"to": "good"})
        assert answer.status_code == 401, (method, path, answer.text)
    admin = {"Authorization": f"Bearer {server.admin_token}"}
    for body in ({"to": "good", "steps": "25,5,100"}, {"to": "nope"}, {"to": "good", "mirror": 80}, {"steps": "5"},
                 {"to": "good", "step_interval": "soon"}, {"to": "good", "color": "red"}):  # fmt: skip
        answer = httpx.post(url, headers=admin, json=body)
        assert answer.status_code in (400, 422), (body, answer.text)
        assert "message" in answer.json()
    assert httpx.get(url, headers=admin).status_code == 404  # no rollout yet


def test_failing_deployment_is_rolled_back_within_its_first_step(server):
    client = server.client()
    with Load(f"{server.url}/endpoints/{ENDPOINT}/score", key_of(server)) as load:
        eventually(lambda: load.total > 20, timeout=60)
        began, before = time.monotonic(), load.total
        client.online_endpoints.rollout(ENDPOINT, "bad", steps="20,100", step_interval="60s", min_requests=30)
        rollout = finished(client)
        took = time.monotonic() - began
        rate = (load.total - before) / took
        failed = load.statuses.get(500, 0)
    assert rollout["status"] == "RolledBack", rollout
    assert "error rate" in rollout["reason"] and "step 1" in rollout["reason"], rollout
    assert rollout["readings"]["new"]["errors"] >= 3, rollout
    assert traffic(client) == {"blue": 100}
    assert took < 60, took  # judged as soon as 30 requests came in, not at the step's end
    # A whole 60 s step at 20% would have failed 10% of 20% of the requests of 60 s.
    assert failed < 0.1 * 0.2 * rate * 60, (failed, rate, load.statuses)
    assert "RolledBack" in events(client, "bad")
    print(f"bad: rolled back after {took:.1f}s, {failed} failed of {load.total}; {rollout['reason']}")


def test_twice_as_slow_deployment_is_rolled_back_on_the_p99_guard(server):
    client = server.client()
    client.online_endpoints.set_traffic(ENDPOINT, {"base": 100})
    try:
        with Load(f"{server.url}/endpoints/{ENDPOINT}/score", key_of(server), workers=4) as load:
            client.online_endpoints.rollout(ENDPOINT, "slow", steps="30,100", step_interval="8s", min_requests=20)
            rollout = finished(client)
        assert rollout["status"] == "RolledBack", rollout
        assert "P99" in rollout["reason"] and "step 1" in rollout["reason"], rollout
        new, current = rollout["readings"]["new"], rollout["readings"]["current"]
        assert new["errors"] == 0 and current["errors"] == 0, rollout
        assert 1.5 < new["p99_ms"] / current["p99_ms"] < 3, rollout  # 2x, as the deployments sleep
        assert traffic(client) == {"base": 100}
        assert load.statuses.keys() == {200}, load.statuses
        print("slow:", rollout["reason"])
    finally:
        client.online_endpoints.set_traffic(ENDPOINT, {"blue": 100})


def test_mirror_of_a_differing_model_reports_disagreement_then_abort(server):
    client = server.client()
    with Load(f"{server.url}/endpoints/{ENDPOINT}/score", key_of(server)):
        client.online_endpoints.rollout(ENDPOINT, "diff", mirror=50, mirror_duration="10m", min_requests=10)
        eventually(lambda: client.online_endpoints.get(ENDPOINT)["mirror_traffic"].get("diff") == 50, timeout=30)
        report = eventually(
            lambda: (a := client.online_endpoints.stats(ENDPOINT).get("agreement")) and a["compared"] >= 10 and a,
            timeout=60,
        )
        assert report["active"] and report["deployment"] == "diff"
        with pytest.raises(Exception, match="in progress"):  # one rollout per endpoint at a time: 409
            client.online_endpoints.rollout(ENDPOINT, "good")
        assert report["agreement"] < 1 and report["differing"] == report["compared"], report
        # Per deployment that answered the callers: blue, the only one with traffic.
        assert report["by_deployment"].keys() == {"blue"}, report
        assert report["by_deployment"]["blue"]["differing"] == report["by_deployment"]["blue"]["compared"] > 0
        paused = client.online_endpoints.pause_rollout(ENDPOINT)
        assert paused["status"] == "Paused"
        client.online_endpoints.abort_rollout(ENDPOINT)
        rollout = finished(client)
    assert rollout["status"] == "Aborted", rollout
    assert rollout["agreement"]["differing"] >= 10, rollout
    endpoint = client.online_endpoints.get(ENDPOINT)
    assert traffic(client) == {"blue": 100} and not any(endpoint["mirror_traffic"].values()), endpoint
    with pytest.raises(Exception, match="Aborted"):
        client.online_endpoints.resume_rollout(ENDPOINT)


def test_good_deployment_after_an_agreeing_mirror_phase_reaches_100(server):
    client = server.client()
    with Load(f"{server.url}/endpoints/{ENDPOINT}/score", key_of(server)) as load:
        client.online_endpoints.rollout(
            ENDPOINT, "good", steps="25,50,100", step_interval="2s", min_requests=10, max_p99_ratio=20,
            mirror=50, mirror_duration="4s",
        )  # fmt: skip
        rollout = finished(client, timeout=120)
    assert rollout["status"] == "Succeeded", rollout
    agreement = rollout["agreement"]
    assert agreement["compared"] > 0 and agreement["agreement"] == 1.0 and agreement["differing"] == 0, agreement
    assert agreement["by_deployment"]["blue"]["agreement"] == 1.0, agreement
    assert [h["percent"] for h in rollout["history"]] == [25, 50], rollout
    assert traffic(client) == {"good": 100}
    assert load.statuses.keys() == {200}, load.statuses
    names = events(client, "good")
    assert "RolloutSucceeded" in names and "TrafficChanged" in names and "RolloutAgreement" in names


def test_rollout_goes_on_after_tiffin_serve_restarts(server, home: Path):
    client = server.client()
    client.online_endpoints.rollout(ENDPOINT, "blue", steps="50,100", step_interval="2s", min_requests=10,
                                    max_p99_ratio=20)  # fmt: skip
    eventually(lambda: traffic(client) == {"blue": 50, "good": 50}, timeout=30)
    assert client.online_endpoints.pause_rollout(ENDPOINT)["status"] == "Paused"
    server.process.terminate()
    server.process.wait(timeout=60)
    with serve_tiffin(home) as again:
        client = again.client()
        assert client.online_endpoints.get_rollout(ENDPOINT)["status"] == "Paused"
        assert traffic(client) == {"blue": 50, "good": 50}
        for name in ("blue", "good"):  # their replicas start again: wait until each answers
            eventually(lambda name=name: answers(again, name), timeout=120, interval=0.5)
        assert client.online_endpoints.resume_rollout(ENDPOINT)["status"] == "Running"
        with Load(f"{again.url}/endpoints/{ENDPOINT}/score", key_of(again)):
            rollout = finished(client, timeout=120)
        assert rollout["status"] == "Succeeded", rollout
        assert traffic(client) == {"blue": 100}
