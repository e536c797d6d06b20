"""The autoscaler of ``tiffin serve``: samples every second, decides per polling interval, tells the supervisor.

For every deployment the supervisor runs whose ``scale_settings`` are ``target_utilization`` or
``target_concurrency``, or that an Azure Monitor autoscale setting targets (``tiffin monitor autoscale``,
:mod:`.monitor`), it samples requests in flight (the gateway's admission: their average over the second, so
short requests between samples count too) and CPU per ready replica (/proc) each second, and every
``polling_interval`` asks the policy (:mod:`.policy`) for a count. For a Monitor setting it also samples what
its rules name: the memory of each ready replica, and the gateway's request meter of the deployment (requests
answered and their latency, :mod:`.requests`), so every metric of :data:`tiffin.autoscale.monitor.METRICS` is
measured. A change goes to :meth:`tiffin.supervisor.Supervisor.scale` and to the deployment's event log as
``Scaled`` with its reason. The supervisor starts new replicas (they join routing once ready) and retires others
(out of routing, drained).

The user's ``instance_count`` stays as written: it is the count a deployment starts with and the one an
update goes back to, until the next decision. ``show`` reports the count kept now as ``current_instances``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError

from tiffin.specs.common import (
    ScaleSettings,
    TargetConcurrencyScaleSettings,
    TargetUtilizationScaleSettings,
)
from tiffin.supervisor.logfiles import record_event

from .monitor import evaluate, names_endpoint
from .policy import ConcurrencyPolicy, Decision, Readings, target_utilization
from .readings import CpuMeter, memory_percent, memory_total
from .requests import PERCENTILES, RequestSamples, latency_percentile

__all__ = ["AutoscaleEngine"]

logger = logging.getLogger("tiffin.autoscale")

_SCALE = TypeAdapter(ScaleSettings)
_KEEP_S = 3600.0  # Monitor rules average over up to an hour of samples
_MONITOR_RELOAD_S = 5.0
Key = tuple[str, str]
# What the gateway's request meter gives (the rest: /proc and the gateway's admission).
_REQUEST_METRICS = frozenset({"RequestLatency", "RequestsPerMinute", *PERCENTILES})
_MEMORY = "CpuMemoryUtilizationPercentage"


@dataclass
class _State:
    generation: int
    settings: Any  # the parsed scale_settings (or None: only a Monitor setting targets it)
    cpu: Readings = field(default_factory=lambda: Readings(_KEEP_S))
    flight: Readings = field(default_factory=lambda: Readings(_KEEP_S))
    area: tuple[float, float] | None = None  # (time, the admission's load area) at the last sample
    concurrency: ConcurrencyPolicy | None = None
    memory: Readings = field(default_factory=lambda: Readings(_KEEP_S))
    requests: RequestSamples = field(default_factory=lambda: RequestSamples(_KEEP_S))
    recent: Readings = field(default_factory=lambda: Readings(_KEEP_S))  # target_utilization's raw counts
    next_at: float = 0.0
    last_scale: datetime | None = None


class AutoscaleEngine:
    """Runs as a task of the server's event loop beside the supervisor."""

    def __init__(
        self,
        supervisor: Any,
        load_area: Callable[[str, str], float | None],
        home: Any,
        *,
        store: Any = None,
        sample_s: float = 1.0,
        request_meter: Callable[[str, str | None], Any] | None = None,
    ) -> None:
        """``load_area(endpoint, deployment)``: the deployment's requests in flight or queued at the gateway,
        integrated over time (:meth:`tiffin.gateway.limits.Admission.load_area`; None: not routed).
        ``request_meter(endpoint, deployment)``: the gateway's :class:`~tiffin.telemetry.meters.DeploymentMeter`
        of the deployment, or with ``deployment`` None the endpoint's (asked only while a Monitor rule names a
        request metric); without it those read no data."""
        self._supervisor = supervisor
        self._load_area = load_area
        self._request_meter = request_meter
        self._memory_total = memory_total()
        self._home = home
        self._store = store
        self._sample_s = sample_s
        self._cpu = CpuMeter()
        self._state: dict[Key, _State] = {}
        self._monitor: dict[Key, dict[str, Any]] = {}
        self._named: dict[Key, frozenset[str]] = {}  # the metrics each Monitor setting's rules name
        # Endpoints whose request metrics a rule names (metricResourceUri: the endpoint's id), and their samples.
        self._endpoint_samples: dict[str, tuple[Any, RequestSamples]] = {}
        self._monitor_at = -1e9
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self.idle_s = 30.0
        """With nothing to autoscale, how long to sleep between looks (the server wakes it on every change it makes,
        and shortens this while other servers share the store): an idle server does not sample every second."""

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="tiffin-autoscale")

    def wake(self) -> None:
        """Look again now, Monitor settings re-read (a deployment, its replicas or a setting changed)."""
        self._monitor_at = -1e9
        if self._wake is not None:
            self._wake.set()

    def demand(self, endpoint: str, deployment: str) -> None:
        """A request waits for a deployment with no replica (scaled to zero): sample now, not at the next second,
        so that the replica it needs starts at once."""
        state = self._state.get((endpoint, deployment))
        if state is not None:
            state.next_at = 0.0  # decide at this pass, whatever the polling interval
        if self._wake is not None:
            self._wake.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await self._load_monitor()
                self.tick(time.monotonic())
            except Exception:  # a bug here must not stop autoscaling for good, nor the server
                logger.exception("autoscale pass failed")
            self._wake.clear()
            pause = self._sample_s if self._state or self._monitor else max(self._sample_s, self.idle_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)

    async def _load_monitor(self) -> None:
        """Azure Monitor autoscale settings from the store (A2's ``list_autoscale_settings``), every few seconds."""
        lister = getattr(self._store, "list_autoscale_settings", None)
        if lister is None or time.monotonic() - self._monitor_at < _MONITOR_RELOAD_S:
            return
        self._monitor_at = time.monotonic()
        settings = await asyncio.to_thread(lister)
        by_target: dict[Key, dict[str, Any]] = {}
        for record in settings:
            if record.target_exists and record.spec.get("enabled", True) is not False:
                by_target[(record.endpoint_name, record.deployment_name)] = dict(record.spec)
        self._monitor = by_target
        self._named = {key: _metrics_named(spec) for key, spec in by_target.items()}
        wanted = {key[0] for key, spec in by_target.items() if _metrics_named(spec, endpoint=True) & _REQUEST_METRICS}
        for endpoint in [e for e in self._endpoint_samples if e not in wanted]:
            del self._endpoint_samples[endpoint]
        if self._request_meter is not None:
            for endpoint in wanted - self._endpoint_samples.keys():
                self._endpoint_samples[endpoint] = (self._request_meter(endpoint, None), RequestSamples(_KEEP_S))

    def tick(self, now: float) -> None:
        """Sample every autoscaled deployment; decide for those whose polling interval is up."""
        deployments = self._supervisor.deployments()
        for key in [k for k in self._state if k not in deployments]:
            del self._state[key]
        for meter, samples in self._endpoint_samples.values():
            samples.sample(now, meter)
        ready_pids: set[int] = set()
        statuses = self._supervisor.replicas()
        for key, (record, target) in deployments.items():
            settings = _scale_settings(record.spec)
            monitor = self._monitor.get(key)
            if settings is None and monitor is None:
                # As Azure: a deleted autoscale setting leaves the count where it was (an update resets it).
                self._state.pop(key, None)
                continue
            state = self._state.get(key)
            if state is None or state.generation != record.generation:
                state = self._state[key] = _State(record.generation, settings, next_at=now)
                if isinstance(settings, TargetConcurrencyScaleSettings):
                    state.concurrency = _concurrency_policy(settings)
            pids = [s.pid for s in statuses if (s.endpoint, s.deployment) == key and s.state == "ready" and s.pid]
            ready_pids.update(pids)
            self._sample(state, key, pids, target, now)
            if target is None or now < state.next_at:
                continue
            interval = getattr(settings, "polling_interval", 1) if settings is not None else 1
            state.next_at = now + interval
            decision = self._decide(key, state, monitor, target, now)
            if decision.desired != target:
                self._supervisor.scale(*key, record.generation, decision.desired)
                state.last_scale = datetime.now(UTC)
                message = f"{target} -> {decision.desired} instance(s): {decision.reason}"
                record_event(self._home, key[0], key[1], "Scaled", message)
                logger.info("autoscale %s/%s: %s", *key, message)
        self._cpu.forget_except(ready_pids)

    def _sample(self, state: _State, key: Key, pids: list[int], target: int | None, now: float) -> None:
        area = self._load_area(*key)
        if area is not None:
            last, state.area = state.area, (now, area)
            if last is not None and now > last[0] and area >= last[1]:  # the average load since the last sample
                state.flight.add(now, (area - last[1]) / (now - last[0]))
        percents = [p for p in (self._cpu.percent(pid, now) for pid in pids) if p is not None]
        if percents and target:
            # Per instance kept: replicas not ready yet count as idle (as Kubernetes' HPA counts them).
            state.cpu.add(now, sum(percents) / max(target, len(percents)))
        named = self._named.get(key, frozenset())
        if _MEMORY in named:
            memory = [p for p in (memory_percent(pid, self._memory_total) for pid in pids) if p is not None]
            if memory and target:
                state.memory.add(now, sum(memory) / max(target, len(memory)))  # per instance kept, as CPU
        if named & _REQUEST_METRICS and self._request_meter is not None:
            state.requests.sample(now, self._request_meter(*key))

    def _decide(self, key: Key, state: _State, monitor: dict[str, Any] | None, current: int, now: float) -> Decision:
        settings = state.settings
        if monitor is not None:
            setting = {**monitor, "lastScaleTime": state.last_scale.isoformat() if state.last_scale else None}
            if setting["lastScaleTime"] is None:
                del setting["lastScaleTime"]
            metric = self._metric(state.requests, state, now)
            on_endpoint = self._endpoint_samples.get(key[0])
            # An endpoint's metric: its requests, all deployments together; the rest as the deployment's.
            endpoint_metric = self._metric(on_endpoint[1], state, now) if on_endpoint is not None else metric
            desired, reason = evaluate(setting, metric, current, datetime.now(UTC), endpoint_metric)
            return Decision(desired, f"autoscale setting {monitor.get('name', '')}: {reason}")
        if isinstance(settings, TargetConcurrencyScaleSettings):
            assert state.concurrency is not None
            stable = state.flight.average(now, settings.stable_window)
            panic = state.flight.average(now, settings.panic_window)
            return state.concurrency.decide(now, current, stable, panic)
        assert isinstance(settings, TargetUtilizationScaleSettings)
        window = settings.polling_interval
        cpu = state.cpu.average(now, max(window, 2 * self._sample_s))
        # Scale-down stabilisation over ten polling intervals (Kubernetes: 5 minutes by default).
        recent = [int(v) for v in state.recent.values(now, 10 * window)]
        decision = target_utilization(
            current,
            cpu,
            settings.target_utilization_percentage,
            settings.min_instances,
            settings.max_instances,
            recent,
        )
        if decision.recommended is not None and cpu is not None:
            state.recent.add(now, decision.recommended)  # the raw counts: a held count must not hold itself
        return decision

    def _metric(self, requests: RequestSamples, state: _State, now: float) -> Callable[[str, str, float], float | None]:
        def metric(name: str, aggregation: str, window_s: float) -> float | None:
            if name == "RequestsPerMinute":
                return requests.per_minute(now, window_s, aggregation)
            if name == "RequestLatency":
                return requests.latency_ms(now, window_s, aggregation)
            if name in PERCENTILES:
                meter = requests.meter
                if meter is None:
                    return None
                # The meter times requests with perf_counter: its window ends at that clock's now.
                return latency_percentile(meter.recent, time.perf_counter(), window_s, PERCENTILES[name])
            readings = {"CpuUtilizationPercentage": state.cpu, "ConnectionsActive": state.flight, _MEMORY: state.memory}
            if name not in readings:
                return None
            values = readings[name].values(now, window_s)
            if not values:
                return None
            return {"avg": sum(values) / len(values), "max": max(values), "min": min(values)}.get(
                aggregation, sum(values)
            )

        return metric


