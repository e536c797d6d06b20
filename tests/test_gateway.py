"""The gateway in front of real replica processes, with routing tables set by hand.

The whole system (`tiffin serve`: store, supervisor, API) is tested in test_serve.py; here the gateway's
own behaviour is pinned down: split, pin, mirror, auth, 408/413/429/503, retry past a dead replica.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from conftest import eventually

from tiffin.auth import Credentials, issue_token, new_token_secret
from tiffin.gateway import Gateway
from tiffin.routing import DeploymentRoute, EndpointRoute, Replica, RoutingTable, decide
from tiffin.testing import free_port, serve_deployment

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent / "deployments"
KEYS = Credentials("key", primary_key="primary-key-0123456789", secondary_key="secondary-key-0123456789")
AUTH = {"Authorization": f"Bearer {KEYS.primary_key}"}


class _GatewayServer:
    """The gateway on uvicorn in a thread of this process; tables are swapped on its own loop."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.loop = asyncio.get_running_loop()
                    await self.gateway.start()
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await self.gateway.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await self.gateway(scope, receive, send)

    def set_table(self, table: RoutingTable) -> None:
        assert self.loop is not None
        done = threading.Event()

        def apply() -> None:
            self.gateway.set_table(table)
            done.set()

        self.loop.call_soon_threadsafe(apply)
        assert done.wait(5)


@contextmanager
def gateway_server(**kwargs) -> Iterator[_GatewayServer]:
    app = _GatewayServer(Gateway(**kwargs))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=app.port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    eventually(lambda: server.started, timeout=10, interval=0.02)
    try:
        yield app
    finally:
        server.should_exit = True
        thread.join(10)


def route(name: str, url: str | None, **settings) -> DeploymentRoute:
    replicas = (Replica(f"{name}-0", url),) if url else ()
    return DeploymentRoute(name, replicas, **settings)


def table(deployments: dict[str, DeploymentRoute], traffic, mirror=None, credentials=KEYS) -> RoutingTable:
    ep = EndpointRoute("ep", credentials, traffic, mirror or {}, deployments)
    return RoutingTable({"ep": ep}, generation=int(time.monotonic() * 1000))


@pytest.fixture(scope="module")
def replicas():
    with (
        serve_deployment(HERE / "plain" / "deployment.yml") as blue,
        serve_deployment(HERE / "plain" / "deployment.yml") as green,
        serve_deployment(HERE / "slow" / "deployment.yml") as slow,
    ):
        yield {"blue": blue.url, "green": green.url, "slow": slow.url}


SEED = 20261130


@pytest.fixture(scope="module")
def gw():
    # Seeded so that share checks (split, mirror) see the same draws on every run.
    with gateway_server(max_body_bytes=64 * 1024, rng=random.Random(SEED)) as server:
        yield server


@pytest.fixture
def fresh_gw():
    """A gateway of the test's own, its draws starting from SEED: no earlier test has used any of them."""
    with gateway_server(max_body_bytes=64 * 1024, rng=random.Random(SEED)) as server:
        yield server


def mirrored(endpoint: EndpointRoute, requests: int) -> Counter[str | None]:
    """Where the first ``requests`` unpinned requests to a fresh gateway send a copy (None: nowhere).

    The gateway draws twice per request for :func:`decide` (and, with one replica per deployment and none
    marked down, nothing else), so the same seeded draws give exactly its decisions.
    """
    rng = random.Random(SEED)
    return Counter(decide(endpoint, None, rng.random(), rng.random()).mirror for _ in range(requests))


def score(gw, body=None, headers=None, **kwargs) -> httpx.Response:
    return httpx.post(
        gw.url + "/endpoints/ep/score",
        json=body or {"data": [[1, 2]]},
        headers={**AUTH, **(headers or {})},
        timeout=30,
        **kwargs,
    )


