"""``tiffin serve``: the control plane, the gateway and the supervisor in one process on one port.

::

    /api/...                 control plane (REST + OpenAPI), admin token required
    /endpoints/{name}/...    the gateway: scoring, swagger, any other route of the deployments
    /_tiffin/peer/...        replicas of this server, for the gateways of other servers sharing the store
    /metrics                 Prometheus metrics (tiffin.telemetry), admin token required
    /studio/                 the studio's static page (tiffin.studio); ``/`` redirects there for a browser

The three parts share nothing but the store and the routing table: the API writes the store and says
so (``on_change``); the supervisor starts, probes and stops replicas and says when the ready set
changes; :class:`~tiffin.routing_state.RoutingState` rebuilds the table from both and swaps it into the
gateway. SIGINT/SIGTERM stop uvicorn, whose lifespan shutdown stops every replica.

Several servers may share one PostgreSQL store: each is a :class:`~tiffin.node.Node` that runs the
deployments and jobs it owns, takes over those of a node that stops beating, and routes to the others'
replicas through their peer route (:mod:`tiffin.gateway.peers`).

With ``TIFFIN_DEPLOYMENT_URL_TEMPLATE`` set (the gateway of ``tiffin export kubernetes``) no replica runs here:
:class:`~tiffin.gateway.services.DeploymentServices` takes the supervisor's place and each deployment is routed to
its Service's URL.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import IO

import uvicorn

from tiffin import config
from tiffin.api import create_api
from tiffin.asgi import Receive, Scope, Send, send_bytes, send_error
from tiffin.autoscale.engine import AutoscaleEngine
from tiffin.autoscale.readings import load_area, request_meter
from tiffin.batch import BatchScheduler
from tiffin.config import REPLICA_CPUS_ENV, configure_logging, parse_cpu_list, pin_to_cpus
from tiffin.connection_limits import ConnectionLimits, raise_open_files_limit
from tiffin.gateway import Gateway
from tiffin.gateway.peers import PEER_PREFIX, PeerDirectory, PeerRoute
from tiffin.gateway.services import DeploymentServices, ServiceURLs
from tiffin.http_protocol import public_protocol
from tiffin.node import Node
from tiffin.paths import admin_token_path, hold_home, prepare_home, write_private_once
from tiffin.replica.run import QuietServer
from tiffin.rollout.driver import RolloutDriver, control_traffic
from tiffin.routing_state import RoutingState
from tiffin.store import Store
from tiffin.studio import PREFIX as STUDIO_PREFIX
from tiffin.studio import Studio, wants_html
from tiffin.supervisor import Supervisor
from tiffin.telemetry.service import METRICS_PATH, Telemetry
from tiffin.telemetry.settings import TelemetrySettings

__all__ = ["TiffinServer", "ensure_admin_token", "serve"]

logger = logging.getLogger("tiffin.server")
# How often the routing table looks for changes made by other servers sharing the store, and how often while alone.
_SHARED_POLL_S = 1.0
_IDLE_POLL_S = 30.0


def ensure_admin_token(home: Path) -> tuple[str, bool]:
    """The admin token in ``$TIFFIN_HOME/admin-token`` (0600), created on first use; (token, created)."""
    path = admin_token_path(home)
    if not path.exists():
        token = secrets.token_urlsafe(32)
        # 0600 from the start, and whole when it appears: a second server starting now reads this one.
        if write_private_once(path, (token + "\n").encode()):
            return token, True
    if path.stat().st_mode & 0o077:  # made readable by hand, or by an older tiffin
        os.chmod(path, 0o600)
    return path.read_text(encoding="utf-8").strip(), False


class TiffinServer:
    """The ASGI app of ``tiffin serve``; its lifespan starts and stops the supervisor and routing."""

    def __init__(
        self,
        *,
        home: Path,
        store: Store,
        public_url: str,
        admin_token: str,
        max_jobs_per_deployment: int = 1,
        node_url: str | None = None,
        telemetry: TelemetrySettings | None = None,
        service_urls: ServiceURLs | None = None,
    ) -> None:
        """``node_url`` is where the other servers sharing the store reach this one (default ``public_url``;
        ``TIFFIN_ADVERTISE_URL`` in :func:`serve`). With ``service_urls`` no replica runs here: each deployment
        is routed to the Service at its URL (:mod:`tiffin.gateway.services`)."""
        self.home = home
        self.store = store
        self.public_url = public_url
        self.gateway = Gateway()
        self.node = Node(
            store,
            config.node_id(home),
            url=node_url or public_url,
            lease_s=config.node_lease(),
            on_change=self._nodes_changed,
        )
        peer_secret = store.derive_secret("peer-route")
        self.peer_route = PeerRoute(self.gateway, peer_secret)
        # Alone on the store, every change to it comes through this server's API, which notifies the supervisor
        # and the scheduler: they poll the store only while other servers share it (see _nodes_changed).
        self.supervisor = Supervisor(
            store,
            home,
            on_change=self._replicas_changed,
            owned=self.node.claim_deployments,
            alone=self.node.alone,
        )
        self.batch = BatchScheduler(
            store,
            home,
            max_jobs_per_deployment=max_jobs_per_deployment,
            node_id=self.node.id,
            live=self.node.live,
        )
        peers = PeerDirectory(self.node.id, self.node.peers, peer_secret)
        # Deployments served by Services (Kubernetes): the supervisor is built (telemetry reads it) but never started.
        self.services = (
            DeploymentServices(store, service_urls, on_change=self._replicas_changed) if service_urls else None
        )
        self.replicas: Supervisor | DeploymentServices = self.services or self.supervisor
        # Autoscale (scale_settings, tiffin monitor autoscale) tells the supervisor how many replicas to keep.
        self.autoscale = AutoscaleEngine(
            self.supervisor,
            lambda e, d: load_area(self.gateway, e, d),
            home,
            store=store,
            request_meter=lambda e, d: request_meter(self.gateway, e, d),
        )
        self.gateway.on_cold = self.autoscale.demand  # a request waits at zero: start a replica now
        self.routing = RoutingState(
            store,
            self.replicas.ready_replicas,
            self.gateway.set_table,
            remote=None if self.services else peers.replicas,
            replacing=self.replicas.replacing,
        )
        self._home_lock: IO[str] | None = None
        self.telemetry = Telemetry(
            telemetry or TelemetrySettings.from_environment(),
            home=home,
            gateway=self.gateway,
            supervisor=self.supervisor,
            store=store,
            admin_token=admin_token,
        )
        self.studio = Studio()
        # Guarded rollouts (tiffin online-endpoint rollout): judged by this gateway's counters.
        self.rollouts = RolloutDriver(
            store,
            home,
            self.gateway,
            self.node.id,
            control_traffic(store, home, public_url, self._desired_state_changed),
        )
        self.api = create_api(
            store,
            admin_token=admin_token,
            public_url=public_url,
            on_change=self._desired_state_changed,
            stats=self.gateway.endpoint_stats,
            home=home,
            ready_count=lambda endpoint, deployment: self.gateway.table.ready_count(endpoint, deployment),
        )

    def _replicas_changed(self) -> None:
        self.routing.replicas_changed()
        self.autoscale.wake()  # a new deployment's first replicas: it may be one to autoscale

    def _poll_routing(self) -> None:
        # The routing table polls the store for changes other servers make; alone, every change is this server's
        # own and rebuilds the table when it is made, so the poll is a safety net only.
        self.routing.poll_interval = _IDLE_POLL_S if self.node.alone() else _SHARED_POLL_S
        self.rollouts.idle_s = self.autoscale.idle_s = self.routing.poll_interval

    def _nodes_changed(self) -> None:
        # A node joined or stopped beating: its deployments and jobs may be ours to take, and the routing
        # table must stop listing (or start listing) its replicas.
        self._poll_routing()
        self.routing.changed()
        self.replicas.notify()
        self.batch.notify()

    async def _desired_state_changed(self) -> None:
        # Awaited on the event loop after a committed write: the table is current before the API answers.
        await self.routing.rebuild_now()
        self.rollouts.wake()
        self.autoscale.wake()
        self.replicas.notify()
        self.batch.notify()

    async def startup(self) -> None:
        """Start the gateway's pool, the node's heartbeat, the routing table, the supervisor, the jobs."""
        self._home_lock = hold_home(self.home)
        await self.node.start()
        self.telemetry.start()
        self._poll_routing()
        await self.gateway.start()
        await self.routing.start()
        await self.replicas.start()
        if self.services is None:
            self.autoscale.start()
        await self.batch.start()
        await self.rollouts.start()
        # As in replicas: freeze what start-up allocated and collect the young generation less often,
        # so the gateway's p99 is not made of garbage-collection pauses over long-lived objects.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)

    async def shutdown(self) -> None:
        """Stop every replica and batch worker, then the rest (running jobs resume at the next start)."""
        try:
            await self.rollouts.stop()
            await self.batch.stop()
            await self.autoscale.stop()
            await self.replicas.stop()
        finally:
            # Left once nothing runs here any more: the other nodes take the deployments and jobs over now.
            await self.node.stop()
            await self.routing.stop()
            await self.gateway.close()
            self.telemetry.stop()
            if self._home_lock is not None:
                self._home_lock.close()
                self._home_lock = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path: str = scope["path"]
            if path.startswith("/endpoints/"):
                await self.gateway(scope, receive, send)
            elif path.startswith(PEER_PREFIX):
                await self.peer_route(scope, receive, send)
            elif path == "/api" or path.startswith("/api/"):
                # Mount the API at /api the way Starlette's Mount does: path kept, root_path extended.
                await self.api({**scope, "root_path": scope.get("root_path", "") + "/api"}, receive, send)
            elif path == STUDIO_PREFIX or path.startswith(STUDIO_PREFIX + "/"):
                await self.studio(scope, receive, send)  # static files only: the page signs in to /api itself
            elif path == "/" and scope["method"] == "GET" and wants_html(scope["headers"]):
                await send_bytes(send, 302, b"", b"text/plain", [(b"location", STUDIO_PREFIX.encode() + b"/")])
            elif path == METRICS_PATH:
                await self.telemetry.metrics(scope, receive, send)
            elif path == "/" and scope["method"] == "GET":
                document = {"service": "tiffin", "api": "/api/openapi.json", "endpoints": "/endpoints/{name}"}
                await send_bytes(send, 200, json.dumps(document).encode())
            else:
                await send_error(send, 404, f"{path} is not served here; try /api/openapi.json")
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await self.startup()
            except Exception as exc:
                logger.exception("tiffin serve failed to start")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
        if message["type"] == "lifespan.shutdown":
            try:
                await self.shutdown()
            finally:
                await send({"type": "lifespan.shutdown.complete"})


class _Server(QuietServer):
    public_url = ""

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(f"tiffin serve ready: {self.public_url}  (REST: /api, endpoints: /endpoints/NAME)", flush=True)


def serve(
    *,
    home: Path,
    host: str = "127.0.0.1",
    port: int = 7700,
    store_url: str | None = None,
    replica_cpus: str | None = None,
    max_jobs_per_deployment: int = 1,
    connection_limits: dict[str, float | None] | None = None,
) -> int:
    """Run ``tiffin serve`` until SIGINT/SIGTERM; returns the exit code.

    ``replica_cpus`` (``taskset -c`` syntax) keeps replicas on those CPUs and this process (the gateway)
    on the others, as Azure keeps its front end and each deployment instance on machines of their own.
    ``max_jobs_per_deployment`` batch jobs of one deployment run at a time; more wait Queued, in order.
    ``connection_limits`` are the public port's limits given as options (None: not given; the environment,
    then :class:`~tiffin.connection_limits.ConnectionLimits`' defaults fill the rest).
    """
    configure_logging()
    service_urls = ServiceURLs.from_environment()  # a bad template stops the start before anything is written
    # Before anything is written: the store, its WAL, logs, job outputs and model copies are the user's alone.
    prepare_home(home)
    if replica_cpus:
        chosen = parse_cpu_list(replica_cpus)
        os.environ[REPLICA_CPUS_ENV] = replica_cpus  # replicas inherit it and pin themselves
        rest = frozenset(range(os.cpu_count() or 1)) - chosen
        if rest:
            pin_to_cpus(rest)
    # Connections are open files: use all the process may have, and keep a fifth for replicas and the store.
    limits = ConnectionLimits.from_environment(open_files=raise_open_files_limit(), **(connection_limits or {}))
    store = Store.open(url=store_url, home=home)
    token, created = ensure_admin_token(home)
    if created:
        print(f"admin token (saved to {admin_token_path(home)}, shown once): {token}", flush=True)
    public_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    app = TiffinServer(
        home=home,
        store=store,
        public_url=public_url,
        admin_token=token,
        max_jobs_per_deployment=max_jobs_per_deployment,
        node_url=config.advertise_url(),
        service_urls=service_urls,
    )
    protocol = public_protocol(limits)
    app.telemetry.use_connection_guard(getattr(protocol, "keywords", {}).get("guard"))
    uvicorn_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        # Anyone who reaches the port is a client before any credential is checked: heads, bodies,
        # idle time and connections are bounded (tiffin.connection_limits). No WebSocket routes here.
        http=protocol,
        ws="none",
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        log_level="warning",
        timeout_keep_alive=limits.keep_alive_timeout,
        backlog=4096,
    )
    server = _Server(uvicorn_config)
    server.public_url = public_url
    with contextlib.suppress(SystemExit):
        server.run()
    store.close()
    return 0 if server.started else 1
