"""A deployment's only replica killed under load: requests wait for the replacement (up to
``request_settings.max_queue_wait_ms``) instead of being answered 503 at once.

Real `tiffin serve`, real replica processes, SIGKILL; clients only talk to 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from datetime import UTC
from pathlib import Path

import httpx
import pytest

from tiffin.testing import command_lines, serve_tiffin

pytestmark = pytest.mark.slow

PLAIN = Path(__file__).parent / "deployments" / "plain" / "deployment.yml"
FAST_PROBES = ["readiness_probe.initial_delay=1", "readiness_probe.period=1", "liveness_probe.period=1"]


def _spec(name: str, *overrides: str) -> dict:
    from tiffin.specs import OnlineDeployment, load_spec

    return load_spec(PLAIN, OnlineDeployment, overrides=[f"name={name}", *FAST_PROBES, *overrides]).spec.to_yaml_dict()


def _replica_pids(home: Path, endpoint: str) -> list[int]:
    return [pid for pid, cmdline in command_lines() if str(home) in cmdline and f"/deployments/{endpoint}/" in cmdline]


class _Load:
    """Requests from two threads until stopped, counting statuses (0: no answer at all)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url, self.headers = url, headers
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self.slowest_s = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        deadline = time.monotonic() + 90
        with httpx.Client(headers=self.headers, timeout=60) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    r = client.post(self.url, json={"data": [[1, 2]]})
                    status, text = r.status_code, r.text[:200]
                except httpx.HTTPError as exc:
                    status, text = 0, repr(exc)
                with self._lock:
                    self.statuses[status] += 1
                    self.slowest_s = max(self.slowest_s, time.monotonic() - started)
                    if status != 200:
                        self.failures.append(f"{status} {text}")

    def __enter__(self) -> _Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(90)


@pytest.fixture(scope="module")
def server():
    with serve_tiffin() as running:
        yield running


def _endpoint(server, name: str, *overrides: str) -> tuple[str, dict[str, str]]:
    client = server.client()
    client.online_endpoints.create_or_update({"name": name, "auth_mode": "key"})
    client.online_deployments.create_or_update(_spec("only", "instance_count=1", *overrides), name, all_traffic=True)
    key = client.online_endpoints.get_keys(name)["primaryKey"]
    return f"{server.url}/endpoints/{name}/score", {"Authorization": f"Bearer {key}"}


def _kill_and_wait_for_replacement(server, endpoint: str, url: str, headers: dict[str, str]) -> None:
    (pid,) = _replica_pids(server.home, endpoint)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if httpx.post(url, json={"data": [[1, 2]]}, headers=headers, timeout=60).status_code == 200:
            break
        time.sleep(0.2)
    assert pid not in _replica_pids(server.home, endpoint)


def _at_most_the_requests_in_flight_at_the_kill(load: _Load) -> None:
    """A request inside the replica when it is SIGKILLed was delivered and cannot be sent again (a POST may have
    been acted on): 502, at most one per client thread. Every other request must not fail for the restart."""
    assert load.statuses[502] <= len(load._threads), (load.statuses, load.failures[:5])
    assert all("closed" in f for f in load.failures if f.startswith("502")), load.failures[:5]


def test_requests_wait_for_the_replacement_of_a_killed_last_replica(server):
    url, headers = _endpoint(
        server, "restart", "request_settings.max_queue_wait_ms=60000", "request_settings.request_timeout_ms=60000"
    )
    with _Load(url, headers) as load:
        time.sleep(1)
        _kill_and_wait_for_replacement(server, "restart", url, headers)
        time.sleep(1)
    assert sum(load.statuses.values()) > 20, load.statuses
    _at_most_the_requests_in_flight_at_the_kill(load)
    assert load.statuses[200] == sum(load.statuses.values()) - load.statuses[502], (load.statuses, load.failures[:5])
    assert load.slowest_s > 0.5, "some requests must have waited across the restart (else nothing was tested)"


def test_a_short_max_queue_wait_gives_503_not_a_hang(server):
    url, headers = _endpoint(
        server, "restart-short", "request_settings.max_queue_wait_ms=100", "request_settings.request_timeout_ms=60000"
    )
    with _Load(url, headers) as load:
        time.sleep(1)
        _kill_and_wait_for_replacement(server, "restart-short", url, headers)
    _at_most_the_requests_in_flight_at_the_kill(load)
    assert set(load.statuses) <= {200, 502, 503}, (load.statuses, load.failures[:5])
    assert load.statuses[503] > 0, load.statuses
    assert all("max_queue_wait_ms (100 ms)" in f for f in load.failures if f.startswith("503")), load.failures[:5]
    assert load.slowest_s < 30, "a request waited far past max_queue_wait_ms"


