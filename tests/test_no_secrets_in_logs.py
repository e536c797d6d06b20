"""No key, token, request body or query string ever reaches a log file under TIFFIN_HOME/logs or a metric
label (issue 15, "done means"): requests carrying unique markers in each, then every file is searched."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tiffin.testing import serve_tiffin

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent / "deployments"


def test_no_key_token_body_or_query_in_any_log_or_metric_label():
    from tiffin.specs import OnlineDeployment, load_spec

    body_marker = "bodymarker" + secrets.token_hex(8)
    query_marker = "querymarker" + secrets.token_hex(8)
    wrong_key = "wrongkeymarker" + secrets.token_hex(8)
    with serve_tiffin() as server:
        client = server.client()
        client.online_endpoints.create_or_update({"name": "secret", "auth_mode": "key"})
        spec = load_spec(
            HERE / "plain" / "deployment.yml", OnlineDeployment, overrides=["name=blue", "readiness_probe.period=1"]
        ).spec.to_yaml_dict()
        client.online_deployments.create_or_update(spec, "secret")
        client.online_endpoints.set_traffic("secret", {"blue": 100})
        keys = client.online_endpoints.get_keys("secret")
        url = f"{server.url}/endpoints/secret/score?{query_marker}={query_marker}"
        good = {"Authorization": f"Bearer {keys['primaryKey']}"}
        with httpx.Client(timeout=30) as http:
            assert http.post(url, json={"data": [[1]], "note": body_marker}, headers=good).status_code == 200
            assert http.post(url, json={"nodata": body_marker}, headers=good).status_code == 500  # run() raises
            assert (
                http.post(url, json={"x": body_marker}, headers={"Authorization": f"Bearer {wrong_key}"}).status_code
                == 401
            )
            big = {"data": [[1]], "note": body_marker * 10}
            assert (
                http.post(url, json=big, headers={"Authorization": f"Bearer {keys['secondaryKey']}"}).status_code == 200
            )
        metrics = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {server.admin_token}"})
        assert metrics.status_code == 200
        time.sleep(0.5)  # the traffic log's writer runs every 50 ms
        secrets_sent = {
            "body": body_marker,
            "query": query_marker,
            "wrong key": wrong_key,
            "primary key": keys["primaryKey"],
            "secondary key": keys["secondaryKey"],
            "admin token": server.admin_token,
        }
        files = [p for p in (server.home / "logs").rglob("*") if p.is_file()]
        names = {p.name for p in files}
        assert {"traffic.log", "replica-0.log"} <= names, names
        for path in files:
            text = path.read_bytes().decode("utf-8", "replace")
            for what, marker in secrets_sent.items():
                assert marker not in text, f"the {what} is in {path.relative_to(server.home)}"
        labels = {
            (name, value)
            for family in text_string_to_metric_families(metrics.text)
            for sample in family.samples
            for name, value in sample.labels.items()
        }
        for what, marker in secrets_sent.items():
            assert marker not in metrics.text, f"the {what} is in /metrics"
        # Every label value is a name the admin chose, a number or a fixed word: nothing a caller sent.
        allowed = {
            "endpoint": lambda v: v == "secret",
            "deployment": lambda v: v in ("blue", ""),
            "status_code": str.isdigit,
            "status_class": lambda v: v in ("2xx", "4xx", "5xx"),
            "direction": lambda v: v in ("in", "out"),
            "instance": str.isdigit,
            "le": lambda v: v == "+Inf" or v.replace(".", "", 1).isdigit(),
        }
        assert {name for name, _ in labels} <= set(allowed)
        assert all(allowed[name](value) for name, value in labels), sorted(labels)
