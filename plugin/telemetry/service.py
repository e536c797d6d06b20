"""Telemetry of one ``tiffin serve``: turns the settings into the gateway's meters, the traffic log, the
tracer and the ``/metrics`` route, and starts and stops what needs it."""

from __future__ import annotations

import asyncio
import hmac
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tiffin.asgi import Receive, Scope, Send, send_bytes, send_error
from tiffin.auth import authorization_header, bearer_value
from tiffin.errors import TiffinError
from tiffin.telemetry.meters import Meters
from tiffin.telemetry.metrics import CONTENT_TYPE, TiffinCollector, batch_snapshot, new_registry, read_replicas, render
from tiffin.telemetry.settings import TelemetrySettings
from tiffin.telemetry.tracing import GatewayTracing
from tiffin.telemetry.traffic_log import TrafficLog, traffic_log_path

if TYPE_CHECKING:
    from tiffin.connection_limits import ConnectionGuard
    from tiffin.gateway import Gateway
    from tiffin.store import Store
    from tiffin.supervisor import Supervisor

__all__ = ["METRICS_PATH", "Telemetry"]

logger = logging.getLogger("tiffin.telemetry")

METRICS_PATH = "/metrics"


class Telemetry:
    """Metrics, traffic log and traces of one server (each off when its setting says so)."""

    def __init__(
        self,
        settings: TelemetrySettings,
        *,
        home: Path,
        gateway: Gateway,
        supervisor: Supervisor,
        store: Store,
        admin_token: str,
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.supervisor = supervisor
        self.store = store
        self._admin_token = admin_token.encode()
        self.collector: TiffinCollector | None = None
        if settings.metrics:
            gateway.meters = Meters()
            self.collector = TiffinCollector(gateway)
            self.registry = new_registry(self.collector)
        self.traffic: TrafficLog | None = None
        if settings.traffic_log:
            self.traffic = TrafficLog(
                traffic_log_path(home),
                max_bytes=settings.traffic_log_max_bytes,
                backups=settings.traffic_log_backups,
            )
        self._scrape_lock = asyncio.Lock()
        self.tracing: GatewayTracing | None = None
        if settings.otlp_endpoint:
            self.tracing = GatewayTracing(settings.otlp_endpoint, all_deployments=settings.trace_all_deployments)
            gateway.tracing = self.tracing
            which = "every deployment" if settings.trace_all_deployments else "deployments with app_insights_enabled"
            logger.info("traces of %s go to %s", which, settings.otlp_endpoint)
        elif settings.trace_all_deployments:
            logger.warning(
                "TIFFIN_TRACE_ALL_DEPLOYMENTS is set but no exporter is: nothing is traced; set "
                "OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) to where spans should go"
            )

    def use_connection_guard(self, guard: ConnectionGuard | None) -> None:
        """The public port's connection counts (ConnectionsActive, NewConnectionsPerSecond)."""
        if self.collector is not None:
            self.collector.guard = guard

    def start(self) -> None:
        """Start the traffic log's writer and hand it to the gateway."""
        if self.traffic is not None:
            self.traffic.start()
            self.gateway.traffic = self.traffic

    def stop(self) -> None:
        """Write the traffic log's last entries and export the last spans."""
        if self.tracing is not None:
            self.gateway.tracing = None
            self.tracing.shutdown()
        if self.traffic is not None:
            self.gateway.traffic = None
            self.traffic.close()

    async def metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /metrics`` with the admin token (as every other control-plane route but /api/health)."""
        try:
            value = bearer_value(authorization_header(scope["headers"]))
        except TiffinError as exc:
            await send_error(send, exc.status_code, exc.message)
            return
        if value is None or not hmac.compare_digest(value.encode(), self._admin_token):
            message = (
                "/metrics needs the admin token: send 'Authorization: Bearer <token>' with the token in "
                "$TIFFIN_HOME/admin-token (Prometheus: authorization.credentials_file)"
                if value is None
                else "the admin token is not valid; use the one in $TIFFIN_HOME/admin-token of the server"
            )
            await send_error(send, 401, message, [(b"www-authenticate", b"Bearer")])
            return
        if scope["method"] not in ("GET", "HEAD"):
            await send_error(send, 405, "/metrics answers GET only", [(b"allow", b"GET, HEAD")])
            return
        if self.collector is None:
            await send_error(send, 404, "metrics are off on this server (TIFFIN_METRICS=0); unset it to serve them")
            return
        await send_bytes(send, 200, await self._scrape(), CONTENT_TYPE)

    async def _scrape(self) -> bytes:
        assert self.collector is not None
        collector = self.collector
        async with self._scrape_lock:  # one scrape at a time: the CPU clock keeps the previous one's reading
            # The supervisor is read on its own event loop (this one); /proc and the store in a worker thread.
            pids = [(r.endpoint, r.deployment, r.index, r.pid) for r in self.supervisor.replicas() if r.pid]
            replicas = await asyncio.to_thread(read_replicas, pids, collector.clock)
            batch = await asyncio.to_thread(batch_snapshot, self.store)
            collector.prepare(replicas, batch)
            return render(self.registry)
