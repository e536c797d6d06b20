"""The traffic log: one JSON line per request through a real server, and its rotation (issue 15, item 3)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from conftest import eventually

from tiffin.telemetry.traffic_log import TrafficLog, format_entry, traffic_log_path
from tiffin.testing import serve_tiffin

HERE = Path(__file__).parent / "deployments"
FIELDS = {
    "time", "endpoint", "deployment", "method", "path", "status", "latency_ms",
    "request_id", "ms_request_id", "bytes_in", "bytes_out", "client",
}  # fmt: skip


def _entry(n: int) -> tuple:
    return (time.time(), "e", "d", "POST", f"/endpoints/e/score/{n}", 200, 0.001, [], [], 10, 20, ("127.0.0.1", 5))


def test_rotation_keeps_at_most_backups_files_of_bounded_size(tmp_path):
    log = TrafficLog(tmp_path / "logs" / "traffic.log", max_bytes=4096, backups=2)
    log.start()
    for n in range(600):  # about 110 KiB of lines: many rotations
        log.add(_entry(n))
    log.close()
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["traffic.log", "traffic.log.1", "traffic.log.2"]
    for name in files:
        assert 0 < (tmp_path / "logs" / name).stat().st_size <= 4096
        assert (tmp_path / "logs" / name).stat().st_mode & 0o077 == 0
    # The newest lines are in traffic.log, the ones before them in traffic.log.1; none is cut in two.
    last = [json.loads(line) for line in (tmp_path / "logs" / "traffic.log").read_text().splitlines()]
    before = [json.loads(line) for line in (tmp_path / "logs" / "traffic.log.1").read_text().splitlines()]
    assert last[-1]["path"] == "/endpoints/e/score/599"
    assert before[-1]["path"].rsplit("/", 1)[1] == str(int(last[0]["path"].rsplit("/", 1)[1]) - 1)


def test_an_entry_never_holds_headers_other_than_request_ids():
    request = [(b"authorization", b"Bearer SECRET"), (b"x-request-id", b"abc")]
    response = [(b"x-ms-request-id", b"def"), (b"set-cookie", b"SECRET")]
    entry = (0.0, "e", "d", "POST", "/endpoints/e/score", 200, 0.0012, request, response, 1, 2, ("10.0.0.1", 9))
    line = format_entry(entry)
    assert "SECRET" not in line
    record = json.loads(line)
    assert set(record) == FIELDS
    assert (record["request_id"], record["ms_request_id"], record["client"]) == ("abc", "def", "10.0.0.1:9")
    assert record["time"] == "1970-01-01T00:00:00.000Z" and record["latency_ms"] == 1.2


@pytest.mark.slow
def test_one_line_per_request_through_a_real_endpoint():
    from tiffin.specs import OnlineDeployment, load_spec

    with serve_tiffin() as server:
        client = server.client()
        client.online_endpoints.create_or_update({"name": "logged", "auth_mode": "key"})
        spec = load_spec(
            HERE / "plain" / "deployment.yml", OnlineDeployment, overrides=["name=blue", "readiness_probe.period=1"]
        ).spec.to_yaml_dict()
        client.online_deployments.create_or_update(spec, "logged")
        client.online_endpoints.set_traffic("logged", {"blue": 100})
        key = client.online_endpoints.get_keys("logged")["primaryKey"]
        url = f"{server.url}/endpoints/logged/score"
        with httpx.Client(timeout=30) as http:
            ok = http.post(
                url + "?q=1", json={"data": [[1, 2]]}, headers={"Authorization": f"Bearer {key}", "x-request-id": "r-1"}
            )
            assert ok.status_code == 200
            assert http.post(url, json={}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        path = traffic_log_path(server.home)
        lines = eventually(lambda: (lambda ls: ls if len(ls) >= 2 else None)(path.read_text().splitlines()), 5)
        first, second = (json.loads(line) for line in lines[-2:])
        assert set(first) == FIELDS
        assert first["endpoint"] == "logged" and first["deployment"] == "blue"
        assert (first["method"], first["path"], first["status"]) == ("POST", "/endpoints/logged/score", 200)
        assert first["request_id"] == "r-1" == ok.headers["x-request-id"]
        assert first["bytes_in"] == len(b'{"data":[[1,2]]}') and first["bytes_out"] == len(ok.content)
        assert first["client"].startswith("127.0.0.1:") and first["latency_ms"] > 0
        assert "q=1" not in lines[-2] and key not in path.read_text()
        assert second["status"] == 401 and second["deployment"] is None  # refused before one was chosen
        assert path.stat().st_mode & 0o077 == 0


def test_lines_are_json_whatever_the_path_and_ids_hold():
    from tiffin.telemetry.traffic_log import _Clock

    clock = _Clock()
    path = '/endpoints/e/a"b\\c\u00e9\n\x00'
    request = [(b"X-Request-Id", 'q"\\\u00ff'.encode("latin-1"))]
    for _ in range(2):  # the second line comes from the writer's cache of repeated parts
        record = json.loads(format_entry((1.5, "e", "", "GET", path, 401, 0.0, request, (), 0, 0, None), clock))
        assert (record["path"], record["request_id"], record["deployment"]) == (path, 'q"\\\u00ff', None)
        assert record["time"] == "1970-01-01T00:00:01.500Z"
