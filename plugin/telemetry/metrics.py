"""``/metrics``: Azure's online-endpoint metrics (and batch, mirror, replica ones) in Prometheus text format.

Everything is read at scrape time by one custom collector in a registry of tiffin's own (BentoML, imported
in-process, fills prometheus-client's global one): the gateway's meters (:mod:`tiffin.telemetry.meters`),
its admission slots and routing table, the public port's connection counts, the supervisor's replica pids
(``/proc``: CPU and memory) and the store's batch jobs. Label values are endpoint and deployment names,
replica numbers, states and status codes only: never keys, tokens, paths or bodies. docs/observability.md
maps each name to Azure's.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from tiffin.procfs import memory_total, process_stat, rss_bytes, uptime
from tiffin.telemetry.meters import LATENCY_BUCKETS_S, DeploymentMeter

if TYPE_CHECKING:
    from tiffin.connection_limits import ConnectionGuard
    from tiffin.gateway import Gateway
    from tiffin.store import Store

__all__ = ["CONTENT_TYPE", "BatchSnapshot", "ReplicaSample", "TiffinCollector", "batch_snapshot", "read_replicas"]

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_DEP = ["endpoint", "deployment"]


@dataclass(frozen=True)
class ReplicaSample:
    """One replica process as read from ``/proc`` at scrape time."""

    endpoint: str
    deployment: str
    index: int
    cpu_seconds: float
    cpu_percent: float
    rss_bytes: int


@dataclass
class BatchSnapshot:
    """Batch jobs by (endpoint, deployment, state), mini-batches done/failed, rows/s of running jobs."""

    jobs: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    mini_batches: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    rows_per_s: dict[tuple[str, str], float] = field(default_factory=dict)


def batch_snapshot(store: Store) -> BatchSnapshot:
    """Read the store's jobs (blocking: run it in a worker thread)."""
    snap = BatchSnapshot()
    now = time.time()
    for job in store.list_jobs():
        key = (job.endpoint_name, job.deployment_name or "")
        snap.jobs[(*key, job.status)] += 1
        if job.status == "Running":
            batches = store.mini_batches(job.name)
            done = [b for b in batches if b.status == "done"]
            snap.mini_batches[(*key, "done")] += len(done)
            snap.mini_batches[(*key, "failed")] += sum(1 for b in batches if b.status == "failed")
            if job.started_at is not None:
                elapsed = now - job.started_at.timestamp()
                rows = sum(b.rows or 0 for b in done)
                if elapsed > 0:
                    snap.rows_per_s[key] = snap.rows_per_s.get(key, 0.0) + rows / elapsed
        elif job.progress:
            snap.mini_batches[(*key, "done")] += int(job.progress.get("mini_batches_completed", 0))
            snap.mini_batches[(*key, "failed")] += int(job.progress.get("mini_batches_failed", 0))
    return snap


class _CpuClock:
    """CPU % of each replica pid between two scrapes (since the process started on its first)."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, float]] = {}

    def sample(self, pid: int, cpu_s: float, started_s: float, now: float) -> float:
        before = self._last.get(pid)
        self._last[pid] = (cpu_s, now)
        if before is None:
            used, span = cpu_s, now - started_s
        else:
            used, span = cpu_s - before[0], now - before[1]
        return round(100.0 * used / span, 2) if span > 0 else 0.0

    def keep(self, pids: Iterable[int]) -> None:
        alive = set(pids)
        for pid in [p for p in self._last if p not in alive]:
            del self._last[pid]


def read_replicas(replicas: Sequence[tuple[str, str, int, int]], clock: _CpuClock) -> list[ReplicaSample]:
    """CPU and memory of each (endpoint, deployment, index, pid) from ``/proc`` (a replica gone meanwhile is
    skipped). Read-only: the supervisor's own view is not touched."""
    samples: list[ReplicaSample] = []
    now = uptime()
    if now is None:  # no /proc (not Linux): no replica metrics
        return samples
    for endpoint, deployment, index, pid in replicas:
        stat, rss = process_stat(pid), rss_bytes(pid)
        if stat is None or rss is None:
            continue
        percent = clock.sample(pid, stat.cpu_s, stat.started_s, now)
        samples.append(ReplicaSample(endpoint, deployment, index, stat.cpu_s, percent, rss))
    clock.keep(pid for *_, pid in replicas)
    return samples


