"""Several ``tiffin serve`` on one store: liveness, owners, takeover (tiffin.cluster, tiffin.store.cluster).

The pure rules run in milliseconds. The store's compare-and-set writes run on SQLite and on a real
PostgreSQL (the ``pg_server`` fixture of conftest.py), racing threads against each other. The last test
runs two real ``tiffin serve`` on one PostgreSQL database and kills one of them.
"""

from __future__ import annotations

import ast
import os
import signal
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PgServer, eventually, pg_database
from cryptography.fernet import Fernet

from tiffin.cluster import DeploymentClaims, Liveness, jobs_to_run
from tiffin.store import Store
from tiffin.store.cluster import DeploymentOwner, NodeRecord
from tiffin.testing import serve_tiffin

TESTS = Path(__file__).parent
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def node(node_id: str, beat: int, *, incarnation: str = "i1", age_s: float = 0.0) -> NodeRecord:
    at = NOW - timedelta(seconds=age_s)
    return NodeRecord(node_id, f"http://{node_id}", incarnation, beat, at, at)


# --- 1. pure rules -----------------------------------------------------------------------------------


def test_a_node_is_live_while_its_beat_moves_and_dead_a_lease_after_it_stops() -> None:
    seen = Liveness("a", lease_s=10)
    assert seen.observe([node("a", 1), node("b", 1)], now=0, wall_now=NOW) == {"a", "b"}  # first sight: a lease
    assert seen.observe([node("a", 2), node("b", 2)], now=8, wall_now=NOW) == {"a", "b"}
    assert seen.observe([node("a", 3), node("b", 2)], now=17.9, wall_now=NOW) == {"a", "b"}
    assert seen.observe([node("a", 4), node("b", 2)], now=18, wall_now=NOW) == {"a"}  # still for 10 s
    assert seen.observe([node("a", 5), node("b", 3)], now=19, wall_now=NOW) == {"a", "b"}  # beats again


def test_a_new_incarnation_counts_as_a_beat_and_a_missing_row_as_dead() -> None:
    seen = Liveness("a", lease_s=10)
    seen.observe([node("b", 7)], now=0, wall_now=NOW)
    # Restarted: its beat starts over at the same number, but it is a new run.
    assert seen.observe([node("b", 7, incarnation="i2")], now=9, wall_now=NOW) == {"a", "b"}
    assert seen.observe([node("b", 7, incarnation="i2")], now=18, wall_now=NOW) == {"a", "b"}
    assert seen.observe([], now=18.5, wall_now=NOW) == {"a"}  # left: at once


def test_a_row_far_older_than_the_lease_is_dead_at_first_sight() -> None:
    seen = Liveness("a", lease_s=10)
    assert seen.observe([node("b", 3, age_s=31)], now=0, wall_now=NOW) == {"a"}
    assert seen.observe([node("c", 3, age_s=29)], now=0, wall_now=NOW) == {"a", "c"}  # skew within 3 leases


def owners(*pairs: tuple[str, str | None]) -> list[DeploymentOwner]:
    return [DeploymentOwner(name, "ep", name, owner) for name, owner in pairs]


def test_the_node_owning_fewest_deployments_takes_the_next() -> None:
    live = frozenset({"a", "b"})
    a, b = DeploymentClaims("a", patience_s=10), DeploymentClaims("b", patience_s=10)
    rows = owners(("d1", "a"), ("d2", None), ("d3", None))
    assert a.plan(rows, live, now=0) == []  # a owns one, b none: b's turn
    assert [r.id for r in b.plan(rows, live, now=0)] == ["d2", "d3"]  # up to one more than a: 1 and 2
    even = owners(("d1", "a"), ("d2", "b"), ("d3", None))
    assert [r.id for r in a.plan(even, live, now=1)] == ["d3"]
    assert [r.id for r in b.plan(even, live, now=1)] == ["d3"]  # both try; the store's compare-and-set decides


def test_a_dead_nodes_deployments_are_orphans_and_anyone_takes_one_left_too_long() -> None:
    a = DeploymentClaims("a", patience_s=10)
    rows = owners(("d1", "a"), ("d2", "a"), ("d3", "gone"), ("d4", "b"))
    live = frozenset({"a", "b"})
    assert a.plan(rows, live, now=0) == []  # b owns fewer: b's to take
    assert a.plan(rows, live, now=9.9) == []
    assert [r.id for r in a.plan(rows, live, now=10)] == ["d3"]  # b did not, for a whole lease
    alone = frozenset({"a"})
    assert [r.id for r in DeploymentClaims("a", 10).plan(rows, alone, now=0)] == ["d3", "d4"]


