"""Keeps the gateway's routing table in step with the store and the supervisor.

:func:`build_table` is pure: store records and the replicas the supervisor reports ready in, a
:class:`~tiffin.routing.RoutingTable` out. :class:`RoutingState` is the edge that calls it: on every
supervisor change, on every control-plane write, and when the store's routing generation moves (another
process wrote to a shared PostgreSQL store).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from tiffin.auth import Credentials
from tiffin.routing import DeploymentRoute, EndpointRoute, Replica, RoutingTable
from tiffin.store import DeploymentRecord, EndpointRecord, Store

__all__ = ["RoutingState", "build_table"]

logger = logging.getLogger("tiffin.routing")

ReadyReplicas = Callable[[str, str], tuple[Replica, ...]]
RemoteReplicas = Callable[[DeploymentRecord], tuple[Replica, ...]]
Replacing = Callable[[str, str], bool]


def build_table(
    endpoints: Iterable[EndpointRecord],
    deployments: Iterable[DeploymentRecord],
    ready: ReadyReplicas,
    generation: int,
    remote: RemoteReplicas | None = None,
    replacing: Replacing | None = None,
) -> RoutingTable:
    """The routing table for the online endpoints in ``endpoints``: each deployment's replicas ready here
    (``ready``), or else those another node sharing the store runs for it (``remote``), and whether one is
    starting here (``replacing``)."""
    by_endpoint: dict[str, list[DeploymentRecord]] = {}
    for dep in deployments:
        by_endpoint.setdefault(dep.endpoint_name, []).append(dep)
    routes = {}
    for ep in endpoints:
        if ep.kind != "online":
            continue
        routes[ep.name] = EndpointRoute(
            name=ep.name,
            credentials=Credentials(ep.auth_mode, ep.primary_key, ep.secondary_key, ep.token_secret),
            traffic=dict(ep.traffic),
            mirror_traffic=dict(ep.mirror_traffic),
            deployments={
                d.name: _deployment_route(
                    d,
                    ready(ep.name, d.name) or (remote(d) if remote is not None else ()),
                    replacing is not None and replacing(ep.name, d.name),
                )
                for d in by_endpoint.get(ep.name, [])
            },
        )
    return RoutingTable(routes, generation)


def _deployment_route(record: DeploymentRecord, replicas: tuple[Replica, ...], replacing: bool) -> DeploymentRoute:
    settings: dict[str, Any] = record.spec.get("request_settings") or {}
    return DeploymentRoute(
        name=record.name,
        replicas=replicas,
        request_timeout_ms=int(settings.get("request_timeout_ms", 5000)),
        max_concurrent_requests_per_instance=int(settings.get("max_concurrent_requests_per_instance", 1)),
        max_queue_wait_ms=int(settings.get("max_queue_wait_ms", 500)),
        replacing=replacing,
        traced=record.spec.get("app_insights_enabled") is True,
    )


class RoutingState:
    """Rebuilds the routing table when something changed, and hands it to ``apply`` (the gateway).

    Rebuilds are coalesced: any number of :meth:`changed` calls while a rebuild runs cause one more.
    """

    def __init__(
        self,
        store: Store,
        ready: ReadyReplicas,
        apply: Callable[[RoutingTable], None],
        *,
        poll_interval: float = 1.0,
        remote: RemoteReplicas | None = None,
        replacing: Replacing | None = None,
    ) -> None:
        self.store = store
        self.ready = ready
        self.remote = remote
        self.replacing = replacing
        self.apply = apply
        self.poll_interval = poll_interval
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._seen_generation = -1
        self._records: tuple[list[EndpointRecord], list[DeploymentRecord], int] | None = None

    def changed(self) -> None:
        """The desired state changed (a control-plane write): re-read the store and rebuild soon."""
        self._dirty.set()

    async def rebuild_now(self) -> RoutingTable:
        """Re-read the store and apply the table before returning; await it on the gateway's event loop.

        The control plane awaits this after each write, so when a request like "set traffic" returns, the
        gateway already routes by it. The read runs in a worker thread: with PostgreSQL it is a network
        round trip, which must not stall the requests the loop serves meanwhile.
        """
        return await self.rebuild()

    def replicas_changed(self) -> None:
        """A replica joined or left routing: rebuild now, on the caller's loop, from the records read last.

        No store read is needed for this, so the new table is in place before the supervisor goes on to
        report the deployment Succeeded: a client that saw Succeeded never meets the old table.
        """
        if self._records is None:
            self._dirty.set()
            return
        endpoints, deployments, generation = self._records
        self.apply(build_table(endpoints, deployments, self.ready, generation, self.remote, self.replacing))
        # The records may predate the deployment whose replica this is: one created through another server's API
        # on a shared store, read by this server's supervisor before its own routing poll came round. Re-read them
        # now (replicas change seldom; an idle server does not pay for it).
        self._dirty.set()

    def _read(self) -> tuple[list[EndpointRecord], list[DeploymentRecord], int]:
        # Generation first: if a write lands between the reads we see it next time round.
        generation = self.store.routing_generation()
        return self.store.list_endpoints("online"), self.store.list_deployments(), generation

    def build(self) -> RoutingTable:
        """Build the table from the store now (blocking reads, so callers in the loop use a thread)."""
        endpoints, deployments, generation = self._read()
        return build_table(endpoints, deployments, self.ready, generation, self.remote, self.replacing)

    async def rebuild(self) -> RoutingTable:
        """Read the store off the event loop, then build and apply on the loop (the gateway is not thread-safe)."""
        return self._apply(await asyncio.to_thread(self._read))

    def _apply(self, records: tuple[list[EndpointRecord], list[DeploymentRecord], int]) -> RoutingTable:
        endpoints, deployments, generation = records
        if generation < self._seen_generation and self._records is not None:
            # Reads run in threads, so two may finish out of order: never go back to an older table.
            endpoints, deployments, generation = records = self._records
        self._records = records
        self._seen_generation = generation
        table = build_table(endpoints, deployments, self.ready, generation, self.remote, self.replacing)
        self.apply(table)
        return table

    async def start(self) -> None:
        """Build the first table, then keep it current in a background task."""
        await self.rebuild()
        self._task = asyncio.create_task(self._run(), name="tiffin-routing")

    async def stop(self) -> None:
        """Stop the background task."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._dirty.wait(), self.poll_interval)
            except TimeoutError:
                # Nobody told us; check whether another process changed the store.
                generation = await asyncio.to_thread(self.store.routing_generation)
                if generation == self._seen_generation:
                    continue
            self._dirty.clear()
            try:
                await self.rebuild()
            except Exception:
                logger.exception("rebuilding the routing table failed; keeping the previous one")
