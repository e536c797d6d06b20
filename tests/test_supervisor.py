"""The supervisor: its pure decisions, and real replica processes started, probed, restarted, rolled and stopped.

Process tests run the scoring scripts under ``tests/deployments`` as real ``tiffin replica serve``
processes on loopback, with fast probe settings (period 1 s, initial delay 1 s), and check that every
process they started is gone at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tiffin import paths
from tiffin.specs import OnlineDeployment, ProbeSettings, load_spec
from tiffin.store import Store
from tiffin.supervisor import Supervisor
from tiffin.supervisor.policy import (
    ProbeCounter,
    SlotView,
    backoff_resets,
    first_liveness_probe_at,
    first_readiness_probe_at,
    liveness_failed,
    lowest_free_indexes,
    plan_rollout,
    readiness_after,
    restart_delay,
    template_of,
)
from tiffin.supervisor.reconciler import DeploymentReconciler

HERE = Path(__file__).parent / "deployments"
FAST_PROBE = {"initial_delay": 1, "period": 1, "timeout": 2}


# --- pure decisions --------------------------------------------------------------------------------


def test_readiness_needs_success_threshold_in_a_row_to_join():
    probe = ProbeSettings(success_threshold=3, failure_threshold=2)
    counter = ProbeCounter()
    ready = False
    for ok in (True, True, False, True, True):  # a failure restarts the run of successes
        counter.record(ok)
        ready = readiness_after(ready, counter, probe)
        assert not ready
    counter.record(True)
    assert readiness_after(ready, counter, probe)


def test_readiness_needs_failure_threshold_in_a_row_to_leave_and_rejoins_on_success():
    probe = ProbeSettings(success_threshold=1, failure_threshold=3)
    counter = ProbeCounter()
    ready = True
    for ok in (False, False, True, False, False):  # a success in between resets the failures
        counter.record(ok)
        ready = readiness_after(ready, counter, probe)
        assert ready
    counter.record(False)
    ready = readiness_after(ready, counter, probe)
    assert not ready
    counter.record(False)  # more failures keep it out
    assert not readiness_after(ready, counter, probe)
    counter.record(True)
    assert readiness_after(False, counter, probe)


def test_liveness_fails_after_failure_threshold_in_a_row():
    probe = ProbeSettings(failure_threshold=2)
    counter = ProbeCounter()
    counter.record(False)
    assert not liveness_failed(counter, probe)
    counter.record(True)
    counter.record(False)
    assert not liveness_failed(counter, probe)
    counter.record(False)
    assert liveness_failed(counter, probe)


def test_first_probes():
    probe = ProbeSettings(initial_delay=10)
    # Readiness: at the ready line when it comes before initial_delay, else at initial_delay.
    assert first_readiness_probe_at(100.0, probe, None) == 110.0
    assert first_readiness_probe_at(100.0, probe, 100.8) == 100.8
    assert first_readiness_probe_at(100.0, probe, 125.0) == 110.0
    # Liveness always waits initial_delay in full.
    assert first_liveness_probe_at(100.0, probe) == 110.0


def test_restart_backoff_doubles_caps_and_resets_after_a_stable_minute():
    assert [restart_delay(n) for n in range(0, 8)] == [0, 1, 2, 4, 8, 16, 30, 30]
    assert restart_delay(10_000) == 30
    assert not backoff_resets(None, 1000.0)
    assert not backoff_resets(950.0, 1000.0)
    assert backoff_resets(940.0, 1000.0)


def test_template_ignores_instance_count_only():
    spec = {"name": "blue", "instance_count": 1, "environment_variables": {"A": "1"}}
    assert template_of(spec) == template_of({**spec, "instance_count": 5})
    assert template_of(spec) != template_of({**spec, "environment_variables": {"A": "2"}})


def test_lowest_free_indexes():
    assert lowest_free_indexes([], 2) == [0, 1]
    assert lowest_free_indexes([0, 2], 3) == [1, 3, 4]
    assert lowest_free_indexes([0], 0) == []


def _views(*items: tuple[int, str, bool]) -> list[SlotView]:
    return [SlotView(index, template, ready) for index, template, ready in items]


def test_plan_creates_and_scales():
    assert plan_rollout([], "t1", 2, gated=False).start == 2
    assert plan_rollout([], "t1", 2, gated=True).start == 0  # failed: wait for a new spec
    up = plan_rollout(_views((0, "t1", True)), "t1", 3, gated=False)
    assert (up.start, up.retire) == (2, ())
    # Scale down keeps ready replicas and low numbers; not-ready ones go first.
    down = plan_rollout(_views((0, "t1", True), (1, "t1", False), (2, "t1", True)), "t1", 1, gated=False)
    assert (down.start, down.retire) == (0, (1, 2))
    steady = plan_rollout(_views((0, "t1", True), (1, "t1", False)), "t1", 2, gated=False)
    assert (steady.start, steady.retire) == (0, ())


def test_plan_rolls_keeping_capacity():
    old = ((0, "t1", True), (1, "t1", True))
    # The new template starts; every old replica serves until new ones are ready.
    first = plan_rollout(_views(*old), "t2", 2, gated=False)
    assert (first.start, first.retire) == (2, ())
    waiting = plan_rollout(_views(*old, (2, "t2", False), (3, "t2", False)), "t2", 2, gated=False)
    assert (waiting.start, waiting.retire) == (0, ())
    # One new replica ready: one old one may go.
    half = plan_rollout(_views(*old, (2, "t2", True), (3, "t2", False)), "t2", 2, gated=False)
    assert half.retire == (1,)
    done = plan_rollout(_views(*old, (2, "t2", True), (3, "t2", True)), "t2", 2, gated=False)
    assert done.retire == (0, 1)
    # Old replicas that do not serve are of no use during the roll.
    dead_old = plan_rollout(_views((0, "t1", False), (1, "t1", True)), "t2", 2, gated=False)
    assert (dead_old.start, dead_old.retire) == (2, (0,))


def test_plan_keeps_old_replicas_when_the_update_failed():
    plan = plan_rollout(_views((0, "t1", True), (1, "t1", False), (2, "t2", False)), "t2", 2, gated=True)
    assert (plan.start, plan.retire) == (0, ())


# --- supervisor without processes ------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(url=f"sqlite:///{tmp_path}/t.db", home=tmp_path) as store:
        store.create_endpoint("online", "ep", {"name": "ep"})
        yield store


def test_batch_deployments_are_not_the_supervisors(tmp_path: Path, store: Store):
    store.create_endpoint("batch", "bep", {"name": "bep"})
    store.put_deployment("bep", "b", "batch", {"name": "b", "instance_count": 1})

    async def main() -> None:
        supervisor = Supervisor(store, tmp_path / "home")
        await supervisor.reconcile_once()
        assert supervisor.replicas() == []
        await supervisor.stop()

    asyncio.run(main())
    assert store.get_deployment("bep", "b").state == "Creating"


def test_invalid_spec_fails_once_and_one_broken_deployment_does_not_stop_others(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    store.put_deployment("ep", "invalid", "online", {"name": "invalid", "instance_count": 0})
    store.put_deployment("ep", "boom", "online", {"name": "boom"})
    store.put_deployment("ep", "fine", "online", {"name": "fine", "instance_count": 1})
    seen: list[str] = []
    original = DeploymentReconciler.reconcile

    async def reconcile(self: DeploymentReconciler, record: Any, now: float) -> None:
        seen.append(self.deployment)
        if self.deployment == "boom":
            raise RuntimeError("kaboom")
        if self.deployment == "invalid":
            await original(self, record, now)

    monkeypatch.setattr(DeploymentReconciler, "reconcile", reconcile)

    written: list[Any] = []

    async def main() -> None:
        supervisor = Supervisor(store, tmp_path / "home")
        try:
            await supervisor.reconcile_once()
            written.append(store.get_deployment("ep", "invalid").updated_at)
            await supervisor.reconcile_once()
            written.append(store.get_deployment("ep", "invalid").updated_at)
        finally:
            await supervisor.stop()

    with caplog.at_level(logging.ERROR, logger="tiffin.supervisor"):
        asyncio.run(main())
    assert seen == ["boom", "fine", "invalid"] * 2
    errors = [r for r in caplog.records if "ep/boom" in r.getMessage()]
    assert errors and errors[0].exc_info is not None  # logged with its traceback, once
    assert len(errors) == 1
    record = store.get_deployment("ep", "invalid")
    assert record.state == "Failed"
    assert "instance_count" in (record.reason or "")
    assert written[0] == written[1]  # written once, not on every pass


# --- real replica processes ------------------------------------------------------------------------


def spec_of(name: str, **changes: Any) -> dict[str, Any]:
    """The test deployment ``name`` as the REST API would store it, with fast probes."""
    data = load_spec(HERE / name / "deployment.yml", OnlineDeployment).spec.to_yaml_dict()
    data.update(readiness_probe=dict(FAST_PROBE), liveness_probe=dict(FAST_PROBE))
    data.update(changes)
    return data


async def eventually(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Wait until ``check()`` returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@asynccontextmanager
async def supervising(tmp_path: Path, **kwargs: Any) -> AsyncIterator[tuple[Store, Supervisor]]:
    """A store with endpoint ``ep`` and a running supervisor; stops both, and checks no replica is left."""
    store = Store.open(url=f"sqlite:///{tmp_path}/t.db", home=tmp_path)
    store.create_endpoint("online", "ep", {"name": "ep"})
    supervisor = Supervisor(store, tmp_path / "home", poll_interval=0.2, **kwargs)
    pids: set[int] = set()
    try:
        await supervisor.start()
        yield store, supervisor
    finally:
        pids |= {r.pid for r in supervisor.replicas() if r.pid}
        await supervisor.stop()
        store.close()
    assert all(gone(pid) for pid in pids)


def state_is(store: Store, state: str, deployment: str = "blue") -> Callable[[], bool]:
    return lambda: store.get_deployment("ep", deployment).state == state


def replica_client(url: str, **kwargs: Any) -> httpx.AsyncClient:
    """A client of the replica at ``url``: ``unix:/path`` (as the supervisor starts them) or ``http://``."""
    if url.startswith("unix:"):
        transport = httpx.AsyncHTTPTransport(uds=url.removeprefix("unix:"))
        return httpx.AsyncClient(transport=transport, base_url="http://localhost", trust_env=False, **kwargs)
    return httpx.AsyncClient(base_url=url, trust_env=False, **kwargs)