def _metrics_named(setting: dict[str, Any], *, endpoint: bool = False) -> frozenset[str]:
    """The metric names of every rule of every profile of a Monitor setting (``endpoint``: of the rules on the
    endpoint's metrics only)."""
    triggers = [
        rule.get("metricTrigger") or {}
        for profile in setting.get("profiles") or []
        for rule in profile.get("rules") or []
        if isinstance(rule, dict)
    ]
    return frozenset(
        str(t.get("metricName")) for t in triggers if not endpoint or names_endpoint(t.get("metricResourceUri"))
    )


def _scale_settings(spec: dict[str, Any]) -> Any:
    """The deployment's autoscaling scale_settings, or None (default: manual, or unreadable)."""
    raw = spec.get("scale_settings")
    if not isinstance(raw, dict):
        return None
    try:
        parsed = _SCALE.validate_python(raw)
    except ValidationError:
        return None
    if isinstance(parsed, TargetUtilizationScaleSettings | TargetConcurrencyScaleSettings):
        return parsed
    return None


def _concurrency_policy(settings: TargetConcurrencyScaleSettings) -> ConcurrencyPolicy:
    return ConcurrencyPolicy(
        settings.target_concurrency_per_instance,
        settings.min_instances,
        settings.max_instances,
        stable_window_s=settings.stable_window,
        panic_window_s=settings.panic_window,
        panic_threshold_percentage=settings.panic_threshold_percentage,
        scale_up_delay_s=settings.scale_up_delay,
        scale_down_delay_s=settings.scale_down_delay,
    )
