"""Scale to zero and back (issue 17): a ``target_concurrency`` deployment with ``min_instances: 0`` goes to 0
replicas after its stable window and scale-down delay without requests; the next request waits at the gateway
(within ``max_queue_wait_ms``) while the autoscaler, which counts it as in flight, starts a replica, and is
then answered. A deployment of the same endpoint that is not autoscaled is untouched; a mirror copy to the
deployment at zero is dropped, not queued.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import eventually
from tiffin.pids import pid_alive
from tiffin.testing import Load, serve_tiffin

SCORE = (
    "import time\n\n\ndef init():\n    pass\n\n\ndef run(raw_data):\n    time.sleep(0.02)\n    return {'ok': True}\n"
)
FAST_PROBES = {
    "readiness_probe": {"initial_delay": 1, "period": 1},
    "liveness_probe": {"initial_delay": 1, "period": 5},
}
WAIT_MS = 20000
SETTINGS = {"max_concurrent_requests_per_instance": 2, "max_queue_wait_ms": WAIT_MS, "request_timeout_ms": WAIT_MS}
TO_ZERO = {
    "type": "target_concurrency",
    "min_instances": 0,
    "max_instances": 2,
    "polling_interval": 1,
    "target_concurrency_per_instance": 2,
    "stable_window": 3,
    "panic_window": 2,
    "scale_down_delay": 2,
}


@pytest.fixture(scope="module")
def server():
    with serve_tiffin() as running:
        yield running


def events(client, name: str, kind: str) -> list[dict]:
    return [e for e in client.online_deployments.get_events(name, "zero") if e["name"] == kind]


def started_pids(client, name: str) -> list[int]:
    # "pid 1234, generation 1, start 1"
    return [int(e["message"].split(",")[0].split()[1]) for e in events(client, name, "ReplicaStarted")]


def test_scales_to_zero_and_back_on_the_next_request(server, tmp_path: Path):
    (tmp_path / "score.py").write_text(SCORE)
    code = {"code": str(tmp_path), "scoring_script": "score.py"}
    common = {"code_configuration": code, "instance_count": 1, "request_settings": SETTINGS, **FAST_PROBES}
    client = server.client()
    client.online_endpoints.create_or_update({"name": "zero", "auth_mode": "key"})
    client.online_deployments.create_or_update({"name": "blue", "scale_settings": TO_ZERO, **common}, "zero")
    client.online_deployments.create_or_update({"name": "green", **common}, "zero")
    client.online_endpoints.set_traffic("zero", {"blue": 100, "green": 0})
    key = client.online_endpoints.get_keys("zero")["primaryKey"]
    url = f"{server.url}/endpoints/zero/score"
    auth = {"Authorization": f"Bearer {key}"}
    green_pids = started_pids(client, "green")
    assert len(green_pids) == 1

    with Load(url, key, workers=2) as load:  # min_instances 0 starts with instance_count all the same
        eventually(lambda: load.total > 20, timeout=30, interval=0.2)
    assert load.failed == 0, load.statuses
    stopped = time.monotonic()

    to_zero = eventually(
        lambda: [e for e in events(client, "blue", "Scaled") if " -> 0 " in e["message"]], timeout=30, interval=0.2
    )
    went = time.monotonic() - stopped
    assert "1 -> 0 instance(s)" in to_zero[0]["message"], to_zero
    blue_pids = started_pids(client, "blue")
    eventually(lambda: not any(pid_alive(pid) for pid in blue_pids), timeout=20, interval=0.2)  # no replica left
    shown = client.online_deployments.get("blue", "zero")
    assert (shown["provisioning_state"], shown["current_instances"]) == ("Succeeded", 0), shown

    # A mirror copy to the deployment at zero is dropped: it neither waits nor wakes it.
    client.online_endpoints.set_traffic("zero", {"blue": 0, "green": 100}, {"blue": 50})
    for _ in range(8):
        assert httpx.post(url, json={"data": [1]}, headers=auth, timeout=10).status_code == 200
    mirror = client.online_endpoints.stats("zero")["mirror"]["blue"]
    assert mirror["dropped"] >= 1 and mirror["sent"] == 0, mirror
    assert not any("0 -> 1" in e["message"] for e in events(client, "blue", "Scaled"))
    assert client.online_deployments.get("blue", "zero")["current_instances"] == 0
    # The split is the user's: half to the deployment at zero, whose first request is held at the gateway while a
    # replica starts, then answered (as Knative's activator); the other half is answered by green meanwhile.
    client.online_endpoints.set_traffic("zero", {"blue": 50, "green": 50}, {})
    for _ in range(40):  # until the draw sends one to blue (each draw does with probability 1/2)
        began = time.monotonic()
        answer = httpx.post(url, json={"data": [1]}, headers=auth, timeout=WAIT_MS / 1000 + 10)
        cold = time.monotonic() - began
        assert answer.status_code == 200, answer.text
        if answer.headers["azureml-model-deployment"] == "blue":
            break
    assert answer.headers["azureml-model-deployment"] == "blue"
    assert cold < WAIT_MS / 1000, cold
    back = [e for e in events(client, "blue", "Scaled") if "0 -> 1 instance(s)" in e["message"]]
    assert back, events(client, "blue", "Scaled")
    shown = client.online_deployments.get("blue", "zero")
    assert (shown["provisioning_state"], shown["current_instances"]) == ("Succeeded", 1), shown
    assert events(client, "blue", "InstancesChanged") == []  # instance_count stays as written; Scaled says it all
    # Pinned too, while at 1: answered at once.
    pinned = httpx.post(url, json={"data": [1]}, headers={**auth, "azureml-model-deployment": "blue"}, timeout=10)
    assert pinned.status_code == 200

    # The deployment that is not autoscaled was never touched: one replica all along, no Scaled event.
    assert started_pids(client, "green") == green_pids and pid_alive(green_pids[0])
    assert events(client, "green", "Scaled") == []
    green = httpx.post(url, json={"data": [1]}, headers={**auth, "azureml-model-deployment": "green"}, timeout=10)
    assert green.status_code == 200
    print(f"to zero {went:.1f}s after the load stopped; first request at zero answered in {cold:.2f}s")


def test_a_pinned_request_at_zero_is_held_and_answered(server, tmp_path: Path):
    """The pin header (azureml-model-deployment) reaches a deployment at zero the same way the split does."""
    (tmp_path / "score.py").write_text(SCORE)
    code = {"code": str(tmp_path), "scoring_script": "score.py"}
    spec = {"code_configuration": code, "instance_count": 1, "request_settings": SETTINGS, **FAST_PROBES}
    client = server.client()
    client.online_endpoints.create_or_update({"name": "pinned", "auth_mode": "key"})
    client.online_deployments.create_or_update({"name": "blue", "scale_settings": TO_ZERO, **spec}, "pinned")
    key = client.online_endpoints.get_keys("pinned")["primaryKey"]

    def at_zero() -> bool:
        scaled = [e for e in client.online_deployments.get_events("blue", "pinned") if e["name"] == "Scaled"]
        return any(" -> 0 " in e["message"] for e in scaled)

    began = time.monotonic()
    eventually(at_zero, timeout=30, interval=0.2)  # idle from the start: a stable window and the delay
    idle = time.monotonic() - began
    assert idle >= TO_ZERO["stable_window"] - 1, idle  # not before a whole stable window of readings
    headers = {"Authorization": f"Bearer {key}", "azureml-model-deployment": "blue"}
    answer = httpx.post(f"{server.url}/endpoints/pinned/score", json={"data": [1]}, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert client.online_deployments.get("blue", "pinned")["current_instances"] == 1


def test_a_wait_shorter_than_a_start_ends_in_503_but_still_brings_a_replica(server, tmp_path: Path):
    """A replica slower to start than the stable window and the delay is not scaled away before it is ready. At
    zero, one rule for the queue, as for a restart: 503 once max_queue_wait_ms is up; the request was counted all
    the same, so the deployment comes back for the next one."""
    slow = "import time\n\n\ndef init():\n    time.sleep(7)\n\n\ndef run(raw_data):\n    return {'ok': True}\n"
    (tmp_path / "score.py").write_text(slow)
    code = {"code": str(tmp_path), "scoring_script": "score.py"}
    short = {**SETTINGS, "max_queue_wait_ms": 1500}
    spec = {"code_configuration": code, "instance_count": 1, "request_settings": short, **FAST_PROBES}
    client = server.client()
    client.online_endpoints.create_or_update({"name": "short", "auth_mode": "key"})
    client.online_deployments.create_or_update({"name": "blue", "scale_settings": TO_ZERO, **spec}, "short")
    client.online_endpoints.set_traffic("short", {"blue": 100})
    key = client.online_endpoints.get_keys("short")["primaryKey"]
    shown = client.online_deployments.get("blue", "short")
    assert (shown["provisioning_state"], shown["current_instances"]) == ("Succeeded", 1), shown
    assert [e for e in client.online_deployments.get_events("blue", "short") if e["name"] == "Scaled"] == []
    eventually(lambda: client.online_deployments.get("blue", "short")["current_instances"] == 0, timeout=30)

    began = time.monotonic()
    url = f"{server.url}/endpoints/short/score"
    answer = httpx.post(url, json={"data": [1]}, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    waited = time.monotonic() - began
    assert answer.status_code == 503, answer.text
    assert "max_queue_wait_ms" in answer.json()["message"]
    assert 1.4 < waited < 10, waited
    scaled = eventually(
        lambda: [e for e in client.online_deployments.get_events("blue", "short") if e["name"] == "Scaled"][1:],
        timeout=30,
    )
    assert scaled[0]["message"].startswith("0 -> 1 instance(s): panic"), scaled


def test_light_traffic_keeps_one_replica(server, tmp_path: Path):
    """One 20 ms request every 1.5 s: never in flight at a once-a-second point reading, yet demand. The autoscaler
    reads the admission's average load between samples (as Knative's average concurrency), so the deployment
    stays at 1 instead of going to 0 and starting again for every request."""
    (tmp_path / "score.py").write_text(SCORE)
    code = {"code": str(tmp_path), "scoring_script": "score.py"}
    spec = {"code_configuration": code, "instance_count": 1, "request_settings": SETTINGS, **FAST_PROBES}
    client = server.client()
    client.online_endpoints.create_or_update({"name": "light", "auth_mode": "key"})
    client.online_deployments.create_or_update({"name": "blue", "scale_settings": TO_ZERO, **spec}, "light")
    client.online_endpoints.set_traffic("light", {"blue": 100})
    headers = {"Authorization": f"Bearer {client.online_endpoints.get_keys('light')['primaryKey']}"}
    slowest = 0.0
    # Three stable windows and delays (3 s + 2 s each) of light traffic.
    for _ in range(10):
        began = time.monotonic()
        answer = httpx.post(f"{server.url}/endpoints/light/score", json={"data": [1]}, headers=headers, timeout=30)
        assert answer.status_code == 200, answer.text
        slowest = max(slowest, time.monotonic() - began)
        time.sleep(1.5)
    scaled = [e["message"] for e in client.online_deployments.get_events("blue", "light") if e["name"] == "Scaled"]
    assert scaled == [], scaled
    assert slowest < 0.5, slowest  # no request waited for a replica to start