async def score(url: str, **body: Any) -> httpx.Response:
    async with replica_client(url, timeout=5) as client:
        return await client.post("/score", json=body or {"data": [[1, 2]]})


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 90))


@pytest.mark.slow
def test_deployment_succeeds_replicas_score_and_stop_leaves_nothing(tmp_path: Path):
    changes: list[int] = []

    async def main() -> None:
        async with supervising(tmp_path, on_change=lambda: changes.append(1)) as (store, supervisor):
            store.put_deployment("ep", "blue", "online", spec_of("plain", instance_count=2))
            supervisor.notify()
            await eventually(state_is(store, "Succeeded"), what="Succeeded")
            assert store.get_deployment("ep", "blue").reason is None
            ready = supervisor.ready_replicas("ep", "blue")
            assert len(ready) == 2
            assert len({r.url for r in ready}) == 2  # two processes on two sockets
            for replica in ready:
                response = await score(replica.url)
                assert response.status_code == 200, response.text
                assert response.json()["sums"] == [6]
            statuses = supervisor.replicas()
            assert [(s.index, s.state, s.restarts) for s in statuses] == [(0, "ready", 0), (1, "ready", 0)]
            assert changes  # the routing-table builder heard of them
            log = paths.replica_log_path(tmp_path / "home", "ep", "blue", 0).read_text()
            assert f"--- replica 0 starting (generation 1, pid {statuses[0].pid})" in log
            spec_file = paths.deployment_dir(tmp_path / "home", "ep", "blue") / "deployment-1.yml"
            assert spec_file.exists()
            pids = [s.pid for s in statuses]
            await supervisor.stop()
            assert all(pid is not None and gone(pid) and group_gone(pid) for pid in pids)
            assert supervisor.ready_replicas("ep", "blue") == ()
            assert supervisor.replicas() == []

    run(main)