def _histogram(name: str, doc: str, meters: Iterable[DeploymentMeter], which: str) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=_DEP)
    for m in meters:
        counts: list[int] = getattr(m, which)
        total_sum: float = getattr(m, which + "_sum")
        running, buckets = 0, []
        for bound, count in zip([*map(str, LATENCY_BUCKETS_S), "+Inf"], counts, strict=True):
            running += count
            buckets.append((bound, running))
        family.add_metric([m.endpoint, m.deployment], buckets, total_sum)
    return family


class TiffinCollector(Collector):
    """Builds every tiffin metric from live objects when Prometheus scrapes (see :meth:`prepare`)."""

    def __init__(self, gateway: Gateway, guard: ConnectionGuard | None = None) -> None:
        self.gateway = gateway
        self.guard = guard
        self.replicas: list[ReplicaSample] = []
        self.batch = BatchSnapshot()
        self.clock = _CpuClock()
        self.memory_total = memory_total()

    def prepare(self, replicas: list[ReplicaSample], batch: BatchSnapshot) -> None:
        """What was read off the event loop (``/proc`` and the store) for the next collect."""
        self.replicas, self.batch = replicas, batch

    def collect(self) -> Iterator[Metric]:
        meters = self.gateway.meters
        if meters is None:
            return
        all_meters = list(meters.by_key.values())
        deployments = [m for m in all_meters if m.deployment]

        requests = CounterMetricFamily(
            "tiffin_requests",
            "Requests answered, by status code and class (Azure RequestsPerMinute: rate x 60). "
            "deployment is empty for requests refused before one was chosen (401, 413...).",
            labels=[*_DEP, "status_code", "status_class"],
        )
        timeouts = CounterMetricFamily("tiffin_request_timeouts", "Requests answered 408.", labels=_DEP)
        throttled = CounterMetricFamily("tiffin_requests_throttled", "Requests answered 429.", labels=_DEP)
        for m in all_meters:
            for status, count in sorted(m.statuses.items()):
                requests.add_metric([m.endpoint, m.deployment, str(status), f"{status // 100}xx"], count)
            timeouts.add_metric([m.endpoint, m.deployment], m.statuses.get(408, 0))
            throttled.add_metric([m.endpoint, m.deployment], m.statuses.get(429, 0))
        yield requests
        yield timeouts
        yield throttled
        unknown = CounterMetricFamily(
            "tiffin_unknown_endpoint_requests", "Requests to an endpoint name that does not exist (404)."
        )
        unknown.add_metric([], meters.unknown_endpoint)
        yield unknown
        yield _histogram(
            "tiffin_request_latency_seconds",
            "Time from the request's arrival at the gateway to its answer (Azure RequestLatency, _P50.._P99).",
            all_meters,
            "latency",
        )
        yield _histogram(
            "tiffin_request_queue_wait_seconds",
            "Time a request waited for a slot of its deployment (max_concurrent_requests_per_instance).",
            deployments,
            "queue",
        )
        network = CounterMetricFamily(
            "tiffin_network_bytes", "Request and response body bytes (Azure NetworkBytes).", labels=[*_DEP, "direction"]
        )
        for m in all_meters:
            network.add_metric([m.endpoint, m.deployment, "in"], m.bytes_in)
            network.add_metric([m.endpoint, m.deployment, "out"], m.bytes_out)
        yield network
        yield from self._capacity()
        yield from self._connections()
        yield from self._mirrors(deployments)
        yield from self._replicas()
        yield from self._batch()

    def _capacity(self) -> Iterator[Metric]:
        capacity = GaugeMetricFamily(
            "tiffin_deployment_capacity",
            "Requests a deployment takes at once: ready instances x max_concurrent_requests_per_instance "
            "(Azure DeploymentCapacity counts instances: see tiffin_deployment_ready_instances).",
            labels=_DEP,
        )
        ready = GaugeMetricFamily("tiffin_deployment_ready_instances", "Replicas in routing.", labels=_DEP)
        in_flight = GaugeMetricFamily("tiffin_deployment_requests_in_flight", "Requests holding a slot.", labels=_DEP)
        queued = GaugeMetricFamily("tiffin_deployment_requests_queued", "Requests waiting for a slot.", labels=_DEP)
        for endpoint in self.gateway.table.endpoints.values():
            for dep in endpoint.deployments.values():
                labels = [endpoint.name, dep.name]
                admission = self.gateway._admissions.get((endpoint.name, dep.name))
                capacity.add_metric(labels, len(dep.replicas) * dep.max_concurrent_requests_per_instance)
                ready.add_metric(labels, len(dep.replicas))
                in_flight.add_metric(labels, admission.in_flight if admission else 0)
                queued.add_metric(labels, admission.queued if admission else 0)
        yield from (capacity, ready, in_flight, queued)

    def _connections(self) -> Iterator[Metric]:
        if self.guard is None:
            return
        active = GaugeMetricFamily(
            "tiffin_connections_active", "Open client connections to the server's port (Azure ConnectionsActive)."
        )
        active.add_metric([], len(self.guard.connections))
        yield active
        accepted = CounterMetricFamily(
            "tiffin_connections", "Client connections accepted (Azure NewConnectionsPerSecond: rate of this)."
        )
        accepted.add_metric([], getattr(self.guard, "accepted", 0))
        yield accepted

    def _mirrors(self, meters: list[DeploymentMeter]) -> Iterator[Metric]:
        sent = CounterMetricFamily("tiffin_mirror_copies_sent", "Mirror copies sent to the deployment.", labels=_DEP)
        failed = CounterMetricFamily(
            "tiffin_mirror_copies_failed", "Mirror copies that got no answer (connection error, timeout).", labels=_DEP
        )
        dropped = CounterMetricFamily(
            "tiffin_mirror_copies_dropped", "Mirror copies not sent: the deployment was at capacity.", labels=_DEP
        )
        for m in meters:
            sent.add_metric([m.endpoint, m.deployment], m.mirror_sent)
            failed.add_metric([m.endpoint, m.deployment], m.mirror_failed)
            dropped.add_metric([m.endpoint, m.deployment], m.mirror_dropped)
        yield from (sent, failed, dropped)
        yield _histogram(
            "tiffin_mirror_latency_seconds", "Time mirror copies took to be answered.", meters, "mirror_latency"
        )

    def _replicas(self) -> Iterator[Metric]:
        labels = [*_DEP, "instance"]
        cpu = GaugeMetricFamily(
            "tiffin_replica_cpu_utilization_percent",
            "CPU of the replica process since the last scrape, 100 = one core (Azure CpuUtilizationPercentage).",
            labels=labels,
        )
        cpu_total = CounterMetricFamily("tiffin_replica_cpu_seconds", "CPU time of the replica process.", labels=labels)
        rss = GaugeMetricFamily("tiffin_replica_memory_bytes", "Resident memory of the replica process.", labels=labels)
        mem = GaugeMetricFamily(
            "tiffin_replica_memory_utilization_percent",
            "Resident memory as a share of the machine's (Azure CpuMemoryUtilizationPercentage).",
            labels=labels,
        )
        for r in self.replicas:
            values = [r.endpoint, r.deployment, str(r.index)]
            cpu.add_metric(values, r.cpu_percent)
            cpu_total.add_metric(values, r.cpu_seconds)
            rss.add_metric(values, r.rss_bytes)
            if self.memory_total:
                mem.add_metric(values, round(100.0 * r.rss_bytes / self.memory_total, 3))
        yield from (cpu, cpu_total, rss, mem)

    def _batch(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("tiffin_batch_jobs", "Batch jobs by state.", labels=[*_DEP, "state"])
        for (endpoint, deployment, state), count in sorted(self.batch.jobs.items()):
            jobs.add_metric([endpoint, deployment, state], count)
        minis = GaugeMetricFamily(
            "tiffin_batch_mini_batches", "Mini-batches done or failed, over all jobs.", labels=[*_DEP, "state"]
        )
        for (endpoint, deployment, state), count in sorted(self.batch.mini_batches.items()):
            minis.add_metric([endpoint, deployment, state], count)
        rows = GaugeMetricFamily(
            "tiffin_batch_rows_per_second", "Rows scored per second by running jobs since they started.", labels=_DEP
        )
        for (endpoint, deployment), rate in sorted(self.batch.rows_per_s.items()):
            rows.add_metric([endpoint, deployment], round(rate, 3))
        yield from (jobs, minis, rows)


def new_registry(collector: TiffinCollector) -> CollectorRegistry:
    """A registry holding only tiffin's collector (never prometheus-client's global default)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry``."""
    return generate_latest(registry)
