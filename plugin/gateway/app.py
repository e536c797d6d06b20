"""The gateway: one lean ASGI app in front of every online endpoint.

``/endpoints/{name}/{path}`` → authenticate → :func:`tiffin.routing.decide` → admission (429) → forward
the body as bytes over a pooled keep-alive connection to a ready replica (408 past the deployment's
request timeout) → the replica's answer, with ``azureml-model-deployment`` naming who answered. A mirror
copy, when the policy asks for one, is sent after the caller has its answer, on its own task; its
outcome only shows in the endpoint's stats.

A deployment whose replicas are all (re)starting has capacity 0: its requests queue for the replacement up to
max_queue_wait_ms (503 past it, or at once when no replica is on its way), so a restart fails nothing. A
deployment the autoscaler keeps at zero replicas (``min_instances: 0``) is "replacing" too: its requests queue
the same way, the autoscaler counts them as in flight and starts a replica, and they are answered by it (the
activator of Knative's scale to zero). A mirror copy never queues: one for a deployment at zero is dropped.

The routing table is swapped whole (:meth:`Gateway.set_table`); a request keeps the snapshot it started
with, so traffic changes and replica moves never fail a request in flight.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from tiffin.asgi import Receive, Scope, Send, send_error
from tiffin.auth import authenticate, authorization_header
from tiffin.errors import (
    CapacityError,
    ClientDisconnectedError,
    PayloadTooLargeError,
    TiffinError,
    UnavailableError,
)
from tiffin.gateway.exchange import Forwarding, Unreachable
from tiffin.gateway.limits import Admission
from tiffin.gateway.outcome import Outcome, traffic_entry
from tiffin.gateway.side import Captured, describe, send_mirror
from tiffin.gateway.stats import EndpointStats
from tiffin.http_client import UpstreamPool
from tiffin.rollout.agreement import AgreementCheck
from tiffin.routing import DeploymentRoute, EndpointRoute, RoutingTable, decide
from tiffin.telemetry.meters import Meters
from tiffin.telemetry.tracing import GatewayTracing, RequestTrace, untraced_asks
from tiffin.telemetry.traffic_log import TrafficLog

__all__ = ["Gateway"]

logger = logging.getLogger("tiffin.gateway")


_PIN = (b"azureml-model-deployment", b"x-tiffin-deployment")
_MAX_MIRRORS_IN_FLIGHT = 256
_GONE = "the client went away before its request body was complete"


def _no_replica(endpoint: str, deployment: str) -> str:
    return (
        f"deployment '{deployment}' of endpoint '{endpoint}' has no ready replica yet; "
        f"see `tiffin online-deployment show -e {endpoint} -n {deployment}`"
    )


class Gateway(Forwarding):
    """ASGI app serving ``{prefix}/{endpoint}/...`` for every endpoint in the routing table (its calls to replicas:
    :class:`~tiffin.gateway.exchange.Forwarding`)."""

    def __init__(
        self,
        *,
        prefix: str = "/endpoints",
        max_body_bytes: int = 100 * 1024 * 1024,
        rng: random.Random | None = None,
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.max_body_bytes = max_body_bytes
        self.table = RoutingTable()
        self.stats: dict[str, EndpointStats] = {}
        self._rng = rng or random.Random()
        self._admissions: dict[tuple[str, str], Admission] = {}
        self._in_flight: dict[str, int] = {}
        self._down_until: dict[str, float] = {}
        self._mirrors: set[asyncio.Task[None]] = set()
        self._pool = UpstreamPool()
        self._swagger_cache: dict[tuple[int, str, str, str], bytes] = {}
        self._peer_stats = EndpointStats()  # requests served for peer nodes: counted by the node they reached
        self._table_waiter: asyncio.Future[None] | None = None  # resolved by the next set_table
        self.meters: Meters | None = None
        """Per-deployment counters for /metrics and the stats API's recent window (None: TIFFIN_METRICS=0)."""
        self.traffic: TrafficLog | None = None
        """Where each request's traffic-log entry goes (None: TIFFIN_TRAFFIC_LOG=0)."""
        self.tracing: GatewayTracing | None = None
        """Spans of the requests of traced deployments (None: no OTLP exporter configured, no tracing code runs)."""
        self._untraced_warned: set[tuple[str, str]] = set()
        self.agreement: dict[str, AgreementCheck] | None = None
        """The active agreement checks of rollouts' mirror phases, by endpoint (None: none, and the hot path
        compares nothing); see :meth:`check_agreement`."""
        self.agreement_reports: dict[str, AgreementCheck] = {}
        """Every endpoint's latest check, kept after it ends for the stats API."""
        self.on_cold: Callable[[str, str], None] | None = None
        """Called with (endpoint, deployment) when a request starts waiting for a deployment with no replica ready
        and nobody waiting yet (scaled to zero, or restarting): the autoscaler samples at once."""

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Nothing to open: upstream connections are made on first use in the serving event loop."""

    async def close(self) -> None:
        """Cancel outstanding mirror copies and close the pooled upstream connections."""
        for task in list(self._mirrors):
            task.cancel()
        if self._mirrors:
            await asyncio.gather(*self._mirrors, return_exceptions=True)
        await self._pool.close()

    def set_table(self, table: RoutingTable) -> None:
        """Swap in a new routing table; admission slots follow the replicas now ready."""
        listed: set[str] = set()
        for endpoint in table.endpoints.values():
            for dep in endpoint.deployments.values():
                listed.update(r.id for r in dep.replicas)
                key = (endpoint.name, dep.name)
                capacity = len(dep.replicas) * dep.max_concurrent_requests_per_instance
                admission = self._admissions.get(key)
                if admission is None:
                    self._admissions[key] = Admission(dep.name, capacity)
                else:
                    admission.resize(capacity)
                    if not capacity and not dep.replacing and admission.queued:
                        # The replacement they waited for is not coming (given up, or scaled to 0).
                        admission.fail_waiters(UnavailableError(_no_replica(endpoint.name, dep.name)))
        # A replica that left routing and comes back is a new process (a restart reuses its id and socket):
        # it must not inherit the old one's "refused a connection" mark.
        for replica_id in [k for k in self._down_until if k not in listed]:
            del self._down_until[replica_id]
        self.table = table
        if self.tracing is None:
            for endpoint_name, name in untraced_asks(table, self._untraced_warned):
                logger.warning(
                    "deployment '%s' of endpoint '%s' asks for traces (app_insights_enabled: true) but this server "
                    "has no exporter: nothing is traced; start tiffin serve with OTEL_EXPORTER_OTLP_ENDPOINT set",
                    name,
                    endpoint_name,
                )
        if self.meters is not None:  # made here, not per request: a request's record is a few increments
            self.meters.sync((e.name, d) for e in table.endpoints.values() for d in e.deployments)
        self._swagger_cache.clear()
        if self._table_waiter is not None and not self._table_waiter.done():
            self._table_waiter.set_result(None)

    def check_agreement(self, endpoint: str, check: AgreementCheck | None) -> None:
        """Start comparing the mirror's answers with the primary's for ``endpoint`` (None: stop)."""
        checks = dict(self.agreement or {})
        if check is None:
            checks.pop(endpoint, None)
        else:
            checks[endpoint] = self.agreement_reports[endpoint] = check
        self.agreement = checks or None

    def endpoint_stats(self, name: str) -> dict[str, Any]:
        """The counters of endpoint ``name`` (see :class:`EndpointStats`)."""
        stats = self.stats.get(name)
        answer = (stats or EndpointStats()).as_dict()
        check = self.agreement_reports.get(name)
        if check is not None:
            answer["agreement"] = {**check.report(), "active": bool(self.agreement and name in self.agreement)}
        if self.meters is not None:
            endpoint = self.table.endpoints.get(name)
            names = endpoint.deployments if endpoint is not None else ()
            answer["recent"] = {d: self.meters.get(name, d).window() for d in names}
        return answer

    # --- ASGI ----------------------------------------------------------------------------------------

    # The lines between "tracing:begin" and "tracing:end" markers (here and in exchange.py) are all the tracing code
    # of the hot path: benchmarks/bench_gateway.py compares a gateway without them to this one with tracing off.

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        # tracing:begin
        if self.tracing is not None:
            trace = self.tracing.arrived(scope)
            try:
                await self._serve(scope, receive, send, trace)
            finally:
                trace.finish()
            return
        # tracing:end
        await self._serve(scope, receive, send, None)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, trace: RequestTrace | None) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        rest = path[len(self.prefix) + 1 :] if path.startswith(self.prefix + "/") else ""
        name, slash, tail = rest.partition("/")
        endpoint = self.table.endpoints.get(name) if name else None
        raw_path: bytes | None = scope.get("raw_path")
        if endpoint is not None and raw_path is not None and b"%" in raw_path:
            # `/endpoints/E%2Fscore` decodes to `/endpoints/E/score`: the name the client sent is "E/score",
            # which no endpoint has; answering as endpoint E would score where the client did not ask.
            name = self._name_as_sent(raw_path) or ""
            endpoint = self.table.endpoints.get(name)
        outcome = Outcome()
        # tracing:begin
        if trace is not None:  # outcome.trace stays set only if the deployment is traced (_handle)
            outcome.trace, trace.outcome = trace, outcome
        # tracing:end
        if endpoint is None:
            message = f"endpoint '{name}' not found; list endpoints with `tiffin online-endpoint list`"
            await send_error(send, 404, message)
            if self.meters is not None:
                self.meters.unknown_endpoint += 1
            if self.traffic is not None:
                outcome.status = 404
                self.traffic.add(traffic_entry(scope, "", outcome, time.perf_counter() - started))
            return
        stats = self.stats.get(name)
        if stats is None:
            stats = self.stats[name] = EndpointStats()
        # tracing:begin
        if trace is not None:
            trace.endpoint = name
        # tracing:end
        try:
            await self._handle(scope, receive, send, endpoint, stats, "/" + tail if slash else "/", outcome)
        except TiffinError as exc:
            stats.rejected[exc.status_code] += 1
            outcome.status = exc.status_code
            await send_error(send, exc.status_code, exc.message)
        meters, traffic = self.meters, self.traffic
        if meters is not None or traffic is not None:
            elapsed = time.perf_counter() - started
            if meters is not None:
                meter = outcome.meter or meters.by_key.get((name, ""))
                if meter is not None:
                    meter.answered(outcome.status, started, elapsed, outcome.bytes_in, outcome.bytes_out)
            if traffic is not None:
                traffic.add(traffic_entry(scope, name, outcome, elapsed))

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        endpoint: EndpointRoute,
        stats: EndpointStats,
        tail: str,
        outcome: Outcome,
    ) -> None:
        pinned = None
        content_length = -1
        authorization = authorization_header(scope["headers"])  # two are refused: 400
        for key, value in scope["headers"]:
            if key in _PIN and value:
                pinned = value.decode("latin-1")
            elif key == b"content-length":
                content_length = int(value) if value.isdigit() else -1
        authenticate(authorization, endpoint.name, endpoint.credentials)
        if content_length > self.max_body_bytes:
            raise PayloadTooLargeError(self._too_large())

        rng = self._rng
        decision = decide(endpoint, pinned, rng.random(), rng.random())
        deployment = endpoint.deployments[decision.deployment]
        outcome.deployment = deployment.name
        # tracing:begin
        if outcome.trace is not None and not outcome.trace.begin(deployment):
            outcome.trace = None  # not traced: no span, and the caller's traceparent goes on as it came
        # tracing:end
        if self.meters is not None:
            outcome.meter = self.meters.by_key.get((endpoint.name, deployment.name))
        if tail == "/swagger.json" and scope["method"] == "GET":
            await describe(self, scope, send, endpoint, deployment)
            return
        body = await self._read_body(receive)
        outcome.bytes_in = len(body)

        captured = None
        if self.agreement is not None and decision.mirror is not None:  # a rollout's mirror phase compares
            check = self.agreement.get(endpoint.name)
            if check is not None and check.deployment == decision.mirror:
                send = captured = Captured(check, send, deployment.name)
                began = time.perf_counter()
        try:
            await self._admit_and_forward(scope, send, endpoint, deployment, tail, body, stats, outcome)
        except Unreachable:
            # The replica died a moment ago and the table does not show it yet (the supervisor learns of an
            # exit within milliseconds). The request never reached it, so it is safe to send once more, under
            # the next table, where it queues for the replacement.
            current = self._current(endpoint.name, deployment.name)
            if current is deployment:  # the table this request saw is still the latest: wait for the next
                if not deployment.max_queue_wait_ms or not await self._next_table(deployment.max_queue_wait_ms):
                    raise
                current = self._current(endpoint.name, deployment.name)
            if current is None:
                raise
            await self._admit_and_forward(scope, send, endpoint, current, tail, body, stats, outcome)
        if captured is not None:
            captured.seconds = time.perf_counter() - began
        if decision.mirror is not None and len(self._mirrors) < _MAX_MIRRORS_IN_FLIGHT:
            mirror = send_mirror(self, scope, endpoint, decision.mirror, tail, body, stats, captured)
            task = asyncio.create_task(mirror)
            self._mirrors.add(task)
            task.add_done_callback(self._mirrors.discard)
        elif decision.mirror is not None:
            stats.mirror_of(decision.mirror).dropped += 1
            if self.meters is not None:
                self.meters.get(endpoint.name, decision.mirror).mirror_dropped += 1

    async def _admit_and_forward(
        self,
        scope: Scope,
        send: Send,
        endpoint: EndpointRoute,
        deployment: DeploymentRoute,
        tail: str,
        body: bytes,
        stats: EndpointStats,
        outcome: Outcome,
    ) -> None:
        admission = self._admissions.get((endpoint.name, deployment.name))
        if admission is None or not (deployment.replicas or deployment.replacing):
            raise UnavailableError(_no_replica(endpoint.name, deployment.name))
        meter = outcome.meter
        # tracing:begin
        trace = outcome.trace
        queued_ns = time.time_ns() if trace is not None else 0
        # tracing:end
        if meter is None:
            deployment = await self._acquire(admission, endpoint, deployment)
        elif admission.free and deployment.replicas:  # a slot now: no wait to time (the common case)
            meter.queue[0] += 1
            deployment = await self._acquire(admission, endpoint, deployment)
        else:
            queued_at = time.perf_counter()
            try:
                deployment = await self._acquire(admission, endpoint, deployment)
            finally:
                meter.waited(time.perf_counter() - queued_at)
        # tracing:begin
        if trace is not None:
            trace.queued(queued_ns, time.time_ns())
        # tracing:end
        try:
            await self._forward(scope, send, endpoint, deployment, tail, body, stats, outcome)
        finally:
            admission.release()

    async def _next_table(self, wait_ms: float) -> bool:
        """Wait up to ``wait_ms`` for the next routing table; whether one came."""
        if self._table_waiter is None or self._table_waiter.done():
            self._table_waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._table_waiter), wait_ms / 1000)
        except TimeoutError:
            return False
        return True

    async def _acquire(
        self, admission: Admission, endpoint: EndpointRoute, deployment: DeploymentRoute
    ) -> DeploymentRoute:
        """Take a slot of ``deployment``; returns the route to forward by.

        With every replica (re)starting, or the deployment scaled to zero, the capacity is 0 until the supervisor
        reports one ready; the queue then moves in arrival order. Such a wait is bounded by max_queue_wait_ms and
        by the request's own timeout, and ends in 503 (no replica), not 429 (busy replicas)."""
        if deployment.replicas:
            wait_ms = deployment.max_queue_wait_ms
        else:
            wait_ms = min(deployment.max_queue_wait_ms, deployment.request_timeout_ms)
            if self.on_cold is not None and not admission.queued:
                self.on_cold(endpoint.name, deployment.name)
        try:
            await admission.acquire(wait_ms / 1000)
        except CapacityError:
            current = self._current(endpoint.name, deployment.name)
            if deployment.replicas and current is not None and current.replicas:
                raise  # replicas there all along, all busy: the ordinary 429
            raise UnavailableError(
                f"{_no_replica(endpoint.name, deployment.name)}: none became ready within max_queue_wait_ms "
                f"({wait_ms} ms) while one was starting (or scaling up from zero); set request_settings."
                "max_queue_wait_ms and request_timeout_ms above a replica's start time to wait for it"
            ) from None
        if deployment.replicas:
            return deployment
        current = self._current(endpoint.name, deployment.name)
        if current is None or not current.replicas:  # deleted meanwhile
            admission.release()
            raise UnavailableError(_no_replica(endpoint.name, deployment.name))
        return current

    def _current(self, endpoint: str, deployment: str) -> DeploymentRoute | None:
        route = self.table.endpoints.get(endpoint)
        return route.deployments.get(deployment) if route is not None else None

    async def _read_body(self, receive: Receive) -> bytes:
        message = await receive()
        body = message.get("body", b"")
        if not message.get("more_body", False):
            if message["type"] == "http.disconnect":
                raise ClientDisconnectedError(_GONE)
            if len(body) > self.max_body_bytes:
                raise PayloadTooLargeError(self._too_large())
            return body
        chunks, size = [body], len(body)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                # A partial body forwarded as if whole would be scored for nobody (or scored wrongly).
                raise ClientDisconnectedError(_GONE)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise PayloadTooLargeError(self._too_large())
            chunks.append(chunk)
        return b"".join(chunks)

    def _name_as_sent(self, raw_path: bytes) -> str | None:
        """The endpoint name of a percent-encoded request path, decoded segment by segment (None when the
        encoded prefix is not this gateway's)."""
        depth = self.prefix.count("/")
        parts = raw_path.split(b"/", depth + 2)
        if len(parts) <= depth + 1 or "/".join(unquote(p.decode("latin-1")) for p in parts[: depth + 1]) != self.prefix:
            return None
        return unquote(parts[depth + 1].decode("latin-1"))

    def _too_large(self) -> str:
        return f"request body is larger than {self.max_body_bytes} bytes; send smaller batches"
