"""Azure Monitor autoscale rules on every metric tiffin accepts (issue 17): RequestLatency, its percentiles,
RequestsPerMinute and CpuMemoryUtilizationPercentage are measured, not "no data".

Unit tests (milliseconds) compute the metrics from synthetic samples of a real gateway meter; the integration
tests scale a real deployment out on a latency rule and on a requests-per-minute rule.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import eventually
from tests.test_autoscale import FAST_PROBES, PATIENT, counts, scaled
from tiffin.autoscale.readings import memory_percent, memory_total, request_meter
from tiffin.autoscale.requests import RequestSamples, latency_percentile
from tiffin.gateway import Gateway
from tiffin.gateway.stats import EndpointStats
from tiffin.telemetry.meters import DeploymentMeter
from tiffin.testing import Load, serve_tiffin


def answer(meter: DeploymentMeter, *seconds: float, started: float = 0.0) -> None:
    for s in seconds:
        meter.answered(200, started, s, 10, 10)


# --- RequestsPerMinute and RequestLatency from per-second samples -------------------------------------------------


def test_the_first_read_of_a_meter_is_only_a_baseline_and_empty_windows_have_no_data():
    samples, meter = RequestSamples(3600), DeploymentMeter("e", "d")
    assert samples.per_minute(10.0, 60, "avg") is None and samples.latency_ms(10.0, 60, "avg") is None
    answer(meter, 0.1, 0.1)  # before the engine looked: not in any window
    samples.sample(1.0, meter)
    assert samples.per_minute(1.0, 60, "avg") is None
    samples.sample(2.0, meter)  # a second with no request: 0 per minute, but no latency (no request to time)
    assert samples.per_minute(2.0, 60, "avg") == 0.0 and samples.per_minute(2.0, 60, "total") == 0.0
    assert samples.latency_ms(2.0, 60, "avg") is None
    # Long after: the window holds no sample any more.
    assert samples.per_minute(200.0, 60, "avg") is None


def test_requests_per_minute_over_the_covered_part_of_the_window_and_total_is_the_count():
    samples, meter = RequestSamples(3600), DeploymentMeter("e", "d")
    samples.sample(0.0, meter)
    for t in range(1, 11):  # 10 seconds, 5 requests a second: 300 a minute
        answer(meter, *[0.02] * 5)
        samples.sample(float(t), meter)
    assert samples.per_minute(10.0, 60, "avg") == pytest.approx(300.0)  # 10 s covered, not 60
    assert samples.per_minute(10.0, 60, "total") == 50.0
    assert samples.per_minute(10.0, 5, "total") == 25.0
    assert samples.per_minute(10.0, 5, "avg") == pytest.approx(300.0)


def test_min_and_max_are_over_one_minute_grains():
    samples = RequestSamples(3600)
    # Minute 1 (t 1..60): 1 request a second; minute 2 (t 61..120): 3 a second, each taking 10 ms then 30 ms.
    for t in range(1, 121):
        fast = t <= 60
        samples.add(float(t), 1.0, 1 if fast else 3, 0.010 if fast else 3 * 0.030)
    assert samples.per_minute(120.0, 120, "min") == pytest.approx(60.0)
    assert samples.per_minute(120.0, 120, "max") == pytest.approx(180.0)
    assert samples.per_minute(120.0, 120, "avg") == pytest.approx(120.0)
    assert samples.latency_ms(120.0, 120, "min") == pytest.approx(10.0)
    assert samples.latency_ms(120.0, 120, "max") == pytest.approx(30.0)
    # The average is per request (240 requests: 60 of 10 ms, 180 of 30 ms), not per grain.
    assert samples.latency_ms(120.0, 120, "avg") == pytest.approx((60 * 10 + 180 * 30) / 240)
    assert samples.latency_ms(120.0, 120, "total") == pytest.approx(60 * 10 + 180 * 30)
    # A window shorter than a minute is one grain: min = max = avg.
    assert samples.latency_ms(120.0, 10, "min") == samples.latency_ms(120.0, 10, "max") == pytest.approx(30.0)


def test_samples_older_than_kept_are_dropped_and_a_new_meter_is_a_new_baseline():
    samples, meter = RequestSamples(30), DeploymentMeter("e", "d")
    samples.sample(0.0, meter)
    answer(meter, 0.5)
    samples.sample(1.0, meter)
    samples.sample(100.0, meter)
    assert samples.per_minute(100.0, 3600, "total") == 0.0  # the request of t=1 is past the 30 s kept
    fresh = DeploymentMeter("e", "d")  # the gateway made the deployment's meter again (routing table change)
    answer(fresh, 0.1)
    samples.sample(101.0, fresh)
    assert samples.per_minute(101.0, 5, "total") == 0.0  # baseline only: no negative or double count
    answer(fresh, 0.1)
    samples.sample(102.0, fresh)
    assert samples.per_minute(102.0, 5, "total") == 1.0 and samples.latency_ms(102.0, 5, "avg") == pytest.approx(100)


def test_latency_percentiles_over_the_requests_of_the_window():
    meter = DeploymentMeter("e", "d")
    for i in range(100):  # started at t = 0..99, taking 1..100 ms
        meter.answered(200, float(i), (i + 1) / 1000, 0, 0)
    assert latency_percentile(meter.recent, 100.0, 1000, 0.5) == pytest.approx(51.0)
    assert latency_percentile(meter.recent, 100.0, 1000, 0.99) == pytest.approx(100.0)
    # Only the last 10 s: requests started at 90..99 (91..100 ms).
    assert latency_percentile(meter.recent, 100.0, 10, 0.5) == pytest.approx(96.0)
    assert latency_percentile(meter.recent, 500.0, 10, 0.5) is None


def test_memory_of_a_live_process_and_of_none():
    total = memory_total()
    assert total > 0
    mine = memory_percent(os.getpid(), total)
    assert mine is not None and 0 < mine < 100
    assert memory_percent(os.getpid(), 0) is None
    assert memory_percent(2**22 + 12345, total) is None  # above pid_max's default: no such process


def test_a_rule_turns_the_gateways_meters_on_when_metrics_are_off_and_keeps_the_counts():
    gateway = Gateway()  # as TIFFIN_METRICS=0 leaves it: no meters
    assert gateway.meters is None
    stats = gateway.stats["e"] = EndpointStats()
    for status in (200, 200, 503):
        stats.answered("blue", status)
    meter = request_meter(gateway, "e", "blue")
    assert gateway.meters is not None and gateway.meters.get("e", "blue") is meter
    # The rollout driver read these statuses from gateway.stats until now: they go on from there.
    assert meter.statuses == {200: 2, 503: 1}
    assert request_meter(gateway, "e", "blue") is meter


# --- a real server: a latency rule and a requests-per-minute rule scale a deployment out ------------------------

SLOW = "import time\n\n\ndef init():\n    pass\n\n\ndef run(raw_data):\n    time.sleep(0.08)\n    return {'ok': True}\n"


@pytest.fixture(scope="module")
def server():
    # With /metrics off: the rules must still be measured (the autoscaler turns the gateway's meters on).
    with serve_tiffin(env={"TIFFIN_METRICS": "0"}) as running:
        yield running


def stats(server, endpoint: str) -> dict:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    return httpx.get(f"{server.url}/api/online-endpoints/{endpoint}/stats", headers=headers).json()


def deploy_with_rule(
    server, tmp_path: Path, endpoint: str, condition: str, scale: str = "out", instances: int = 1
) -> str:
    (tmp_path / "score.py").write_text(SLOW)
    spec = {
        "name": "blue",
        "code_configuration": {"code": str(tmp_path), "scoring_script": "score.py"},
        "instance_count": instances,
        "request_settings": PATIENT,
        **FAST_PROBES,
    }
    client = server.client()
    client.online_endpoints.create_or_update({"name": endpoint, "auth_mode": "key"})
    client.online_deployments.create_or_update(spec, endpoint, timeout=180)
    client.online_endpoints.set_traffic(endpoint, {"blue": 100})
    if endpoint == "lat":  # the first: no rule on a request metric yet, so no request counters (TIFFIN_METRICS=0)
        assert "recent" not in stats(server, endpoint)

    def tiffin(*args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "tiffin.cli", *args], env=server.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr + done.stdout

    name = f"{endpoint}-rule"
    tiffin("monitor", "autoscale", "create", "--autoscale-name", name, "--endpoint-name", endpoint,
           "--deployment-name", "blue", "--min-count", "1", "--max-count", "2", "--count", str(instances))  # fmt: skip
    tiffin("monitor", "autoscale", "rule", "create", "--autoscale-name", name,
           "--condition", condition, "--scale", scale, "1", "--cooldown", "10s")  # fmt: skip
    return client.online_endpoints.get_keys(endpoint)["primaryKey"]


@pytest.mark.parametrize(
    ("endpoint", "condition", "metric"),
    [
        ("lat", "RequestLatency > 40 avg 10s", "RequestLatency"),
        ("rpm", "RequestsPerMinute > 300 avg 10s", "RequestsPerMinute"),
        ("p99", "RequestLatency_P99 > 40 max 10s", "RequestLatency_P99"),
        # Any replica holds more than 0.01 % of the machine's memory: measured, so it fires.
        ("mem", "CpuMemoryUtilizationPercentage > 0.01 avg 10s", "CpuMemoryUtilizationPercentage"),
    ],
)
def test_a_rule_on_a_request_metric_scales_out_under_load(server, tmp_path: Path, endpoint, condition, metric):
    key = deploy_with_rule(server, tmp_path, endpoint, condition)
    client = server.client()
    assert scaled(client, endpoint) == []
    # 4 callers of an 80 ms script: ~80 ms each (queued behind 2 slots: more), ~12 requests/s = ~700 a minute.
    began = time.monotonic()
    with Load(f"{server.url}/endpoints/{endpoint}/score", key, workers=4) as load:
        out = eventually(lambda: scaled(client, endpoint) or None, timeout=40, interval=0.2)
    took = time.monotonic() - began
    print("scaled:", [e["message"] for e in out], "load:", load.statuses, f"after {took:.1f}s")
    assert counts(out)[0] == 2, out
    assert f"{endpoint}-rule" in out[0]["message"] and metric in out[0]["message"], out
    assert load.failed / max(load.total, 1) < 0.005, load.statuses
    if metric.startswith("Request"):
        # The rule turned the gateway's request counters on: the stats API's recent is back; /metrics stays off.
        assert stats(server, endpoint)["recent"]["blue"]["requests"] > 0
        metrics = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.admin_token}"})
        assert metrics.status_code == 404


def test_an_idle_deployment_has_zero_requests_per_minute_so_a_scale_in_rule_acts(server, tmp_path: Path):
    deploy_with_rule(server, tmp_path, "idle", "RequestsPerMinute < 1 avg 10s", scale="in", instances=2)
    client = server.client()
    out = eventually(lambda: scaled(client, "idle") or None, timeout=40, interval=0.2)
    print("scaled:", [e["message"] for e in out])
    assert counts(out)[0] == 1, out
    assert "RequestsPerMinute 0 < 1" in out[0]["message"], out


FAST = "def init():\n    pass\n\n\ndef run(raw_data):\n    return {'ok': True}\n"


def test_an_endpoint_meter_sums_its_deployments():
    gateway = Gateway()
    endpoint = request_meter(gateway, "e", None)
    answer(request_meter(gateway, "e", "blue"), 0.010, 0.010)
    answer(request_meter(gateway, "e", "green"), 0.100)
    answer(request_meter(gateway, "other", "blue"), 5.0)
    assert endpoint.statuses == {200: 3}
    assert endpoint.latency_sum == pytest.approx(0.120)
    assert sorted(s for _, s in endpoint.recent) == [0.010, 0.010, 0.100]


def test_a_rule_on_the_endpoints_latency_counts_every_deployment(server, tmp_path: Path):
    """Azure's how-to adds `--condition "RequestLatency > 70 avg 5m" --resource $ENDPOINT_RESOURCE_ID`: the
    endpoint's latency, over all its deployments. Here blue answers at once and green in 80 ms, 50/50: blue's
    own latency stays under the threshold, the endpoint's is over it, and blue scales out."""
    client = server.client()
    client.online_endpoints.create_or_update({"name": "whole", "auth_mode": "key"})
    for name, script in (("blue", FAST), ("green", SLOW)):
        code = tmp_path / name
        code.mkdir()
        (code / "score.py").write_text(script)
        spec = {
            "name": name,
            "code_configuration": {"code": str(code), "scoring_script": "score.py"},
            "instance_count": 1,
            "request_settings": PATIENT,
            **FAST_PROBES,
        }
        client.online_deployments.create_or_update(spec, "whole", timeout=180)
    client.online_endpoints.set_traffic("whole", {"blue": 50, "green": 50})
    endpoint_id = client.online_endpoints.get("whole")["properties"]["azureml.onlineendpointid"]

    def tiffin(*args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "tiffin.cli", *args], env=server.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr + done.stdout

    tiffin("monitor", "autoscale", "create", "--autoscale-name", "whole-rule", "--endpoint-name", "whole",
           "--deployment-name", "blue", "--min-count", "1", "--max-count", "2", "--count", "1")  # fmt: skip
    tiffin("monitor", "autoscale", "rule", "create", "--autoscale-name", "whole-rule", "--resource", endpoint_id,
           "--condition", "RequestLatency > 30 avg 10s", "--scale", "out", "1", "--cooldown", "10s")  # fmt: skip
    key = client.online_endpoints.get_keys("whole")["primaryKey"]
    with Load(f"{server.url}/endpoints/whole/score", key, workers=4) as load:
        out = eventually(lambda: scaled(client, "whole") or None, timeout=40, interval=0.2)
        recent = stats(server, "whole")["recent"]
    print("scaled:", [e["message"] for e in out], "recent:", recent, "load:", load.statuses)
    assert counts(out)[0] == 2 and "RequestLatency" in out[0]["message"], out
    assert recent["blue"]["latency_ms"]["p50"] < 30 < recent["green"]["latency_ms"]["p50"], recent
    assert load.failed / max(load.total, 1) < 0.005, load.statuses