@pytest.mark.slow
def test_killed_replica_is_restarted_and_its_log_shows_both_starts(tmp_path: Path):
    async def main() -> None:
        async with supervising(tmp_path) as (store, supervisor):
            store.put_deployment("ep", "blue", "online", spec_of("plain"))
            supervisor.notify()
            await eventually(state_is(store, "Succeeded"), what="Succeeded")
            first = supervisor.replicas()[0]
            assert first.pid is not None
            os.kill(first.pid, signal.SIGKILL)
            # Out of routing at once (the exit is watched), back after the 1 s backoff.
            await eventually(lambda: not supervisor.ready_replicas("ep", "blue"), timeout=2, what="removal")
            again = await eventually(
                lambda: [r for r in supervisor.replicas() if r.state == "ready" and r.pid != first.pid],
                what="restart",
            )
            assert again[0].restarts == 1
            assert again[0].last_error == "killed by signal SIGKILL"
            response = await score(supervisor.ready_replicas("ep", "blue")[0].url)
            assert response.json()["sums"] == [6]
            log = again[0].log_path.read_text()
            assert log.count("--- replica 0 starting") == 2
            assert f"pid {first.pid})" in log and f"pid {again[0].pid})" in log
            assert store.get_deployment("ep", "blue").state == "Succeeded"

    run(main)


