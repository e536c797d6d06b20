"""The rollout driver: an asyncio task of ``tiffin serve`` that moves each active rollout along.

Everything a rollout is lives in its store row (:mod:`tiffin.store.rollouts`), so a restarted server picks its
rollouts up where they were (the step being judged starts its window again: the gateway's counters are this
process's). Every write is a compare-and-set on the row's generation and carries a lease (``owner``,
``lease_until``): with several servers on one store, one drives a rollout and another takes over only once the
lease has run out. Traffic is set through the control plane's own path (:meth:`ControlPlane.set_traffic`,
then the routing rebuild), so Azure's traffic rules and the TrafficChanged events apply as for a user's change.

Only the API changes a rollout's status from outside (pause, resume, abort); the driver does every traffic
change, including the ones an abort or a failed guard asks for (``Aborting``, ``RollingBack``), so the two
never race on the endpoint's traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from tiffin.errors import TiffinError
from tiffin.gateway.app import Gateway
from tiffin.rollout.agreement import AgreementCheck
from tiffin.rollout.plan import ADVANCE, HOLD, ROLL_BACK, Guards, Reading, decide, step_traffic
from tiffin.store import Store
from tiffin.store.rollouts import RolloutRecord
from tiffin.supervisor.logfiles import record_event
from tiffin.telemetry.meters import ensure_meters, percentile_ms

__all__ = ["RolloutDriver", "control_traffic"]

logger = logging.getLogger("tiffin.rollout")

SetTraffic = Callable[[str, dict[str, Any]], Awaitable[None]]
_REPORT_EVERY_S = 2.0


class RolloutDriver:
    """Drives this store's rollouts from one server (``node_id``), judging them by ``gateway``'s counters."""

    def __init__(
        self,
        store: Store,
        home: Path,
        gateway: Gateway,
        node_id: str,
        set_traffic: SetTraffic,
        *,
        tick_s: float = 0.5,
        lease_s: float = 15.0,
    ) -> None:
        self.store, self.home, self.gateway, self.node_id = store, home, gateway, node_id
        self.set_traffic = set_traffic
        self.tick_s, self.lease_s = tick_s, lease_s
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        # The judged step's window, per endpoint: (step key, perf_counter at its start, counters then).
        self._windows: dict[str, tuple[tuple[Any, ...], float, dict[str, tuple[int, int]]]] = {}
        self._reported: dict[str, float] = {}
        self.idle_s = 30.0
        """How long to wait between looks at the store while no rollout is active: a rollout started through this
        server's API wakes the driver at once; the server shortens it while other servers share the store."""

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tiffin-rollouts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        """Look at the rollouts now (a rollout was started, paused, resumed or aborted through the API)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            active = True  # after a failed round, look again soon
            try:
                records = await asyncio.to_thread(self.store.list_rollouts)
                active = any(record.active for record in records)
                for record in records:
                    if record.active and self._mine(record):
                        await self._drive(record)
            except asyncio.CancelledError:
                raise
            except Exception:  # a store hiccup must not end the driver: the next tick tries again
                logger.exception("the rollout driver failed a round; trying again")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                # Idle (no rollout anywhere), the store is not read twice a second for nothing.
                await asyncio.wait_for(self._wake.wait(), self.tick_s if active else max(self.tick_s, self.idle_s))

    def _mine(self, record: RolloutRecord) -> bool:
        owner = record.state.get("owner")
        return owner in (None, self.node_id) or float(record.state.get("lease_until", 0)) < time.time()

    async def _write(self, record: RolloutRecord, status: str | None = None, **changes: Any) -> RolloutRecord | None:
        state = {**record.state, **changes, "owner": self.node_id, "lease_until": time.time() + self.lease_s}
        return await asyncio.to_thread(
            self.store.write_rollout, record.endpoint_name, record.generation, status=status, state=state
        )

    def _event(self, record: RolloutRecord, name: str, message: str) -> None:
        record_event(self.home, record.endpoint_name, record.spec["to"], name, message)

    async def _drive(self, record: RolloutRecord) -> None:
        lease_left = float(record.state.get("lease_until", 0)) - time.time()
        if record.state.get("owner") != self.node_id or lease_left < self.lease_s / 2:
            # Take the rollout (first drive, or a lease run out) or keep it: a compare-and-set, so of two
            # servers taking it at once one wins; the other sees a new owner with a fresh lease next round.
            taken = await self._write(record)
            if taken is None:
                return
            record = taken
        if record.status == "Paused":
            return
        if record.status in ("Aborting", "RollingBack"):
            await self._restore(record)
        elif record.status == "Mirroring":
            await self._mirror(record)
        else:
            await self._step(record)

    async def _restore(self, record: RolloutRecord) -> None:
        """Put the traffic back as it was before the rollout; then Aborted or RolledBack."""
        before = record.state["before"]
        endpoint = record.endpoint_name
        extra = self._agreement_state(endpoint)  # the mirror phase's last count, before the check ends
        self.gateway.check_agreement(endpoint, None)
        try:
            await self.set_traffic(endpoint, {"traffic": before["traffic"], "mirror_traffic": before["mirror_traffic"]})
        except TiffinError as exc:  # e.g. a deployment of the old split was deleted meanwhile
            logger.warning("rollout of '%s' could not restore the traffic: %s", endpoint, exc.message)
        final = "Aborted" if record.status == "Aborting" else "RolledBack"
        if await self._write(record, final, **extra) is not None:
            self._windows.pop(endpoint, None)
            self._event(record, final, record.state.get("reason") or final)

    def _agreement_state(self, endpoint: str) -> dict[str, Any]:
        check = self.gateway.agreement_reports.get(endpoint)
        return {"agreement": check.report()} if check is not None and self._checking(endpoint) else {}

    def _checking(self, endpoint: str) -> bool:
        return bool(self.gateway.agreement and endpoint in self.gateway.agreement)

    async def _mirror(self, record: RolloutRecord) -> None:
        spec, state, endpoint = record.spec, record.state, record.endpoint_name
        to = spec["to"]
        if not self._checking(endpoint):  # the phase starts (or resumes after a restart: a new count)
            before = state["before"]
            mirror = {**{name: 0 for name in before["mirror_traffic"]}, to: spec["mirror"]}
            try:
                await self.set_traffic(endpoint, {"mirror_traffic": mirror})
            except TiffinError as exc:
                await self._write(record, "RollingBack", reason=f"could not mirror traffic: {exc.message}")
                return
            self.gateway.check_agreement(endpoint, AgreementCheck(to, float(spec.get("tolerance", 1e-6))))
            if "mirror_until" not in state:
                record = await self._write(record, mirror_until=time.time() + spec["mirror_duration_s"]) or record
                self._event(record, "RolloutMirroring", f"mirroring {spec['mirror']}% of the traffic to '{to}'")
        report = self.gateway.agreement_reports[endpoint].report()
        if time.time() >= float(record.state.get("mirror_until", 0)):
            before = record.state["before"]
            try:
                await self.set_traffic(endpoint, {"mirror_traffic": before["mirror_traffic"]})
            except TiffinError as exc:
                logger.warning("rollout of '%s' could not end mirroring: %s", endpoint, exc.message)
            written = await self._write(record, "Running", agreement=report, step=0, applied=-1)
            self.gateway.check_agreement(endpoint, None)
            if written is not None:
                self._event(
                    record,
                    "RolloutAgreement",
                    f"{report['equal']} of {report['compared']} mirrored answers equal; {report['differing']} differ",
                )
        elif time.monotonic() - self._reported.get(endpoint, 0.0) >= _REPORT_EVERY_S:
            self._reported[endpoint] = time.monotonic()
            await self._write(record, agreement=report)

    async def _step(self, record: RolloutRecord) -> None:
        spec, state, endpoint = record.spec, record.state, record.endpoint_name
        steps: list[int] = spec["steps"]
        index = int(state.get("step", 0))
        percent = steps[index]
        to = spec["to"]
        before: dict[str, int] = state["before"]["traffic"]
        if state.get("applied") != index:
            written = await self._write(record, applied=index, step_started=time.time(), reason=None)
            if written is None:
                return
            try:
                await self.set_traffic(endpoint, {"traffic": step_traffic(before, to, percent)})
            except TiffinError as exc:
                await self._write(written, "RollingBack", reason=f"could not set traffic: {exc.message}")
                return
            self._event(written, "RolloutStep", f"step {index + 1} of {len(steps)}: {percent}% to '{to}'")
            if percent == 100 and await self._write(written, "Succeeded") is not None:
                self._event(written, "RolloutSucceeded", f"'{to}' takes all the traffic")
            return
        currents = [name for name, share in before.items() if name != to and share > 0]
        key = (index, state.get("step_started"), state.get("resumed_at"))
        window = self._windows.get(endpoint)
        if window is None or window[0] != key:  # a new step, a resume, or a restart: judge from now
            # The step's traffic again if the endpoint does not have it (a server stopped between writing the
            # step and setting its traffic; a hand-made change during the rollout).
            wanted = step_traffic(before, to, percent)
            try:
                found = await asyncio.to_thread(self.store.get_endpoint, endpoint, "online")
                if {k: v for k, v in found.traffic.items() if v} != {k: v for k, v in wanted.items() if v}:
                    await self.set_traffic(endpoint, {"traffic": wanted})
            except TiffinError as exc:  # the endpoint or a deployment was deleted meanwhile
                await self._write(record, "RollingBack", reason=f"could not set traffic: {exc.message}")
                return
            window = self._windows[endpoint] = (key, time.perf_counter(), self._counts(endpoint, [to, *currents]))
            return
        _, began, counts = window
        new = self._reading(endpoint, [to], began, counts)
        current = self._reading(endpoint, currents, began, counts)
        guards = Guards(spec["max_error_rate"], spec["max_p99_ratio"], spec["min_requests"])
        decision = decide(new, current, guards, time.perf_counter() - began >= spec["step_interval_s"])
        readings = {
            "new": _as_dict(new),
            "current": _as_dict(current),
            "step_seconds": round(time.perf_counter() - began, 3),
        }
        if decision.action == ROLL_BACK:
            reason = f"step {index + 1} ({percent}% to '{to}'): {decision.reason}"
            await self._write(record, "RollingBack", reason=reason, readings=readings)
            logger.warning("rollout of '%s' rolls back: %s", endpoint, reason)
        elif decision.action == ADVANCE:
            history = [*state.get("history", []), {"step": index + 1, "percent": percent, **readings}]
            await self._write(record, step=index + 1, readings=readings, reason=decision.reason, history=history)
        elif decision.action == HOLD and state.get("reason") != decision.reason:
            await self._write(record, reason=decision.reason, readings=readings)
        elif time.monotonic() - self._reported.get(endpoint, 0.0) >= _REPORT_EVERY_S:
            self._reported[endpoint] = time.monotonic()
            await self._write(record, readings=readings)

    def _counts(self, endpoint: str, names: Iterable[str]) -> dict[str, tuple[int, int]]:
        """(requests, errors) each deployment answered so far; errors are 5xx, the gateway's own included."""
        counts = {}
        meters = ensure_meters(self.gateway)  # on with TIFFIN_METRICS=0 too: the P99 guard reads their latencies
        for name in names:
            statuses = meters.get(endpoint, name).statuses
            counts[name] = (sum(statuses.values()), sum(n for s, n in statuses.items() if s >= 500))
        return counts

    def _reading(self, endpoint: str, names: list[str], began: float, start: dict[str, tuple[int, int]]) -> Reading:
        now = self._counts(endpoint, names)
        requests = sum(now[n][0] - start.get(n, (0, 0))[0] for n in names)
        errors = sum(now[n][1] - start.get(n, (0, 0))[1] for n in names)
        meters = ensure_meters(self.gateway)
        latencies = [s for name in names for t, s in meters.get(endpoint, name).recent if t >= began]
        return Reading(requests, errors, percentile_ms(sorted(latencies), 0.99))


def _as_dict(reading: Reading) -> dict[str, Any]:
    return {
        "requests": reading.requests,
        "errors": reading.errors,
        "error_rate": round(reading.error_rate, 6),
        "p99_ms": reading.p99_ms,
    }


def control_traffic(store: Store, home: Path, public_url: str, on_change: Callable[[], Awaitable[None]]) -> SetTraffic:
    """Set an endpoint's traffic as the REST API does (the control plane's checks, events), then rebuild routing."""
    from tiffin.api.control import ControlPlane

    control = ControlPlane(store, public_url=public_url, home=home)

    async def set_traffic(endpoint: str, body: dict[str, Any]) -> None:
        await asyncio.to_thread(control.set_traffic, endpoint, body)
        await on_change()

    return set_traffic