def test_split_follows_traffic_and_names_the_deployment(gw, replicas):
    gw.set_table(
        table(
            {"blue": route("blue", replicas["blue"]), "green": route("green", replicas["green"])},
            {"blue": 80, "green": 20},
        )
    )
    seen = Counter()
    with httpx.Client(headers=AUTH, timeout=30) as client:
        for _ in range(1000):
            r = client.post(gw.url + "/endpoints/ep/score", json={"data": [[1, 2]]})
            assert r.status_code == 200
            assert r.json() == {"sums": [6], "raw_type": "str"}
            seen[r.headers["azureml-model-deployment"]] += 1
    assert abs(seen["blue"] / 1000 - 0.80) < 0.05, seen
    assert r.headers["x-ms-request-id"]  # the replica's request id comes through


def test_pin_header_reaches_a_zero_traffic_deployment(gw, replicas):
    gw.set_table(
        table(
            {"blue": route("blue", replicas["blue"]), "green": route("green", replicas["green"])},
            {"blue": 100, "green": 0},
        )
    )
    for header in ("azureml-model-deployment", "x-tiffin-deployment"):
        r = score(gw, headers={header: "green"})
        assert r.status_code == 200 and r.headers["azureml-model-deployment"] == "green"
    r = score(gw, headers={"azureml-model-deployment": "purple"})
    assert r.status_code == 404 and "purple" in r.json()["message"]


def test_no_traffic_is_503_and_unknown_endpoint_404(gw, replicas):
    gw.set_table(table({"blue": route("blue", replicas["blue"])}, {}))
    r = score(gw)
    assert r.status_code == 503 and "traffic" in r.json()["message"]
    r = httpx.post(gw.url + "/endpoints/nope/score", json={}, headers=AUTH)
    assert r.status_code == 404 and "nope" in r.json()["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic " + KEYS.primary_key},
        {"Authorization": KEYS.primary_key},
        {"Authorization": "Bearer " + KEYS.primary_key[:-1]},
    ],
)
def test_auth_failures_are_401_and_never_reach_a_replica(gw, replicas, headers):
    gw.set_table(table({"blue": route("blue", replicas["blue"])}, {"blue": 100}))
    r = httpx.post(gw.url + "/endpoints/ep/score", json={"data": [[1]]}, headers=headers)
    assert r.status_code == 401
    assert "message" in r.json() and KEYS.primary_key not in r.text


def test_token_mode(gw, replicas):
    secret = new_token_secret()
    gw.set_table(
        table(
            {"blue": route("blue", replicas["blue"])},
            {"blue": 100},
            credentials=Credentials("aml_token", token_secret=secret),
        )
    )
    token = issue_token("ep", secret).access_token
    assert (
        httpx.post(
            gw.url + "/endpoints/ep/score", json={"data": [[1]]}, headers={"Authorization": f"Bearer {token}"}
        ).status_code
        == 200
    )
    assert score(gw).status_code == 401  # a key is no token


def test_payload_over_the_limit_is_413(gw, replicas):
    gw.set_table(table({"blue": route("blue", replicas["blue"])}, {"blue": 100}))
    big = b"x" * (64 * 1024 + 1)
    r = httpx.post(gw.url + "/endpoints/ep/score", content=big, headers=AUTH)
    assert r.status_code == 413 and "larger than" in r.json()["message"]

    def chunks():
        yield b"y" * (40 * 1024)
        yield b"y" * (40 * 1024)

    r = httpx.post(gw.url + "/endpoints/ep/score", content=chunks(), headers=AUTH)  # chunked: no content-length
    assert r.status_code == 413


def test_request_timeout_is_408(gw, replicas):
    gw.set_table(table({"slow": route("slow", replicas["slow"], request_timeout_ms=300)}, {"slow": 100}))
    r = score(gw, {"sleep": 1.0})
    assert r.status_code == 408 and "request_timeout_ms" in r.json()["message"]
    time.sleep(1.0)  # let the replica finish the abandoned request
    assert score(gw, {"sleep": 0}).status_code == 200