@pytest.mark.slow
def test_init_failure_marks_failed_stops_retrying_and_an_update_retries(tmp_path: Path):
    async def main() -> None:
        async with supervising(tmp_path) as (store, supervisor):
            store.put_deployment("ep", "blue", "online", spec_of("init_fails"))
            supervisor.notify()
            await eventually(state_is(store, "Failed"), what="Failed")
            reason = store.get_deployment("ep", "blue").reason or ""
            assert "cannot find the model file" in reason
            assert "3 times in a row" in reason
            [status] = supervisor.replicas()
            assert (status.state, status.restarts) == ("dead", 2)
            await asyncio.sleep(2.5)  # longer than the next backoff step: nothing is retried
            assert supervisor.replicas()[0].restarts == 2
            # A new spec lifts the gate.
            store.put_deployment("ep", "blue", "online", spec_of("plain"))
            supervisor.notify()
            await eventually(state_is(store, "Succeeded"), what="Succeeded after the fix")
            assert len(supervisor.ready_replicas("ep", "blue")) == 1

    run(main)


@pytest.mark.slow
def test_rolling_update_replaces_replicas_without_a_failed_request(tmp_path: Path):
    async def main() -> None:
        async with supervising(tmp_path) as (store, supervisor):
            store.put_deployment("ep", "blue", "online", spec_of("plain", instance_count=2))
            supervisor.notify()
            await eventually(state_is(store, "Succeeded"), what="Succeeded")
            old_pids = {r.pid for r in supervisor.replicas()}
            results = {"ok": 0, "failed": []}
            done = asyncio.Event()

            async def hammer() -> None:
                # One connection per request, as a replica may stop between two of them.
                while not done.is_set():
                    ready = supervisor.ready_replicas("ep", "blue")
                    if not ready:
                        results["failed"].append("no ready replica")
                        await asyncio.sleep(0.01)
                        continue
                    url = random.choice(ready).url
                    try:
                        response = await score(url)
                        if response.status_code == 200 and response.json()["sums"] == [6]:
                            results["ok"] += 1
                        else:
                            results["failed"].append(f"{url}: {response.status_code} {response.text}")
                    except httpx.HTTPError as exc:
                        results["failed"].append(f"{url}: {exc!r}")

            clients = [asyncio.create_task(hammer()) for _ in range(4)]
            try:
                await asyncio.sleep(0.3)
                env = {"GREETING": "bonjour"}
                update = store.put_deployment(
                    "ep", "blue", "online", spec_of("plain", instance_count=2, environment_variables=env)
                )
                supervisor.notify()
                await eventually(lambda: all(gone(pid) for pid in old_pids), what="old replicas to stop")
                await eventually(state_is(store, "Succeeded"), what="Succeeded after the update")
                await asyncio.sleep(0.3)
            finally:
                done.set()
                await asyncio.gather(*clients)
            assert results["failed"] == []
            assert results["ok"] > 50
            statuses = supervisor.replicas()
            assert len(statuses) == 2 and {s.pid for s in statuses}.isdisjoint(old_pids)
            assert all(s.state == "ready" and s.generation == update.generation for s in statuses)
            for replica in supervisor.ready_replicas("ep", "blue"):
                answer = await score(replica.url, echo_env=["GREETING"])
                assert answer.json() == {"GREETING": "bonjour"}

    run(main)


@pytest.mark.slow
def test_scale_down_keeps_a_replica_and_delete_stops_all(tmp_path: Path):
    async def main() -> None:
        async with supervising(tmp_path) as (store, supervisor):
            store.put_deployment("ep", "blue", "online", spec_of("plain", instance_count=2))
            supervisor.notify()
            await eventually(lambda: len(supervisor.ready_replicas("ep", "blue")) == 2, what="two replicas")
            before = {r.index: r.pid for r in supervisor.replicas()}
            # A scale change is not a new template: replica 0 keeps running, replica 1 goes.
            store.put_deployment("ep", "blue", "online", spec_of("plain", instance_count=1))
            supervisor.notify()
            await eventually(lambda: len(supervisor.replicas()) == 1, what="scale down")
            assert supervisor.replicas()[0].pid == before[0]
            assert gone(before[1])
            await eventually(state_is(store, "Succeeded"), what="Succeeded")
            store.delete_deployment("ep", "blue")
            supervisor.notify()
            await eventually(lambda: supervisor.replicas() == [], what="delete")
            assert gone(before[0])
            assert not list(paths.deployment_dir(tmp_path / "home", "ep", "blue").glob("*.yml"))

    run(main)


