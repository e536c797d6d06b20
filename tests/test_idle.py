"""An idle server does no work on a timer that a notification can do (issue 14, item 4).

Alone on its store, the supervisor reads the store when told (the API's ``notify()``), not every poll; with other
servers sharing the store it polls as before. Probes of ready replicas fall into shared passes, and a readiness and
a liveness probe due together are one request. What this saves is measured by ``benchmarks/bench_idle.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import eventually

from tiffin.specs import ProbeSettings
from tiffin.store import Store
from tiffin.supervisor import Supervisor
from tiffin.supervisor.health import launch_probes
from tiffin.supervisor.policy import PROBE_EARLY_FRACTION, probe_due
from tiffin.supervisor.slots import Slot


def test_a_ready_replicas_probe_may_go_a_quarter_period_early_a_starting_ones_never():
    assert probe_due(10.0, 10.0, 10.0, ready=False)
    assert not probe_due(10.0, 9.9, 10.0, ready=False)  # initial_delay is honoured in full
    assert probe_due(10.0, 10.0 - PROBE_EARLY_FRACTION * 10.0, 10.0, ready=True)
    assert not probe_due(10.0, 10.0 - PROBE_EARLY_FRACTION * 10.0 - 0.01, 10.0, ready=True)


class _Host:
    def __init__(self) -> None:
        self.spawned: list[str] = []

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        coro.close()
        self.spawned.append(name)


class _Process:
    url = "unix:/nowhere"


def _slot(index: int, state: str, readiness_at: float, liveness_at: float, liveness_timeout: int = 2) -> Slot:
    slot = Slot(
        index=index,
        template="t",
        generation=1,
        launch=cast(Any, None),
        readiness_probe=ProbeSettings(period=10, timeout=2),
        liveness_probe=ProbeSettings(period=10, timeout=liveness_timeout),
    )
    slot.state = cast(Any, state)
    slot.process = cast(Any, _Process())
    slot.next_readiness_at, slot.next_liveness_at = readiness_at, liveness_at
    return slot


def test_probes_due_together_are_one_request_and_ready_replicas_join_the_pass():
    host = _Host()
    now = 100.0
    slots = [
        _slot(0, "ready", now, now),  # both due: one request
        _slot(1, "ready", now + 2, now + 9),  # readiness soon: goes with this pass, liveness does not
        _slot(2, "starting", now + 2, now + 2),  # not ready yet: on time only
        _slot(3, "ready", now, now, liveness_timeout=5),  # other timeouts: two requests
    ]
    launch_probes(cast(Any, host), "ep/blue", slots, now)
    assert host.spawned == [
        "readiness+liveness ep/blue#0",
        "readiness ep/blue#1",
        "readiness ep/blue#3",
        "liveness ep/blue#3",
    ]
    # Once in the same pass, they stay together: each is next due a period from now.
    assert slots[0].next_readiness_at == slots[1].next_readiness_at == now + 10
    assert slots[2].next_readiness_at == now + 2
    assert slots[0].probing == {"readiness", "liveness"}


def _failed(store: Store, name: str) -> Callable[[], bool]:
    return lambda: store.get_deployment("ep", name).state == "Failed"


@pytest.mark.parametrize("alone", [True, False])
def test_alone_the_supervisor_reads_the_store_when_notified_with_others_it_polls(tmp_path: Path, alone: bool):
    # An invalid spec is failed by the supervisor's first pass over it, without starting any process: whether it
    # is Failed says whether the supervisor has read it.
    async def main() -> None:
        with Store.open(url=f"sqlite:///{tmp_path}/t.db", home=tmp_path) as store:
            store.create_endpoint("online", "ep", {"name": "ep"})
            store.put_deployment("ep", "first", "online", {"name": "first", "instance_count": 0})
            supervisor = Supervisor(
                store, tmp_path / "home", poll_interval=0.1, idle_poll_interval=3600, alone=lambda: alone
            )
            await supervisor.start()
            try:
                await _wait(_failed(store, "first"))  # the first pass reads the store
                store.put_deployment("ep", "second", "online", {"name": "second", "instance_count": 0})
                if alone:
                    await asyncio.sleep(1.0)  # ten short polls' worth: none of them reads the store
                    assert not _failed(store, "second")()
                    supervisor.notify()  # what the API does after a write
                await _wait(_failed(store, "second"))
            finally:
                await supervisor.stop()

    asyncio.run(asyncio.wait_for(main(), 60))


async def _wait(check: Callable[[], bool]) -> None:
    await asyncio.to_thread(eventually, check, 30.0)