def test_jobs_to_run_resumes_its_own_and_adopts_those_of_dead_or_no_owner() -> None:
    running = {"mine": "a", "busy": "a", "theirs": "b", "orphan": "gone", "legacy": None}
    resume, adopt = jobs_to_run(running, "a", frozenset({"a", "b"}), running_here={"busy"})
    assert resume == ["mine"]
    assert adopt == [("legacy", None), ("orphan", "gone")]


# --- 2. the store's compare-and-set, on both backends ----------------------------------------------------


def race(*calls: Any) -> list[Any]:
    """Run the calls in threads released at one moment; their results, in order."""
    start, results = threading.Barrier(len(calls)), [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_one_node_wins_a_deployment_and_the_routing_generation_moves_once(store: Store) -> None:
    store.create_endpoint("online", "ep", {})
    record = store.put_deployment("ep", "blue", "online", {})
    before = store.routing_generation()
    won = race(*[lambda n=n: store.take_deployment(record.id, None, n) for n in ("a", "b", "c", "d")])
    assert sorted(won) == [False, False, False, True]
    winner = store.get_deployment("ep", "blue").owner
    assert winner in {"a", "b", "c", "d"} and won[["a", "b", "c", "d"].index(winner)]
    assert store.routing_generation() == before + 1
    assert store.take_deployment(record.id, "not-the-owner", "e") is False  # compare-and-set, not set
    assert store.take_deployment(record.id, winner, "e") is True


def test_queued_jobs_run_one_per_deployment_across_nodes_claiming_at_once(store: Store) -> None:
    store.create_endpoint("batch", "ep", {})
    for n in range(6):
        store.create_job(f"j{n}", "ep", "d1" if n < 4 else "d2")
    claims = race(*[lambda n=n: store.claim_queued_jobs(f"node-{n % 2}", 1, 10) for n in range(6)])
    claimed = [name for names in claims for name in names]
    assert sorted(claimed) == ["j0", "j4"]  # oldest of each deployment, once, whoever claimed
    running = {job.name: job.owner for job in store.list_jobs(status="Running")}
    assert set(running) == {"j0", "j4"} and set(running.values()) <= {"node-0", "node-1"}
    store.update_job("j0", status="Completed")
    assert store.claim_queued_jobs("node-1", 1, 10) == ["j1"]  # in order: j1 before j2
    assert store.get_job("j1").owner == "node-1"


def test_a_job_is_taken_over_once_and_the_old_owner_can_no_longer_end_it(store: Store) -> None:
    store.create_endpoint("batch", "ep", {})
    store.create_job("j", "ep", "d")
    assert store.claim_queued_jobs("dead", 1, 1) == ["j"]
    won = race(*[lambda n=n: store.take_job("j", "dead", n) for n in ("a", "b", "c")])
    assert sorted(won) == [False, False, True]
    owner = store.job_owner("j")
    assert owner is not None and owner[0] == "Running" and owner[1] in {"a", "b", "c"}
    assert store.update_job("j", expected_status="Running", expected_owner="dead", status="Completed") is None
    assert store.get_job("j").status == "Running"
    done = store.update_job("j", expected_status="Running", expected_owner=owner[1], status="Completed")
    assert done is not None and done.status == "Completed"


def test_node_rows_beat_only_for_their_own_incarnation(store: Store) -> None:
    store.join_node("a", "i1", "http://127.0.0.1:1")
    assert store.beat_node("a", "i1", "http://127.0.0.1:1")
    store.join_node("a", "i2", "http://127.0.0.1:2")  # the node restarted
    assert not store.beat_node("a", "i1", "http://127.0.0.1:1")
    assert [(n.id, n.incarnation, n.beat, n.url) for n in store.list_nodes()] == [("a", "i2", 0, "http://127.0.0.1:2")]
    store.leave_node("a", "i1")  # an old run leaving does not remove the new one
    assert len(store.list_nodes()) == 1
    store.leave_node("a", "i2")
    assert store.list_nodes() == []


# --- 3. two real servers on one PostgreSQL store -------------------------------------------------------

LEASE_S = 2.0
PLAIN = TESTS / "deployments" / "plain" / "deployment.yml"
SCRIPTS = TESTS / "batch_scripts"


def online_spec(name: str) -> dict[str, Any]:
    from tiffin.specs import OnlineDeployment, load_spec

    fast = ["readiness_probe.initial_delay=1", "readiness_probe.period=1", "liveness_probe.period=1"]
    return load_spec(PLAIN, OnlineDeployment, overrides=[f"name={name}", *fast]).spec.to_yaml_dict()


def batch_spec(side_log: Path) -> dict[str, Any]:
    return {
        "name": "main",
        "endpoint_name": "crunch",
        "type": "model",
        "model": {"path": str(SCRIPTS / "model")},
        "code_configuration": {"code": str(SCRIPTS), "scoring_script": "driver.py"},
        "resources": {"instance_count": 1},
        "settings": {
            "mini_batch_size": 1,
            "max_concurrency_per_instance": 1,
            "output_action": "append_row",
            "retry_settings": {"max_retries": 2, "timeout": 60},
            "error_threshold": -1,
            "environment_variables": {"BATCH_SLEEP": "0.4", "BATCH_SIDE_LOG": str(side_log)},
        },
    }


def replica_starts(log: str, endpoint: str, deployment: str) -> int:
    return log.count(f"started replica {endpoint}/{deployment} #")


def score(server: Any, key: str, deployment: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if deployment:
        headers["azureml-model-deployment"] = deployment
    return httpx.post(f"{server.url}/endpoints/shared/score", json={"data": [[1, 2]]}, headers=headers, timeout=30)


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_two_servers_share_one_postgresql_store_and_the_survivor_takes_over(
    pg_server: PgServer, tmp_path: Path
) -> None:
    """Each deployment's replicas start once, on one node; either gateway routes to both nodes' replicas;
    queued jobs run once each; SIGKILL one node and the other takes its deployment and its job over, and
    every input's row is in the job's output exactly once."""
    from tiffin.store.models import Job

    with pg_database(pg_server) as url:
        common = {
            "TIFFIN_STORE_URL": url,
            "TIFFIN_SECRET_KEY": Fernet.generate_key().decode(),
            "TIFFIN_NODE_LEASE": str(LEASE_S),
            "TIFFIN_JOBS_DIR": str(tmp_path / "jobs"),  # shared storage, as several machines would mount it
        }
        with (
            serve_tiffin(tmp_path / "a", env={**common, "TIFFIN_NODE_ID": "node-a"}) as a,
            serve_tiffin(tmp_path / "b", env={**common, "TIFFIN_NODE_ID": "node-b"}) as b,
            Store.open(url, home=tmp_path / "a") as store,
        ):
            servers = {"node-a": a, "node-b": b}
            eventually(lambda: {n.id for n in store.list_nodes()} == {"node-a", "node-b"}, 30)

            # --- online: two deployments, one per node, each started once ---------------------------------
            with a.client() as client:
                client.online_endpoints.create_or_update({"name": "shared", "auth_mode": "key"})
                for name in ("blue", "green"):
                    client.online_deployments.create_or_update(online_spec(name), "shared", timeout=180)
                client.online_endpoints.set_traffic("shared", {"blue": 50, "green": 50})
                key = client.online_endpoints.get_keys("shared")["primaryKey"]
            owner = {name: store.get_deployment("shared", name).owner for name in ("blue", "green")}
            assert set(owner.values()) == {"node-a", "node-b"}, owner
            for name in ("blue", "green"):
                starts = {n: replica_starts(s.log(), "shared", name) for n, s in servers.items()}
                assert starts == {n: int(n == owner[name]) for n in servers}, starts

            # Either gateway reaches both nodes' replicas: pinned, and by the 50/50 split.
            for server in (a, b):
                for name in ("blue", "green"):
                    response = score(server, key, name)
                    assert response.status_code == 200, response.text
                    assert response.headers.get_list("azureml-model-deployment") == [name]

                # A change made through one server's API (the traffic split, through a) reaches the other servers'
                # gateways at their next routing poll: within a second (docs/operations.md).
                def split(server: Any = server) -> Counter[str] | None:
                    seen = Counter(score(server, key).headers.get("azureml-model-deployment") for _ in range(40))
                    return seen if set(seen) == {"blue", "green"} else None

                assert eventually(split, 3), "the 50/50 split did not reach this server's gateway within 3 s"
            # The peer route is not a way around the endpoint's key.
            for headers in ({}, {"x-tiffin-peer": "guess"}, {"Authorization": f"Bearer {key}"}):
                peer = httpx.post(f"{b.url}/_tiffin/peer/shared/blue/score", json={}, headers=headers, timeout=10)
                assert peer.status_code == 404, peer.text

            # --- batch: three queued jobs, one deployment: one at a time, across both nodes ------------------
            side_log = tmp_path / "scored.txt"
            inputs = tmp_path / "in"
            inputs.mkdir()
            names = [f"f{n:02d}.txt" for n in range(10)]
            for n, name in enumerate(names):
                (inputs / name).write_text(" ".join(f"w{n}x{k}" for k in range(n + 1)) + "\n")
            with a.client() as client:
                client.batch_endpoints.create({"name": "crunch", "auth_mode": "aad_token"})
                client.batch_deployments.create_or_update(batch_spec(side_log))
                jobs = [client.batch_endpoints.invoke("crunch", inputs)["name"] for _ in range(3)]

            def running() -> list[Any]:
                return store.list_jobs(status="Running")

            def planned() -> list[Any]:
                found = [j for j in running() if len(store.mini_batches(j.name)) == len(names)]
                assert found, [(j.name, j.status, j.owner, j.error) for j in store.list_jobs()]
                return found

            at_once = eventually(planned, 120)
            assert len(at_once) == 1  # max_jobs_per_deployment (1) holds across the nodes
            victim_job = at_once[0].name
            eventually(lambda: sum(m.status == "done" for m in store.mini_batches(victim_job)) >= 3, 120, interval=0.1)
            assert len(running()) == 1
            victim = store.get_job(victim_job).owner
            survivor = "node-b" if victim == "node-a" else "node-a"
            done_before = {Path(m.items[0]).name for m in store.mini_batches(victim_job) if m.status == "done"}

            # --- SIGKILL the node running the job; the other takes over ------------------------------------
            killed = servers[victim]
            os.killpg(killed.process.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            killed.process.wait(10)
            lost = next(name for name, node_id in owner.items() if node_id == victim)
            took_job = eventually(lambda: store.get_job(victim_job).owner == survivor, 60, interval=0.05)
            job_after = time.monotonic() - killed_at
            assert took_job
            eventually(lambda: store.get_deployment("shared", lost).owner == survivor, 60, interval=0.05)
            deployment_after = time.monotonic() - killed_at
            alive = servers[survivor]
            eventually(lambda: score(alive, key, lost).status_code == 200, 120, interval=0.1)
            serving_after = time.monotonic() - killed_at
            assert replica_starts(alive.log(), "shared", lost) == 1

            with alive.client() as client:
                finals = [client.jobs.stream(job, interval=0.2, timeout=240) for job in jobs]
                assert [f["status"] for f in finals] == ["Completed"] * 3, [client.jobs.read_log(j) for j in jobs]
                for job in jobs:
                    target = client.jobs.download(job, tmp_path / f"download-{job}")
                    # append_row writes each returned row as its Python literal, as Azure does
                    rows = [ast.literal_eval(line)[0] for line in target.read_text().splitlines() if line]
                    assert Counter(rows) == Counter(names), f"{job}: {Counter(rows)}"
            with store.session() as session:
                assert {row.owner for row in session.query(Job)} <= {"node-a", "node-b"}
            scored = Counter(line.split()[1] for line in side_log.read_text().splitlines())
            # Once per job; what was done before the kill is not scored again (the shared jobs folder kept its
            # parts), and at most the one mini-batch in flight at the kill is.
            assert all(scored[name] == len(jobs) for name in done_before), (done_before, scored)
            assert sum(scored.values()) <= len(jobs) * len(names) + 1, scored
            print(
                f"\ntakeover after SIGKILL (lease {LEASE_S:g}s): job owned by the survivor after {job_after:.2f}s, "
                f"deployment after {deployment_after:.2f}s, its first answer from the survivor after "
                f"{serving_after:.2f}s"
            )


def test_running_jobs_are_listed_with_their_owners(store: Store) -> None:
    store.create_endpoint("batch", "ep", {})
    for name in ("j1", "j2", "j3"):
        store.create_job(name, "ep", name)
    store.claim_queued_jobs("a", 1, 2)
    assert store.running_job_owners() == {"j1": "a", "j2": "a"}


# --- 4. a node that lost its work lets go of it ----------------------------------------------------------


def test_a_job_runner_whose_job_was_taken_over_stops_without_ending_it(tmp_path: Path) -> None:
    from tiffin.batch.runner import JobRunner

    home = tmp_path / "home"
    inputs = tmp_path / "in"
    inputs.mkdir()
    files = []
    for n in range(20):
        (inputs / f"f{n:02d}.txt").write_text(f"w{n}\n")
        files.append(str(inputs / f"f{n:02d}.txt"))
    spec = batch_spec(tmp_path / "scored.txt") | {"endpoint_name": "ep"}
    spec["settings"]["environment_variables"]["BATCH_SLEEP"] = "0.2"
    with Store.open(f"sqlite:///{tmp_path / 'tiffin.db'}", home=home) as store:
        store.create_endpoint("batch", "ep", {})
        store.create_job("j", "ep", "main", {"files": files}, spec)
        assert store.claim_queued_jobs("a", 1, 1) == ["j"]
        runner = JobRunner(store, "j", home, node_id="a")
        outcome: list[str] = []
        thread = threading.Thread(target=lambda: outcome.append(runner.run()))
        thread.start()
        try:
            eventually(lambda: any(m.status == "done" for m in store.mini_batches("j")), 60)
            assert store.take_job("j", "a", "b")  # as a live node does once a's heartbeat stalled
            taken_at = time.monotonic()
            thread.join(30)
            stopped_after = time.monotonic() - taken_at
        finally:
            runner.stop.set()
            thread.join(30)
        assert outcome == ["Running"]
        assert stopped_after < 5, stopped_after  # noticed at its next check (every half second) + a worker's stop
        job = store.get_job("j")
        assert (job.status, job.owner) == ("Running", "b")  # b's to finish
        assert "node b took the job over" in (home / "jobs" / "j" / "job.log").read_text()


def test_two_nodes_see_each_other_and_a_stopped_one_leaves_its_deployments_at_once(tmp_path: Path) -> None:
    import asyncio

    from tiffin.node import Node

    async def main(store: Store) -> None:
        store.create_endpoint("online", "ep", {})
        store.put_deployment("ep", "blue", "online", {})
        changes: list[str] = []
        a = Node(store, "a", url="http://127.0.0.1:1", lease_s=0.5)
        b = Node(store, "b", url="http://127.0.0.1:2", lease_s=0.5, on_change=lambda: changes.append("b"))
        await a.start()
        await b.start()
        try:
            assert b.live() == {"a", "b"} and b.peers() == {"a": "http://127.0.0.1:1"}
            assert await asyncio.to_thread(a.claim_deployments) == {("ep", "blue")}
            assert await asyncio.to_thread(b.claim_deployments) == set()  # a's, and a is alive
            await a.stop()  # a graceful stop removes its row
            await asyncio.sleep(0.25)  # one heartbeat of b (lease / 5 = 0.1 s) and some
            assert b.live() == {"b"} and b.peers() == {} and changes
            assert await asyncio.to_thread(b.claim_deployments) == {("ep", "blue")}  # at once: no lease to wait
        finally:
            await a.stop()
            await b.stop()
        assert store.list_nodes() == []

    with Store.open(f"sqlite:///{tmp_path / 'tiffin.db'}", home=tmp_path / "home") as store:
        asyncio.run(main(store))


def test_one_home_serves_one_server_at_a_time(tmp_path: Path) -> None:
    from tiffin.errors import TiffinError
    from tiffin.paths import hold_home

    tmp_path.joinpath("home").mkdir()
    held = hold_home(tmp_path / "home")
    try:
        with pytest.raises(TiffinError, match=rf"another tiffin serve \(pid {os.getpid()}\) is running"):
            hold_home(tmp_path / "home")
    finally:
        held.close()
    hold_home(tmp_path / "home").close()  # released with the file (or the process)


def test_the_routing_table_lists_a_live_peers_serving_deployments_through_its_peer_route() -> None:
    from tiffin.gateway.peers import PeerDirectory
    from tiffin.store import DeploymentRecord

    peers = {"b": "http://10.0.0.2:7700"}
    directory = PeerDirectory("a", lambda: peers, "s3cret")

    def record(owner: str | None, state: str = "Succeeded", count: int = 2) -> DeploymentRecord:
        return DeploymentRecord(
            "id", "ep", "blue", "online", {"instance_count": count}, state, None, NOW, NOW, 1, owner
        )

    replicas = directory.replicas(record("b"))
    assert [(r.url, r.prefix, r.headers, r.remote) for r in replicas] == [
        ("http://10.0.0.2:7700", b"/_tiffin/peer/ep/blue", ((b"x-tiffin-peer", b"s3cret"),), True)
    ] * 2
    assert len({r.id for r in replicas}) == 2
    assert directory.replicas(record("b", "Updating", 1))  # its old replicas serve while it rolls
    assert directory.replicas(record("b", "Creating")) == ()
    assert directory.replicas(record("b", "Failed")) == ()
    assert directory.replicas(record("a")) == ()  # this node's own: the supervisor's replicas
    assert directory.replicas(record("gone")) == ()  # its node stopped beating
    assert directory.replicas(record(None)) == ()