@pytest.mark.slow
def test_only_deployments_this_node_owns_run_here_and_one_taken_away_is_stopped(tmp_path: Path):
    """With several servers on one store, ``owned()`` names this node's deployments (tiffin.node)."""
    mine: set[tuple[str, str]] = set()

    async def main() -> None:
        async with supervising(tmp_path, owned=lambda: set(mine)) as (store, supervisor):
            store.put_deployment("ep", "blue", "online", spec_of("plain"))
            supervisor.notify()
            await asyncio.sleep(1.0)  # five passes
            assert supervisor.replicas() == []  # another node's
            mine.add(("ep", "blue"))
            supervisor.notify()
            await eventually(lambda: len(supervisor.ready_replicas("ep", "blue")) == 1, what="a replica here")
            pid = supervisor.replicas()[0].pid
            mine.clear()  # another node took it (this one's heartbeat stalled)
            supervisor.notify()
            await eventually(lambda: supervisor.replicas() == [], what="its replica stopped")
            assert gone(pid)
            assert store.get_deployment("ep", "blue").state == "Succeeded"  # the store is the new owner's to tell

    run(main)


@pytest.mark.slow
def test_unready_replica_leaves_routing_and_a_dead_one_is_restarted_by_liveness(tmp_path: Path):
    probes = {
        "readiness_probe": {"initial_delay": 1, "period": 1, "timeout": 1, "failure_threshold": 2},
        "liveness_probe": {"initial_delay": 1, "period": 1, "timeout": 1, "failure_threshold": 6},
    }

    async def main() -> None:
        async with supervising(tmp_path) as (store, supervisor):
            store.put_deployment("ep", "blue", "online", spec_of("plain", **probes))
            supervisor.notify()
            await eventually(state_is(store, "Succeeded"), what="Succeeded")
            pid = supervisor.replicas()[0].pid
            assert pid is not None
            os.killpg(pid, signal.SIGSTOP)  # alive but not answering: probes time out
            try:
                unready = await eventually(
                    lambda: [r for r in supervisor.replicas() if r.state == "unready"], timeout=10, what="unready"
                )
                assert unready[0].pid == pid  # out of routing, not restarted (yet)
                assert supervisor.ready_replicas("ep", "blue") == ()
                assert "readiness probe failed 2 times" in (unready[0].last_error or "")
                restarted = await eventually(
                    lambda: [r for r in supervisor.replicas() if r.state == "ready" and r.pid != pid],
                    timeout=20,
                    what="liveness restart",
                )
            finally:
                if not gone(pid):
                    os.killpg(pid, signal.SIGCONT)
            assert restarted[0].restarts == 1
            assert gone(pid)
            assert len(supervisor.ready_replicas("ep", "blue")) == 1

    run(main)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="orphan detection reads /proc (Linux)")
def test_replicas_left_behind_by_a_dead_supervisor_are_stopped(tmp_path: Path, store: Store):
    # A "replica" that is not our child (its parent exits at once), as after a supervisor crash.
    command = [sys.executable, "-c", "import time; time.sleep(60)", "replica", "serve"]
    launcher = (
        "import subprocess, sys; "
        f"p = subprocess.Popen({command!r}, start_new_session=True, "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)"
    )
    launched = subprocess.run([sys.executable, "-c", launcher], capture_output=True, text=True, check=True)
    orphan = int(launched.stdout)
    dead_supervisor = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    folder = paths.deployment_dir(tmp_path / "home", "ep", "blue")
    folder.mkdir(parents=True)
    pidfile = folder / "replica-0.pid"
    owner = int(dead_supervisor.stdout)
    pidfile.write_text(json.dumps({"pid": orphan, "supervisor": owner, "command": command}))
    # And one whose supervisor is alive (this test process): not touched.
    (folder / "replica-1.pid").write_text(json.dumps({"pid": orphan, "supervisor": os.getpid(), "command": command}))

    async def main() -> None:
        supervisor = Supervisor(store, tmp_path / "home")
        await supervisor.start()
        try:
            await eventually(lambda: not pidfile.exists(), timeout=15, what="the orphan to be stopped")
        finally:
            await supervisor.stop()

    try:
        run(main)
        assert not Path(f"/proc/{orphan}").exists() or "Z" in Path(f"/proc/{orphan}/stat").read_text().split()[2]
        assert (folder / "replica-1.pid").exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(orphan, signal.SIGKILL)
