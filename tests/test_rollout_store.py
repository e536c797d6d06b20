"""The store's rollout rows: one active rollout per endpoint, compare-and-set writes (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest

from tiffin.errors import ConflictError, NotFoundError


def test_one_active_rollout_per_endpoint_and_compare_and_set(store):
    store.create_endpoint("online", "ep", {})
    with pytest.raises(NotFoundError, match="no rollout"):
        store.get_rollout("ep")
    first = store.start_rollout("ep", {"to": "green"}, "Running", {"step": 0})
    assert first.active and first.generation == 1
    with pytest.raises(ConflictError, match="in progress"):
        store.start_rollout("ep", {"to": "green"}, "Running", {})
    moved = store.write_rollout("ep", first.generation, state={"step": 1})
    assert moved is not None and moved.state == {"step": 1} and moved.status == "Running"
    # A writer that read the row before that write loses: it must read again and decide again.
    assert store.write_rollout("ep", first.generation, status="Paused") is None
    done = store.write_rollout("ep", moved.generation, status="Succeeded")
    assert done is not None and not done.active
    again = store.start_rollout("ep", {"to": "blue"}, "Mirroring", {})  # a finished one is replaced
    assert again.spec == {"to": "blue"} and again.generation == done.generation + 1
    assert [r.endpoint_name for r in store.list_rollouts()] == ["ep"]


def test_a_rollout_needs_an_online_endpoint(store):
    store.create_endpoint("batch", "scorer", {})
    with pytest.raises(NotFoundError):
        store.start_rollout("scorer", {"to": "x"}, "Running", {})
    with pytest.raises(NotFoundError):
        store.start_rollout("nope", {"to": "x"}, "Running", {})


def test_one_driver_drives_a_rollout_and_another_takes_over_when_its_lease_runs_out(store, tmp_path):
    asyncio.run(_two_drivers(store, tmp_path))


async def _two_drivers(store, tmp_path) -> None:

    from tiffin.gateway import Gateway
    from tiffin.rollout.driver import RolloutDriver

    store.create_endpoint("online", "ep", {})
    for name in ("blue", "green"):
        store.put_deployment("ep", name, "online", {})
    store.set_traffic("ep", {"blue": 100}, kind="online")
    spec = {"to": "green", "steps": [50, 100], "step_interval_s": 0.2, "max_error_rate": 0.01, "max_p99_ratio": 1.5,
            "min_requests": 10, "mirror": 0, "mirror_duration_s": 1, "tolerance": 1e-6}  # fmt: skip
    before = {"traffic": {"blue": 100}, "mirror_traffic": {}}
    store.start_rollout("ep", spec, "Running", {"before": before, "step": 0, "history": []})
    changes: list[tuple[str, str, dict]] = []

    def driver(node: str) -> RolloutDriver:
        async def set_traffic(endpoint: str, body: dict) -> None:  # the store's write, as the control plane's
            changes.append((node, endpoint, body))
            store.set_traffic(endpoint, body["traffic"], kind="online")

        return RolloutDriver(store, tmp_path, Gateway(), node, set_traffic, tick_s=0.05, lease_s=1.0)

    a, b = driver("a"), driver("b")
    await a.start()
    await b.start()
    try:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if changes:
                break
        await asyncio.sleep(0.5)  # both drivers have had several rounds
        assert len(changes) == 1, changes  # the step's traffic was set once, by one of them
        first, _, body = changes[0]
        assert body == {"traffic": {"blue": 50, "green": 50}}
        assert store.get_rollout("ep").state["owner"] == first
        # No requests reach green here: the rollout holds, and its driver keeps its lease all along.
        await asyncio.sleep(1.5)
        assert store.get_rollout("ep").state["owner"] == first
        await (a if first == "a" else b).stop()  # that server goes away; its lease runs out
        other = "b" if first == "a" else "a"
        for _ in range(100):
            await asyncio.sleep(0.05)
            if store.get_rollout("ep").state["owner"] == other:
                break
        assert store.get_rollout("ep").state["owner"] == other
        assert len(changes) == 1, changes  # taking over does not set the traffic again
    finally:
        await a.stop()
        await b.stop()
