"""``/metrics`` of a real ``tiffin serve`` after real requests through a real endpoint (issue 15, item 1)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tiffin.testing import serve_tiffin

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent / "deployments"
FAST_PROBES = ["readiness_probe.initial_delay=1", "readiness_probe.period=1"]


def deployment_spec(name: str, *overrides: str) -> dict:
    from tiffin.specs import OnlineDeployment, load_spec

    path = HERE / "plain" / "deployment.yml"
    return load_spec(path, OnlineDeployment, overrides=[f"name={name}", *FAST_PROBES, *overrides]).spec.to_yaml_dict()


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample by its name (``x_total``, ``x_bucket``...), with its labels."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, []).append((s.labels, s.value))
    return found


def value(found: dict, name: str, **labels: str) -> float:
    matching = [v for got, v in found.get(name, []) if all(got.get(k) == w for k, w in labels.items())]
    assert len(matching) == 1, (name, labels, found.get(name))
    return matching[0]


@pytest.fixture(scope="module")
def server():
    with serve_tiffin() as running:
        client = running.client()
        client.online_endpoints.create_or_update({"name": "obs", "auth_mode": "key"})
        client.online_deployments.create_or_update(
            deployment_spec("blue", "request_settings.max_concurrent_requests_per_instance=3"), "obs"
        )
        client.online_endpoints.set_traffic("obs", {"blue": 100})
        running.key = client.online_endpoints.get_keys("obs")["primaryKey"]  # type: ignore[attr-defined]
        yield running


def scrape(server, token: str | None = None) -> httpx.Response:
    return httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {token or server.admin_token}"})


def test_metrics_after_real_requests(server):
    url = f"{server.url}/endpoints/obs/score"
    auth = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(timeout=30) as http:
        for _ in range(5):
            assert http.post(url, json={"data": [[1, 2]]}, headers=auth).status_code == 200
        assert http.post(url, json={"nodata": 1}, headers=auth).status_code == 500
        assert http.post(url, json={"data": [[1]]}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.post(f"{server.url}/endpoints/nope/score", json={}).status_code == 404

    response = scrape(server)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert value(found, "tiffin_requests_total", endpoint="obs", deployment="blue", status_code="200") == 5
    assert value(found, "tiffin_requests_total", deployment="blue", status_code="500", status_class="5xx") == 1
    # Refused before a deployment was chosen: counted for the endpoint, deployment left empty.
    assert value(found, "tiffin_requests_total", endpoint="obs", deployment="", status_code="401") == 1
    assert value(found, "tiffin_unknown_endpoint_requests_total") == 1
    # The latency histogram: cumulative buckets ending in +Inf == count == 6 answers of blue.
    assert value(found, "tiffin_request_latency_seconds_count", endpoint="obs", deployment="blue") == 6
    assert value(found, "tiffin_request_latency_seconds_bucket", deployment="blue", le="+Inf") == 6
    buckets = [v for labels, v in found["tiffin_request_latency_seconds_bucket"] if labels["deployment"] == "blue"]
    assert buckets == sorted(buckets) and buckets[0] < 6
    assert value(found, "tiffin_request_queue_wait_seconds_count", deployment="blue") == 6
    assert value(found, "tiffin_network_bytes_total", deployment="blue", direction="in") > 0
    assert value(found, "tiffin_network_bytes_total", deployment="blue", direction="out") > 0
    # One ready replica x max_concurrent_requests_per_instance 3.
    assert value(found, "tiffin_deployment_capacity", endpoint="obs", deployment="blue") == 3
    assert value(found, "tiffin_deployment_ready_instances", deployment="blue") == 1
    assert value(found, "tiffin_request_timeouts_total", deployment="blue") == 0
    assert value(found, "tiffin_requests_throttled_total", deployment="blue") == 0
    assert value(found, "tiffin_connections_active") >= 0
    # New connections: one more request on a connection of its own, then this scrape's own connection.
    accepted = value(found, "tiffin_connections_total")
    assert accepted >= 2
    httpx.get(f"{server.url}/api/health")
    assert value(samples(scrape(server).text), "tiffin_connections_total") == accepted + 2
    # The replica process, read from /proc: CPU % and memory.
    assert value(found, "tiffin_replica_memory_bytes", deployment="blue", instance="0") > 10_000_000
    assert 0 <= value(found, "tiffin_replica_cpu_utilization_percent", deployment="blue", instance="0") < 1000
    assert value(found, "tiffin_replica_cpu_seconds_total", deployment="blue", instance="0") > 0
    assert 0 < value(found, "tiffin_replica_memory_utilization_percent", deployment="blue", instance="0") < 100
    for name in ("tiffin_batch_jobs", "tiffin_mirror_copies_sent_total"):
        assert f"# TYPE {name.removesuffix('_total')}" in response.text


def test_stats_api_has_recent_latency_and_rate(server):
    url = f"{server.url}/endpoints/obs/score"
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {server.key}"}) as http:
        for _ in range(20):
            http.post(url, json={"data": [[1, 2]]})
            time.sleep(0.05)
    stats = httpx.get(
        f"{server.url}/api/online-endpoints/obs/stats", headers={"Authorization": f"Bearer {server.admin_token}"}
    ).json()
    recent = stats["recent"]["blue"]
    assert recent["requests"] >= 20
    assert recent["requests_per_s"] > 0
    assert 0 < recent["latency_ms"]["p50"] <= recent["latency_ms"]["p99"]


def test_metrics_refuse_a_wrong_or_missing_token(server):
    assert scrape(server, "not-the-token").status_code == 401
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    # An endpoint key is not the admin token either.
    assert scrape(server, server.key).status_code == 401
    assert (
        httpx.post(f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.admin_token}"}).status_code
        == 405
    )


def test_metrics_can_be_turned_off(tmp_path):
    with serve_tiffin(env={"TIFFIN_METRICS": "0"}) as running:
        response = scrape(running)
        assert response.status_code == 404
        assert "TIFFIN_METRICS" in response.json()["message"]


def test_batch_jobs_by_state_and_mini_batches_from_the_store(store):
    """The batch part of /metrics, read from a real store (SQLite and PostgreSQL)."""
    from datetime import timedelta

    from tiffin.store.core import now_utc
    from tiffin.telemetry.metrics import batch_snapshot

    store.create_endpoint("batch", "nightly", {})
    for name in ("j1", "j2", "j3"):
        store.create_job(name, "nightly", "d1")
    store.plan_job("j1", [["a"], ["b"], ["c"]])
    store.update_job("j1", status="Running", started_at=now_utc() - timedelta(seconds=10))
    store.update_mini_batch("j1", 0, status="done", rows=40)
    store.update_mini_batch("j1", 1, status="failed")
    store.update_job("j2", status="Completed", progress={"mini_batches_completed": 5, "mini_batches_failed": 0})
    snap = batch_snapshot(store)
    assert snap.jobs == {
        ("nightly", "d1", "Running"): 1,
        ("nightly", "d1", "Completed"): 1,
        ("nightly", "d1", "Queued"): 1,
    }
    assert snap.mini_batches[("nightly", "d1", "done")] == 6
    assert snap.mini_batches[("nightly", "d1", "failed")] == 1
    assert 3 < snap.rows_per_s[("nightly", "d1")] < 4.1  # 40 rows over the 10 s it has been running


def test_mirror_copies_sent_and_their_latency(server):
    client = server.client()
    client.online_deployments.create_or_update(deployment_spec("shadow"), "obs")
    client.online_endpoints.set_traffic("obs", {"blue": 100}, mirror_traffic={"shadow": 50})
    url = f"{server.url}/endpoints/obs/score"
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {server.key}"}) as http:
        for _ in range(40):
            assert http.post(url, json={"data": [[1, 2]]}).headers["azureml-model-deployment"] == "blue"
    time.sleep(0.5)  # copies are sent after the answers
    found = samples(scrape(server).text)
    sent = value(found, "tiffin_mirror_copies_sent_total", deployment="shadow")
    dropped = value(found, "tiffin_mirror_copies_dropped_total", deployment="shadow")
    assert 5 <= sent + dropped <= 35 and sent >= 1  # about half of 40
    assert value(found, "tiffin_mirror_copies_failed_total", deployment="shadow") == 0
    assert value(found, "tiffin_mirror_latency_seconds_count", deployment="shadow") == sent
    # Copies are not requests of the endpoint: shadow answered none of the callers.
    assert not [v for labels, v in found["tiffin_requests_total"] if labels["deployment"] == "shadow"]
    client.online_endpoints.set_traffic("obs", {"blue": 100}, mirror_traffic={})


def test_settings_refuse_what_is_neither_on_nor_off():
    from tiffin.errors import ValidationError
    from tiffin.telemetry.settings import TelemetrySettings

    assert TelemetrySettings.from_environment({}) == TelemetrySettings()
    off = TelemetrySettings.from_environment({"TIFFIN_METRICS": "0", "TIFFIN_TRAFFIC_LOG": "off"})
    assert not off.metrics and not off.traffic_log
    for bad in ({"TIFFIN_METRICS": "maybe"}, {"TIFFIN_TRAFFIC_LOG_MAX_BYTES": "10MB"}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            TelemetrySettings.from_environment(bad)