# --- the gateway alone: a table whose deployment has no ready replica but one on its way ---------------------


@pytest.fixture(scope="module")
def plain_replica():
    from tiffin.testing import serve_deployment

    with serve_deployment(PLAIN) as replica:
        yield replica.url


@pytest.fixture
def gw():
    from test_gateway import gateway_server

    with gateway_server() as server:
        yield server


def _route(replica_url: str | None, replacing: bool, **settings):
    from tiffin.routing import DeploymentRoute, Replica

    replicas = (Replica("only-0", replica_url),) if replica_url else ()
    return DeploymentRoute("only", replicas, replacing=replacing, **settings)


def _table(route):
    from test_gateway import table

    return table({"only": route}, {"only": 100})


def _score_in_thread(gw) -> tuple[threading.Thread, list[tuple[int, str, float]]]:
    from test_gateway import AUTH

    out: list[tuple[int, str, float]] = []

    def send() -> None:
        started = time.monotonic()
        r = httpx.post(gw.url + "/endpoints/ep/score", json={"data": [[1, 2]]}, headers=AUTH, timeout=60)
        out.append((r.status_code, r.text, time.monotonic() - started))

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread, out


def test_a_request_waits_for_the_replacement_then_is_answered(gw, plain_replica):
    gw.set_table(_table(_route(None, True, max_queue_wait_ms=20000)))
    thread, out = _score_in_thread(gw)
    time.sleep(0.5)
    assert not out, "answered before any replica was ready"
    gw.set_table(_table(_route(plain_replica, False, max_queue_wait_ms=20000)))
    thread.join(30)
    assert [status for status, _, _ in out] == [200], out


def test_no_replica_and_none_coming_is_503_at_once_and_waiters_are_released(gw, plain_replica):
    gw.set_table(_table(_route(None, False, max_queue_wait_ms=20000)))
    thread, out = _score_in_thread(gw)
    thread.join(30)
    assert out[0][0] == 503 and "no ready replica" in out[0][1], out
    # Waiting for a replacement that is then given up (start failures, scaled to 0): 503 then, not at 20 s.
    gw.set_table(_table(_route(None, True, max_queue_wait_ms=20000)))
    thread, out = _score_in_thread(gw)
    time.sleep(0.3)
    gw.set_table(_table(_route(None, False, max_queue_wait_ms=20000)))
    thread.join(30)
    assert out[0][0] == 503 and out[0][2] < 15, out


def test_the_wait_is_bounded_by_max_queue_wait_ms_and_the_request_timeout(gw):
    for settings, bound in (({"max_queue_wait_ms": 300}, "300 ms"), ({"request_timeout_ms": 200}, "200 ms")):
        gw.set_table(_table(_route(None, True, **{"max_queue_wait_ms": 20000, **settings})))
        thread, out = _score_in_thread(gw)
        thread.join(30)
        assert out[0][0] == 503 and f"max_queue_wait_ms ({bound})" in out[0][1], out
        assert out[0][2] < 15, out


def test_a_replica_dead_before_the_table_shows_it_is_retried_on_the_next_table(gw, plain_replica):
    from tiffin.testing import free_port

    gw.set_table(_table(_route(f"http://127.0.0.1:{free_port()}", False, max_queue_wait_ms=20000)))
    thread, out = _score_in_thread(gw)
    time.sleep(0.5)  # refused twice; now waiting for the next table
    gw.set_table(_table(_route(None, True, max_queue_wait_ms=20000)))
    time.sleep(0.3)
    gw.set_table(_table(_route(plain_replica, False, max_queue_wait_ms=20000)))
    thread.join(30)
    assert [status for status, _, _ in out] == [200], out


def test_the_table_says_which_deployments_have_a_replica_on_its_way():
    from datetime import datetime

    from tiffin.routing_state import build_table
    from tiffin.store import DeploymentRecord, EndpointRecord

    now = datetime.now(UTC)
    ep = EndpointRecord("e", "online", {}, {"a": 100}, {}, "key", "Succeeded", now, now, 1)
    deps = [DeploymentRecord(n, "e", n, "online", {}, "Succeeded", None, now, now, 1) for n in ("a", "b")]
    built = build_table([ep], deps, lambda e, d: (), 1, replacing=lambda e, d: d == "a")
    assert built.endpoints["e"].deployments["a"].replacing
    assert not built.endpoints["e"].deployments["b"].replacing