def test_queue_wait_exceeded_is_429(gw, replicas):
    gw.set_table(
        table(
            {
                "slow": route(
                    "slow",
                    replicas["slow"],
                    max_concurrent_requests_per_instance=1,
                    max_queue_wait_ms=100,
                    request_timeout_ms=5000,
                )
            },
            {"slow": 100},
        )
    )
    with httpx.Client(headers=AUTH, timeout=30) as client:
        results: list[int] = []

        def call(sleep: float) -> None:
            results.append(client.post(gw.url + "/endpoints/ep/score", json={"sleep": sleep}).status_code)

        holder = threading.Thread(target=call, args=(1.0,))
        holder.start()
        time.sleep(0.2)  # the slot is taken
        r = client.post(gw.url + "/endpoints/ep/score", json={"sleep": 0})
        holder.join()
    assert r.status_code == 429 and "max_queue_wait_ms" in r.json()["message"]
    assert results == [200]


def test_queued_request_gets_the_slot_when_it_frees_in_time(gw, replicas):
    gw.set_table(
        table({"slow": route("slow", replicas["slow"], max_queue_wait_ms=2000, request_timeout_ms=5000)}, {"slow": 100})
    )
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(score(gw, {"sleep": 0.3}).status_code)) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200, 200, 200]


def test_mirror_copies_never_slow_or_fail_the_caller(fresh_gw, replicas):
    gw = fresh_gw
    routes = table(
        {
            "blue": route("blue", replicas["blue"]),
            "slow": route("slow", replicas["slow"], request_timeout_ms=3000, max_concurrent_requests_per_instance=4),
        },
        {"blue": 100, "slow": 0},
        mirror={"slow": 50},
    )
    expected = mirrored(routes.endpoints["ep"], 40)["slow"]
    assert 0 < expected < 40  # the seed gives a mix, as a 50% share should
    gw.set_table(routes)
    # The mirror target sleeps 0.5 s (and fails on "fail"): the caller must not notice either.
    started = time.perf_counter()
    with httpx.Client(headers=AUTH, timeout=30) as client:
        for i in range(40):
            r = client.post(gw.url + "/endpoints/ep/score", json={"data": [[1]], "sleep": 0.5, "fail": i % 2 == 0})
            assert r.status_code == 200 and r.headers["azureml-model-deployment"] == "blue"
    elapsed = time.perf_counter() - started
    assert elapsed < 5, f"40 requests took {elapsed:.1f}s: mirror copies slowed the caller"

    def copies_finished() -> dict:
        mirror = gw.gateway.endpoint_stats("ep")["mirror"]["slow"]
        assert mirror["completed"] + mirror["errors"] == mirror["sent"], mirror
        return mirror

    mirror = eventually(copies_finished)
    # Each request the draws chose got a copy, or was counted as dropped (the target was busy).
    assert mirror["sent"] + mirror["dropped"] == expected, mirror
    assert mirror["completed"] + mirror["errors"] > 0
    assert set(mirror["statuses"]) <= {"200", "500"}


def test_mirror_target_down_is_counted_not_felt(fresh_gw, replicas):
    gw = fresh_gw
    routes = table(
        {"blue": route("blue", replicas["blue"]), "dead": route("dead", f"http://127.0.0.1:{free_port()}")},
        {"blue": 100},
        mirror={"dead": 50},
    )
    expected = mirrored(routes.endpoints["ep"], 40)["dead"]
    assert 0 < expected < 40
    gw.set_table(routes)
    for _ in range(40):
        assert score(gw).status_code == 200

    # Every copy the draws chose failed to connect (an error) or found the target busy (dropped).
    def copies_counted() -> dict:
        mirror = gw.gateway.endpoint_stats("ep")["mirror"]["dead"]
        assert mirror["errors"] + mirror["dropped"] == expected, mirror
        return mirror

    assert eventually(copies_counted)["completed"] == 0


def test_dead_replica_is_skipped_and_the_request_retried(gw, replicas):
    dead = Replica("dead-0", f"http://127.0.0.1:{free_port()}")
    alive = Replica("blue-0", replicas["blue"])
    gw.set_table(
        table({"blue": DeploymentRoute("blue", (dead, alive), max_concurrent_requests_per_instance=4)}, {"blue": 100})
    )
    with httpx.Client(headers=AUTH, timeout=30) as client:
        codes = [client.post(gw.url + "/endpoints/ep/score", json={"data": [[1]]}).status_code for _ in range(50)]
    assert codes == [200] * 50


