"""A deployment's event log with real replicas (issue 15, Azure's AmlOnlineEndpointEventLog).

Created, environment ready, replica started and ready, succeeded; a replica killed with SIGKILL shows as failed
with its exit reason and started again; traffic and instance count changes; over REST and the SDK, oldest first.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import httpx
import pytest

from tests.conftest import eventually
from tiffin.paths import events_log_path
from tiffin.testing import serve_tiffin

SCORE = "def init():\n    pass\n\n\ndef run(raw_data):\n    return {'ok': True}\n"
FAST_PROBES = {
    "readiness_probe": {"initial_delay": 1, "period": 1},
    "liveness_probe": {"initial_delay": 1, "period": 1},
}


@pytest.fixture(scope="module")
def server():
    with serve_tiffin() as running:
        yield running


def names(events: list[dict]) -> list[str]:
    return [event["name"] for event in events]


def test_lifecycle_kill_traffic_and_scale_show_as_events(server, tmp_path: Path):
    (tmp_path / "score.py").write_text(SCORE)
    spec = {"name": "blue", "code_configuration": {"code": str(tmp_path), "scoring_script": "score.py"}, **FAST_PROBES}
    client = server.client()
    client.online_endpoints.create_or_update({"name": "ev", "auth_mode": "key"})
    client.online_deployments.create_or_update(spec, "ev", timeout=120)
    events = client.online_deployments.get_events("blue", "ev")
    order = names(events)
    assert order[:2] == ["DeploymentCreated", "EnvironmentReady"], order
    for later, earlier in (("ReplicaStarted", "EnvironmentReady"), ("ReplicaReady", "ReplicaStarted"),
                           ("DeploymentSucceeded", "ReplicaReady")):  # fmt: skip
        assert order.index(later) > order.index(earlier), order
    started = events[order.index("ReplicaStarted")]
    assert started["instance"] == "blue-0" and re.match(r"\d{4}-\d\d-\d\dT", started["time"]), started
    pid = int(re.search(r"pid (\d+)", started["message"]).group(1))

    # A replica killed outright: failed with the signal, then started again and ready.
    os.killpg(pid, signal.SIGKILL)

    def restarted() -> list[dict] | None:
        now = client.online_deployments.get_events("blue", "ev")
        return now if names(now).count("ReplicaReady") >= 2 else None

    events = eventually(restarted, timeout=30)
    failed = next(e for e in events if e["name"] == "ReplicaFailed")
    assert "killed by signal SIGKILL" in failed["message"] and f"pid {pid}" in failed["message"], failed
    assert "restarting in" in failed["message"] and failed["instance"] == "blue-0"
    again = [e for e in events if e["name"] == "ReplicaStarted"][-1]
    assert "start 2" in again["message"] and events.index(again) > events.index(failed)

    # Traffic (control plane) and instance count (supervisor) changes.
    client.online_endpoints.set_traffic("ev", {"blue": 100})
    client.online_deployments.create_or_update({**spec, "instance_count": 2}, "ev", timeout=120)
    events = client.online_deployments.get_events("blue", "ev")
    traffic = next(e for e in events if e["name"] == "TrafficChanged")
    assert traffic["message"] == "traffic 0% -> 100%", traffic
    assert any(e["name"] == "DeploymentUpdated" for e in events)
    scaled = next(e for e in events if e["name"] == "InstancesChanged")
    assert scaled["message"] == "instance_count 1 -> 2"
    assert any(e["name"] == "ReplicaReady" and e.get("instance") == "blue-1" for e in events)

    # limit: the newest N; the file is JSON lines; REST answers the same list.
    last = client.online_deployments.get_events("blue", "ev", limit=2)
    assert last == events[-2:] or last == client.online_deployments.get_events("blue", "ev")[-2:]
    lines = events_log_path(server.home, "ev", "blue").read_text().splitlines()
    assert [json.loads(line)["name"] for line in lines][: len(events)] == names(events)
    answer = httpx.get(
        f"{server.url}/api/online-endpoints/ev/deployments/blue/events",
        headers={"Authorization": f"Bearer {server.admin_token}"},
    )
    assert answer.status_code == 200 and answer.json()[0]["name"] == "DeploymentCreated"
    missing = httpx.get(
        f"{server.url}/api/online-endpoints/ev/deployments/nope/events",
        headers={"Authorization": f"Bearer {server.admin_token}"},
    )
    assert missing.status_code == 404


def test_a_failing_init_and_a_scale_down_show_as_events(server, tmp_path: Path):
    from tiffin.errors import TiffinError

    (tmp_path / "score.py").write_text(
        "def init():\n    raise RuntimeError('no model here')\n\n\ndef run(d):\n    return d\n"
    )
    spec = {"name": "bad", "code_configuration": {"code": str(tmp_path), "scoring_script": "score.py"}, **FAST_PROBES}
    client = server.client()
    client.online_endpoints.create_or_update({"name": "evf", "auth_mode": "key"})
    with pytest.raises(TiffinError, match="no model here"):
        client.online_deployments.create_or_update(spec, "evf", timeout=120)
    events = client.online_deployments.get_events("bad", "evf")
    failures = [e["message"] for e in events if e["name"] == "ReplicaFailed"]
    assert failures[0].startswith("exited with code 1") and "restarting in 1s" in failures[0], failures
    assert failures[-1] == "exited with code 1 before becoming ready; not restarted", failures
    assert names(events)[-1] == "DeploymentFailed" and "3 times in a row" in events[-1]["message"], events[-1]
    # The traceback is in the console log, stamped like every line.
    console = client.online_deployments.get_logs("bad", "evf", container="inference-server", lines=400)
    assert re.search(r"Z bad-0 \| RuntimeError: no model here$", console, re.M), console

    # Scaled down: the replica that goes is stopped, and says how it ended.
    good = {**spec, "name": "two", "instance_count": 2}
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "score.py").write_text(SCORE)
    good["code_configuration"] = {"code": str(tmp_path / "ok"), "scoring_script": "score.py"}
    client.online_deployments.create_or_update(good, "evf", timeout=120)
    client.online_deployments.create_or_update({**good, "instance_count": 1}, "evf", timeout=120)

    def stopped() -> dict | None:
        now = client.online_deployments.get_events("two", "evf")
        return next((e for e in now if e["name"] == "ReplicaStopped"), None)

    event = eventually(stopped, timeout=30)
    assert event["instance"] == "two-1", event
    assert re.match(r"pid \d+ (exited with code 0|killed by signal SIGTERM)$", event["message"]), event


def test_an_environment_that_cannot_be_built_shows_as_environment_failed(server, tmp_path: Path):
    from tiffin.errors import TiffinError

    (tmp_path / "score.py").write_text(SCORE)
    (tmp_path / "conda.yml").write_text(
        "dependencies:\n  - python=3.12\n  - pip\n  - pip:\n    - tiffin-no-such-pkg-xyz==1.0\n"
    )
    spec = {
        "name": "nobuild",
        "code_configuration": {"code": str(tmp_path), "scoring_script": "score.py"},
        "environment": {"conda_file": str(tmp_path / "conda.yml")},
    }
    client = server.client()
    client.online_endpoints.create_or_update({"name": "evb", "auth_mode": "key"})
    with pytest.raises(TiffinError, match="tiffin-no-such-pkg-xyz"):
        client.online_deployments.create_or_update(spec, "evb", timeout=120)
    events = client.online_deployments.get_events("nobuild", "evb")
    assert names(events) == ["DeploymentCreated", "EnvironmentFailed", "DeploymentFailed"], events
    assert "tiffin-no-such-pkg-xyz" in events[1]["message"], events[1]
    # The storage-initializer log has the build's own words; there is no console log: no replica started.
    built = client.online_deployments.get_logs("nobuild", "evb", container="storage-initializer", lines=400)
    assert "tiffin-no-such-pkg-xyz" in built and "[tiffin] runner: script" in built, built
    with pytest.raises(TiffinError, match="no log yet of replica 0"):
        client.online_deployments.get_logs("nobuild", "evb", container="inference-server")


def test_a_hung_replica_shows_restarting_with_the_probe_failure(server, tmp_path: Path):
    (tmp_path / "score.py").write_text(SCORE)
    probe = {"initial_delay": 1, "period": 1, "timeout": 1, "failure_threshold": 2}
    spec = {
        "name": "hung",
        "code_configuration": {"code": str(tmp_path), "scoring_script": "score.py"},
        "readiness_probe": probe,
        "liveness_probe": probe,
    }
    client = server.client()
    client.online_endpoints.create_or_update({"name": "evh", "auth_mode": "key"})
    client.online_deployments.create_or_update(spec, "evh", timeout=120)
    started = next(e for e in client.online_deployments.get_events("hung", "evh") if e["name"] == "ReplicaStarted")
    pid = int(re.search(r"pid (\d+)", started["message"]).group(1))
    os.killpg(pid, signal.SIGSTOP)  # alive, answering nothing: the probes time out

    def back() -> list[dict] | None:
        now = client.online_deployments.get_events("hung", "evh")
        return now if names(now).count("ReplicaReady") >= 2 else None

    events = eventually(back, timeout=40)
    order = names(events)
    assert "ReplicaRestarting" in order, events
    restarting = events[order.index("ReplicaRestarting")]
    assert "liveness probe failed 2 times in a row" in restarting["message"] and f"pid {pid}" in restarting["message"]
    # Out of routing first when the readiness probe's failures count up before the liveness probe's (they race).
    for unready in (e for e in events if e["name"] == "ReplicaUnready"):
        assert "readiness probe failed 2 times in a row" in unready["message"], unready
    last_start = max(i for i, name in enumerate(order) if name == "ReplicaStarted")
    assert order.index("ReplicaRestarting") < order.index("ReplicaStopped") < last_start, order


def test_the_event_log_rotates_and_reads_across_its_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from tiffin.supervisor.logfiles import read_events, record_event

    monkeypatch.setenv("TIFFIN_LOG_MAX_BYTES", "1000")  # events rotate at a tenth of it, at least 4096 bytes
    monkeypatch.setenv("TIFFIN_LOG_BACKUPS", "2")
    for number in range(300):
        record_event(tmp_path, "ep", "blue", "ReplicaStarted", f"event {number}", instance="blue-0")
    log = events_log_path(tmp_path, "ep", "blue")
    files = sorted(p.name for p in log.parent.iterdir())
    assert files == ["events.log", "events.log.1", "events.log.2"], files
    assert all(p.stat().st_size <= 4096 for p in log.parent.iterdir())
    newest = read_events(tmp_path, "ep", "blue", 10_000)
    assert [e["message"] for e in newest[-3:]] == ["event 297", "event 298", "event 299"]
    assert 40 < len(newest) < 300  # what the copies hold, oldest first, nothing more
    numbers = [int(e["message"].split()[1]) for e in newest]
    assert numbers == sorted(numbers)
