"""`tiffin monitor autoscale ...` against a real `tiffin serve`: Azure's how-to's commands with `az monitor` ->
`tiffin monitor`, refusals (bad condition, unknown resource), the REST routes' admin token, and what happens to a
setting whose deployment is deleted."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tiffin.errors import SpecError

TESTS = Path(__file__).parent
CODE = {"code": str(TESTS / "deployments" / "plain" / "code"), "scoring_script": "score.py"}
MODEL = str(TESTS / "deployments" / "plain" / "model")
TIFFIN = [sys.executable, "-m", "tiffin.cli"]


@pytest.fixture(scope="module")
def server() -> Iterator[object]:
    from tiffin.testing import serve_tiffin

    with serve_tiffin() as running:
        with running.client() as client:
            client.online_endpoints.create_or_update({"name": "my-endpoint"})
            for name in ("blue", "green"):
                deployment = {"name": name, "model": MODEL, "code_configuration": CODE}
                client.online_deployments.create_or_update(deployment, "my-endpoint", wait=False)
        yield running


def tiffin(server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TIFFIN, *args], capture_output=True, text=True, timeout=120, env=server.env)


def ok(done: subprocess.CompletedProcess[str]) -> object:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else None


def test_azure_how_to_round_trip(server) -> None:
    deployment_id = tiffin(
        server, "online-deployment", "show", "-e", "my-endpoint", "-n", "blue", "--query", "id", "-o", "tsv"
    )
    deployment_id_text = deployment_id.stdout.strip()
    assert deployment_id_text.endswith("/onlineEndpoints/my-endpoint/deployments/blue"), deployment_id.stderr
    endpoint_id = ok(tiffin(server, "online-endpoint", "show", "-n", "my-endpoint", "--query", "id"))
    name = "autoscale-blue"

    created = ok(
        tiffin(
            server,
            "monitor",
            "autoscale",
            "create",
            "--name",
            name,
            "--resource",
            deployment_id_text,
            "--min-count",
            "2",
            "--max-count",
            "5",
            "--count",
            "2",
        )
    )
    assert created["name"] == name and created["targetResourceUri"] == deployment_id_text
    assert created["profiles"][0]["capacity"] == {"minimum": "2", "maximum": "5", "default": "2"}

    out = ok(
        tiffin(
            server,
            "monitor",
            "autoscale",
            "rule",
            "create",
            "--autoscale-name",
            name,
            "--condition",
            "CpuUtilizationPercentage > 70 avg 5m",
            "--scale",
            "out",
            "2",
        )
    )
    assert out["scaleAction"] == {"direction": "Increase", "type": "ChangeCount", "value": "2", "cooldown": "PT5M"}
    ok(
        tiffin(
            server,
            "monitor",
            "autoscale",
            "rule",
            "create",
            "--autoscale-name",
            name,
            "--condition",
            "CpuUtilizationPercentage < 25 avg 5m",
            "--scale",
            "in",
            "1",
        )
    )
    latency = ok(
        tiffin(
            server,
            "monitor",
            "autoscale",
            "rule",
            "create",
            "--autoscale-name",
            name,
            "--condition",
            "RequestLatency > 70 avg 5m",
            "--scale",
            "out",
            "1",
            "--resource",
            endpoint_id,
        )
    )
    assert latency["metricTrigger"]["metricResourceUri"] == endpoint_id and latency["index"] == 2
    weekend = ok(
        tiffin(
            server,
            "monitor",
            "autoscale",
            "profile",
            "create",
            "--name",
            "weekend-profile",
            "--autoscale-name",
            name,
            "--min-count",
            "2",
            "--count",
            "2",
            "--max-count",
            "2",
            "--recurrence",
            "week",
            "sat",
            "sun",
            "--timezone",
            "Pacific Standard Time",
        )
    )
    assert weekend["recurrence"]["schedule"]["days"] == ["Saturday", "Sunday"]
    assert weekend["recurrence"]["schedule"]["timeZone"] == "Pacific Standard Time"

    shown = ok(tiffin(server, "monitor", "autoscale", "show", "--name", name))
    assert [p["name"] for p in shown["profiles"]] == ["default", "weekend-profile"]
    assert [r["metricTrigger"]["metricName"] for r in shown["profiles"][0]["rules"]] == [
        "CpuUtilizationPercentage",
        "CpuUtilizationPercentage",
        "RequestLatency",
    ]
    assert ok(tiffin(server, "monitor", "autoscale", "profile", "list", "--autoscale-name", name))[1]["name"] == (
        "weekend-profile"
    )
    shown_profile = ok(
        tiffin(server, "monitor", "autoscale", "profile", "show", "--autoscale-name", name, "-n", "weekend-profile")
    )
    assert shown_profile["capacity"]["maximum"] == "2"
    assert [
        r["index"] for r in ok(tiffin(server, "monitor", "autoscale", "rule", "list", "--autoscale-name", name))
    ] == [0, 1, 2]
    assert [s["name"] for s in ok(tiffin(server, "monitor", "autoscale", "list"))] == [name]

    # update, rule delete, profile delete, what the engine reads from the store
    updated = ok(tiffin(server, "monitor", "autoscale", "update", "--name", name, "--max-count", "4"))
    assert updated["profiles"][0]["capacity"]["maximum"] == "4"
    disabled = ok(tiffin(server, "monitor", "autoscale", "update", "--name", name, "--enabled", "false"))
    assert disabled["enabled"] is False and disabled["profiles"][0]["capacity"]["maximum"] == "4"
    assert ok(tiffin(server, "monitor", "autoscale", "update", "--name", name, "--enabled", "true"))["enabled"] is True
    ok(tiffin(server, "monitor", "autoscale", "rule", "delete", "--autoscale-name", name, "--index", "2"))
    assert len(ok(tiffin(server, "monitor", "autoscale", "rule", "list", "--autoscale-name", name))) == 2
    ok(tiffin(server, "monitor", "autoscale", "profile", "delete", "--autoscale-name", name, "-n", "weekend-profile"))
    from tiffin.store import Store

    with Store.open(home=server.home) as store:
        (record,) = store.list_autoscale_settings()
    assert (record.endpoint_name, record.deployment_name, record.target_exists) == ("my-endpoint", "blue", True)
    assert len(record.spec["profiles"]) == 1 and record.spec["profiles"][0]["capacity"]["maximum"] == "4"

    ok(tiffin(server, "monitor", "autoscale", "delete", "--name", name))
    gone = tiffin(server, "monitor", "autoscale", "show", "--name", name)
    assert gone.returncode == 1 and "not found" in gone.stderr


def test_bad_condition_exits_1_naming_the_form(server) -> None:
    ok(
        tiffin(
            server,
            "monitor",
            "autoscale",
            "create",
            "-n",
            "cond",
            "-e",
            "my-endpoint",
            "-d",
            "green",
            "--min-count",
            "1",
            "--max-count",
            "3",
            "--count",
            "1",
        )
    )
    try:
        done = tiffin(
            server,
            "monitor",
            "autoscale",
            "rule",
            "create",
            "--autoscale-name",
            "cond",
            "--condition",
            "CpuUtilizationPercentage is high",
            "--scale",
            "out",
            "1",
        )
        assert done.returncode == 1, done.stderr
        assert "METRIC {==,!=,>,>=,<,<=} THRESHOLD {avg,min,max,total} WINDOW" in done.stderr
        done = tiffin(
            server,
            "monitor",
            "autoscale",
            "rule",
            "create",
            "--autoscale-name",
            "cond",
            "--condition",
            "CpuUtilizationPercentage > 70 avg 5m",
            "--scale",
            "up",
            "1",
        )
        assert done.returncode == 1 and "out N, in N" in done.stderr
        assert ok(tiffin(server, "monitor", "autoscale", "rule", "list", "--autoscale-name", "cond")) == []
        # A second setting on the same deployment is refused, as Azure allows one per resource.
        again = tiffin(
            server,
            "monitor",
            "autoscale",
            "create",
            "-n",
            "cond2",
            "-e",
            "my-endpoint",
            "-d",
            "green",
            "--min-count",
            "1",
            "--max-count",
            "3",
            "--count",
            "1",
        )
        assert again.returncode == 1 and "already has autoscale setting 'cond'" in again.stderr
        with server.client() as client:
            for _ in range(10):
                client.autoscale.create_rule("cond", "RequestsPerMinute > 5 avg 1m", "out 1")
            with pytest.raises(SpecError, match="at most 10 rules"):
                client.autoscale.create_rule("cond", "RequestsPerMinute > 5 avg 1m", "out 1")
        bad_counts = tiffin(server, "monitor", "autoscale", "update", "-n", "cond", "--min-count", "5")
        assert bad_counts.returncode == 1 and "--min-count" in bad_counts.stderr
    finally:
        ok(tiffin(server, "monitor", "autoscale", "delete", "-n", "cond"))


def test_unknown_resource_is_a_clear_error(server) -> None:
    workspace = "/subscriptions/x/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/w"
    missing = f"{workspace}/onlineEndpoints/my-endpoint/deployments/nope"
    done = tiffin(
        server,
        "monitor",
        "autoscale",
        "create",
        "-n",
        "x",
        "--resource",
        missing,
        "--min-count",
        "1",
        "--max-count",
        "2",
        "--count",
        "1",
    )
    assert done.returncode == 1 and "online deployment 'nope' of endpoint 'my-endpoint' not found" in done.stderr
    done = tiffin(
        server,
        "monitor",
        "autoscale",
        "create",
        "-n",
        "x",
        "--resource",
        f"{workspace}/virtualMachines/vm",
        "--min-count",
        "1",
        "--max-count",
        "2",
        "--count",
        "1",
    )
    assert done.returncode == 1 and "not an online deployment's id" in done.stderr
    done = tiffin(
        server,
        "monitor",
        "autoscale",
        "rule",
        "create",
        "--autoscale-name",
        "never",
        "--condition",
        "RequestsPerMinute > 5 avg 1m",
        "--scale",
        "out",
        "1",
    )
    assert done.returncode == 1 and "autoscale setting 'never' not found" in done.stderr


def test_rest_routes_need_the_admin_token(server) -> None:
    routes = [
        ("GET", "/api/autoscale-settings"),
        ("POST", "/api/autoscale-settings"),
        ("GET", "/api/autoscale-settings/a"),
        ("PATCH", "/api/autoscale-settings/a"),
        ("DELETE", "/api/autoscale-settings/a"),
        ("POST", "/api/autoscale-settings/a/rules"),
        ("DELETE", "/api/autoscale-settings/a/rules/0"),
        ("PUT", "/api/autoscale-settings/a/profiles/p"),
        ("DELETE", "/api/autoscale-settings/a/profiles/p"),
    ]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for method, route in routes:
            for headers in ({}, {"Authorization": "Bearer wrong-token"}):
                answer = http.request(method, route, headers=headers, json={})
                assert answer.status_code == 401, (method, route, answer.text)
        # A bad body is a 4xx with a message, never a 500.
        good = {"Authorization": f"Bearer {server.admin_token}"}
        answer = http.post("/api/autoscale-settings", headers=good, json={"name": "z", "min_count": "two"})
        assert answer.status_code == 422 and "message" in answer.json()


def test_deleting_the_deployment_keeps_the_setting_reported_as_orphaned(server) -> None:
    with server.client() as client:
        client.online_deployments.create_or_update(
            {"name": "short", "model": MODEL, "code_configuration": CODE}, "my-endpoint", wait=False
        )
        client.autoscale.create(
            "short-lived", endpoint_name="my-endpoint", deployment_name="short", min_count=1, max_count=2, count=1
        )
        client.online_deployments.delete("short", "my-endpoint")
        kept = client.autoscale.get("short-lived")
        assert kept["targetExists"] is False  # as Azure keeps the autoscale resource; the engine skips it
        assert "short-lived" in [s["name"] for s in client.autoscale.list()]
        client.autoscale.delete("short-lived")
        assert "short-lived" not in [s["name"] for s in client.autoscale.list()]