def test_swagger_is_served_under_the_endpoint_url(gw, replicas):
    gw.set_table(table({"blue": route("blue", replicas["blue"])}, {"blue": 100}))
    doc = httpx.get(gw.url + "/endpoints/ep/swagger.json", headers=AUTH).json()
    assert "/endpoints/ep/score" in doc["paths"]
    doc3 = httpx.get(gw.url + "/endpoints/ep/swagger.json?version=3", headers=AUTH).json()
    assert doc3["openapi"].startswith("3.")
    assert httpx.get(gw.url + "/endpoints/ep/swagger.json").status_code == 401


def test_other_routes_of_a_deployment_pass_through(gw, replicas):
    gw.set_table(table({"blue": route("blue", replicas["blue"])}, {"blue": 100}))
    r = httpx.get(gw.url + "/endpoints/ep/", headers=AUTH)
    assert r.status_code == 200 and r.text == "Healthy"
    r = httpx.get(gw.url + "/endpoints/ep/score?data=[[1,2]]", headers=AUTH)
    assert r.status_code == 200 and r.json()["sums"] == [6]


def test_percent_encoded_paths_reach_the_replica_as_sent(gw, replicas):
    gw.set_table(table({"blue": route("blue", replicas["blue"])}, {"blue": 100}))
    r = httpx.get(gw.url + "/endpoints/ep/some%20path?q=a%20b", headers=AUTH)
    # The replica decoded it: the request line it got was valid and kept the encoding.
    assert r.status_code == 404 and "/some path is not served" in r.json()["message"]


def test_replicas_on_unix_sockets_and_a_dead_socket_is_skipped(gw, tmp_path):
    # As the supervisor runs them: `tiffin replica serve --uds`, reached at unix:/path (a short path: the
    # AF_UNIX limit is 107 bytes and pytest's tmp paths are long).
    folder = Path(tempfile.mkdtemp(prefix="tgw-"))
    try:
        socket = folder / "r.sock"
        with serve_deployment(HERE / "plain" / "deployment.yml", extra_args=["--uds", str(socket)]) as replica:
            assert str(socket) in replica.log()
            dead = Replica("dead-0", f"unix:{folder / 'gone.sock'}")
            alive = Replica("blue-0", f"unix:{socket}")
            gw.set_table(
                table(
                    {"blue": DeploymentRoute("blue", (dead, alive), max_concurrent_requests_per_instance=4)},
                    {"blue": 100},
                )
            )
            with httpx.Client(headers=AUTH, timeout=30) as client:
                answers = [client.post(gw.url + "/endpoints/ep/score", json={"data": [[1, 2]]}) for _ in range(20)]
            assert [r.status_code for r in answers] == [200] * 20
            assert answers[0].json() == {"sums": [6], "raw_type": "str"}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_control_plane_writes_reread_routing_off_the_event_loop(tmp_path):
    """After a control-plane write the routing table is read again before the answer (so the gateway already
    routes by it), and that store read runs in a worker thread: with PostgreSQL it is a network round trip,
    during which the event loop keeps serving the gateway."""
    from tiffin.server import TiffinServer
    from tiffin.store import Store

    store = Store.open(home=tmp_path)
    server = TiffinServer(home=tmp_path, store=store, public_url="http://127.0.0.1:7700", admin_token="admin-token")
    readers: list[int] = []
    list_deployments = store.list_deployments

    def recorded(*args, **kwargs):
        readers.append(threading.get_ident())
        return list_deployments(*args, **kwargs)

    store.list_deployments = recorded  # type: ignore[method-assign]

    async def create() -> tuple[int, httpx.Response]:
        transport = httpx.ASGITransport(app=server)
        async with httpx.AsyncClient(transport=transport, base_url="http://tiffin") as client:
            response = await client.post(
                "/api/online-endpoints", json={"name": "ep"}, headers={"Authorization": "Bearer admin-token"}
            )
        return threading.get_ident(), response

    try:
        loop_thread, response = asyncio.run(create())
    finally:
        store.close()
    assert response.status_code == 201, response.text
    assert "ep" in server.gateway.table.endpoints  # current when the write answered
    assert readers and loop_thread not in readers
