"""The gateway routing to per-deployment Services (``TIFFIN_DEPLOYMENT_URL_TEMPLATE``, tiffin.gateway.services).

No cluster runs here: a Service is stood in for by a real replica (``tiffin replica serve``) on a loopback port,
reached through the same template and mapping code the cluster's gateway uses. Each stand-in has an environment
variable of its own (``STANDIN``), so an answer says which one served it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from conftest import eventually

from tiffin.containers.kubernetes import endpoint_manifests
from tiffin.errors import TiffinError
from tiffin.gateway.services import TEMPLATE_ENV, URLS_ENV, ServiceURLs
from tiffin.testing import command_lines, free_port, serve_command, serve_deployment, serve_tiffin

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent / "deployments"
PLAIN = HERE / "plain" / "deployment.yml"
SLOW = HERE / "slow" / "deployment.yml"
SLOW_SETTINGS = ("max_concurrent_requests_per_instance=1", "max_queue_wait_ms=100", "request_timeout_ms=2000")
FAST = [
    "readiness_probe.initial_delay=1",
    "readiness_probe.period=1",
    "readiness_probe.timeout=1",
    "readiness_probe.failure_threshold=2",
]


def spec(name: str, *overrides: str, file: Path = PLAIN) -> dict:
    from tiffin.specs import OnlineDeployment, load_spec

    return load_spec(file, OnlineDeployment, overrides=[f"name={name}", *FAST, *overrides]).spec.to_yaml_dict()


def standin(name: str, file: Path = PLAIN):
    return serve_deployment(file, env={"STANDIN": name})


# --- the URL of a deployment -------------------------------------------------------------------------


def test_the_gateways_template_names_the_service_the_export_writes():
    """The exported gateway's template, filled in, is the exported Service's name and port."""
    endpoint = {"name": "My-Endpoint", "auth_mode": "key", "traffic": {"blue_1": 100}}
    deployment = {"name": "blue_1", "endpoint_name": "My-Endpoint", "instance_count": 1}
    items = endpoint_manifests(endpoint, [deployment]).items
    service = next(i for i in items if i["kind"] == "Service" and i["metadata"]["name"] != "tiffin-gateway")
    gateway = next(i for i in items if i["kind"] == "Deployment" and i["metadata"]["name"] == "tiffin-gateway")
    env = {e["name"]: e.get("value") for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    urls = ServiceURLs(env[TEMPLATE_ENV])
    base, prefix = urls.base_and_prefix("My-Endpoint", "blue_1")
    assert base == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    assert prefix == b""


def test_templates_and_mappings():
    urls = ServiceURLs("http://{service}.ml.svc.cluster.local/x/", {"e/d": "http://127.0.0.1:9/"})
    assert urls.base_and_prefix("e", "d") == ("http://127.0.0.1:9", b"")
    assert urls.base_and_prefix("ep", "green") == ("http://ep-green.ml.svc.cluster.local:80", b"/x")
    assert ServiceURLs("http://[::1]:5001").base_and_prefix("e", "d") == ("http://[::1]:5001", b"")
    for bad in ("https://{service}", "http://{nope}:80", "http://u:p@{service}", "{service}:80", "http://{service}:x"):
        with pytest.raises(TiffinError, match=TEMPLATE_ENV):
            ServiceURLs(bad)
    with pytest.raises(TiffinError, match=URLS_ENV):
        ServiceURLs.from_environment({URLS_ENV: "[1]"})
    with pytest.raises(TiffinError, match="ENDPOINT/DEPLOYMENT"):
        ServiceURLs(None, {"e": "http://127.0.0.1:9"})
    assert ServiceURLs.from_environment({}) is None


def test_a_bad_template_stops_tiffin_serve_with_the_reason(tmp_path):
    with (
        pytest.raises(RuntimeError, match=TEMPLATE_ENV),
        serve_tiffin(env={TEMPLATE_ENV: "ftp://{service}"}, timeout=30),
    ):
        pass


# --- through the gateway -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    """Three stand-in Services: blue reached through the template, green and red through the mapping."""
    with standin("blue") as blue, standin("green") as green, standin("red") as red, standin("slow", SLOW) as slow:
        nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        mapping = {"split/green": green.url, "gone/red": red.url, "slow/slow": slow.url, "gone/nowhere": nowhere}
        with serve_tiffin(env={TEMPLATE_ENV: blue.url, URLS_ENV: json.dumps(mapping)}) as server:
            client = server.client()
            for endpoint in ("split", "gone", "slow"):
                client.online_endpoints.create_or_update({"name": endpoint, "auth_mode": "key"})
            for name in ("blue", "green"):
                client.online_deployments.create_or_update(spec(name), "split", timeout=60)
            client.online_endpoints.set_traffic("split", {"blue": 50, "green": 50})
            client.online_deployments.create_or_update(spec("red"), "gone", timeout=60, all_traffic=True)
            slow_spec = spec("slow", "instance_count=2", *(f"request_settings.{s}" for s in SLOW_SETTINGS), file=SLOW)
            client.online_deployments.create_or_update(slow_spec, "slow", timeout=60, all_traffic=True)
            key = client.online_endpoints.get_keys("split")["primaryKey"]
            yield {"server": server, "url": f"{server.url}/endpoints/split/score", "key": key, "red": red,
                   "nowhere": nowhere}  # fmt: skip


def score(cluster, key: str | None = None, **headers: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key or cluster['key']}"}
    return httpx.post(cluster["url"], json={"echo_env": ["STANDIN"]}, headers={**auth, **headers}, timeout=30)


def test_keys_are_checked_by_the_gateway(cluster):
    assert score(cluster, key="wrong-key-0123456789").status_code == 401
    assert httpx.post(cluster["url"], json={"data": [[1]]}).status_code == 401
    answer = score(cluster)
    assert answer.status_code == 200
    assert answer.json() == {"STANDIN": answer.headers["azureml-model-deployment"]}


def test_no_replica_runs_in_the_gateway_and_the_state_is_what_the_service_answers(cluster):
    server = cluster["server"]
    assert [pid for pid, line in command_lines() if str(server.home) in line and "replica" in line] == []
    states = {d["name"]: d["provisioning_state"] for d in server.client().online_deployments.list("split")}
    assert states == {"blue": "Succeeded", "green": "Succeeded"}


def test_split_50_50_over_two_services_and_pinning(cluster):
    seen = Counter()
    with httpx.Client(headers={"Authorization": f"Bearer {cluster['key']}"}, timeout=30) as client:
        for _ in range(400):
            answer = client.post(cluster["url"], json={"echo_env": ["STANDIN"]})
            assert answer.status_code == 200
            # The stand-in that answered is the one of the deployment the gateway named.
            assert answer.json()["STANDIN"] == answer.headers["azureml-model-deployment"]
            seen[answer.json()["STANDIN"]] += 1
        pinned = {client.post(cluster["url"], json={"echo_env": ["STANDIN"]},
                              headers={"azureml-model-deployment": "green"}).json()["STANDIN"]
                  for _ in range(20)}  # fmt: skip
    assert abs(seen["blue"] / 400 - 0.5) <= 0.08, seen
    assert pinned == {"green"}


def test_mirrored_copies_go_to_the_other_service(cluster):
    client = cluster["server"].client()
    client.online_endpoints.set_traffic("split", {"blue": 100, "green": 0}, {"green": 50})
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {cluster['key']}"}, timeout=30) as http:
            answered = {http.post(cluster["url"], json={"echo_env": ["STANDIN"]}).json()["STANDIN"] for _ in range(40)}
        assert answered == {"blue"}

        def copies() -> dict:
            mirror = client.online_endpoints.stats("split")["mirror"]["green"]
            # Each copy reached green's stand-in and was answered there.
            assert mirror["sent"] > 5 and mirror["statuses"] == {"200": mirror["sent"]}, mirror
            return mirror

        eventually(copies, timeout=10)
    finally:
        client.online_endpoints.set_traffic("split", {"blue": 50, "green": 50}, {})


def test_capacity_is_instance_count_times_max_concurrent_and_timeouts_are_408(cluster):
    """instance_count 2 x 1 concurrent request: two of three at once are served, the third waits 100 ms: 429."""
    client = cluster["server"].client()
    key = client.online_endpoints.get_keys("slow")["primaryKey"]
    url, auth = f"{cluster['server'].url}/endpoints/slow/score", {"Authorization": f"Bearer {key}"}
    statuses: list[int] = []

    def call() -> None:
        statuses.append(httpx.post(url, json={"sleep": 0.4}, headers=auth, timeout=30).status_code)

    callers = [threading.Thread(target=call) for _ in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert sorted(statuses) == [200, 200, 429]
    answer = httpx.post(url, json={"sleep": 2.5}, headers=auth, timeout=30)
    assert answer.status_code == 408 and "request_timeout_ms" in answer.json()["message"]


def test_a_stopped_service_takes_its_deployment_out_and_its_requests_get_503_at_once(cluster):
    client = cluster["server"].client()
    key = client.online_endpoints.get_keys("gone")["primaryKey"]
    url, auth = f"{cluster['server'].url}/endpoints/gone/score", {"Authorization": f"Bearer {key}"}
    assert httpx.post(url, json={"echo_env": ["STANDIN"]}, headers=auth).json() == {"STANDIN": "red"}
    red = cluster["red"]
    red.process.terminate()
    red.process.wait(10)

    def failed() -> str:
        deployment = client.online_deployments.get("red", "gone")
        assert deployment["provisioning_state"] == "Failed", deployment
        return deployment.get("reason") or "?"

    assert red.url in eventually(failed, timeout=15)
    started = time.monotonic()
    answer = httpx.post(url, json={"echo_env": ["STANDIN"]}, headers=auth, timeout=30)
    assert answer.status_code == 503, answer.text
    assert time.monotonic() - started < 2
    # The other endpoint is untouched.
    assert score(cluster).status_code == 200
    # The Service answers again (a new pod behind the same address): routed to, Succeeded.
    port = red.url.rsplit(":", 1)[1]
    again = ["-m", "tiffin.cli", "replica", "serve", "-f", str(PLAIN), "--host", "127.0.0.1", "--port", port]
    env = {"STANDIN": "red-again", "TIFFIN_HOME": str(cluster["server"].home.parent / "red-again")}
    with serve_command([sys.executable, *again], red.url + "/", env=env):
        eventually(lambda: client.online_deployments.get("red", "gone")["provisioning_state"] == "Succeeded", 15)
        answer = httpx.post(url, json={"echo_env": ["STANDIN"]}, headers=auth, timeout=30)
        assert answer.json() == {"STANDIN": "red-again"}


def test_a_deployment_whose_service_never_answers_fails_with_the_reason(cluster):
    client = cluster["server"].client()
    started = time.monotonic()
    with pytest.raises(TiffinError, match="did not answer") as failed:
        client.online_deployments.create_or_update(spec("nowhere"), "gone", timeout=60)
    assert cluster["nowhere"] in failed.value.message
    # initial_delay 1 s, then failure_threshold 2 probes 1 s apart.
    assert time.monotonic() - started < 10
