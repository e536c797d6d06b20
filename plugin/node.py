"""This server as one node of several sharing a store: its heartbeat, who else is alive, what it owns.

``tiffin serve`` runs one :class:`Node`. It registers a row in the store, beats ``lease_s / 5`` apart and
watches the other rows (:class:`tiffin.cluster.Liveness`). The supervisor asks it which online deployments
this node runs (:meth:`Node.claim_deployments`, which takes unowned and orphaned ones by compare-and-set);
the batch scheduler asks who is alive to know which running jobs it may take over; the routing table asks
for the live peers' URLs, to route to replicas that run on another node (:mod:`tiffin.gateway.peers`).

With one server (the default, SQLite) the node is alone: it owns everything, and a restart of it resumes
its own work at once, since its name (``TIFFIN_NODE_ID``, default host name + home) does not change.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime

from tiffin.cluster import DeploymentClaims, Liveness
from tiffin.store import Store

__all__ = ["Node"]

logger = logging.getLogger("tiffin.node")


class Node:
    """One ``tiffin serve`` among those sharing the store (see the module's docstring)."""

    def __init__(
        self,
        store: Store,
        node_id: str,
        *,
        url: str | None = None,
        lease_s: float = 10.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.id = node_id
        self.url = url
        self.lease_s = lease_s
        self.incarnation = secrets.token_hex(8)
        self._on_change = on_change
        self._liveness = Liveness(node_id, lease_s)
        self._claims = DeploymentClaims(node_id, lease_s)
        self._live: frozenset[str] = frozenset({node_id})
        self._peers: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._joined = False

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Register in the store, read who else is there, and beat from now on."""
        await asyncio.to_thread(self.store.join_node, self.id, self.incarnation, self.url)
        self._joined = True
        await asyncio.to_thread(self._observe)
        self._task = asyncio.create_task(self._beat_forever(), name="tiffin-node")
        logger.info(
            "node %s joined the store (lease %.1fs; live: %s)", self.id, self.lease_s, ", ".join(sorted(self._live))
        )

    async def stop(self) -> None:
        """Stop beating and leave: the other nodes take this one's deployments and jobs over at once."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._joined:
            self._joined = False
            try:
                await asyncio.to_thread(self.store.leave_node, self.id, self.incarnation)
            except Exception as exc:  # the store may be the reason we stop; the others will see no beat
                logger.warning("node %s could not leave the store: %s", self.id, exc)

    # --- what the others ask -------------------------------------------------------------------------

    def live(self) -> frozenset[str]:
        """The nodes alive at the last heartbeat, this one included."""
        return self._live

    def peers(self) -> dict[str, str]:
        """The other live nodes' URLs (node id → URL)."""
        return dict(self._peers)

    def alone(self) -> bool:
        """No other node is alive."""
        return len(self._live) == 1

    def claim_deployments(self) -> set[tuple[str, str]]:
        """Take the deployments this node should run now, and return every (endpoint, name) it owns.

        Blocking (store reads and writes): call it from a worker thread.
        """
        owners = self.store.deployment_owners()
        taken = {row.id for row in self._claims.plan(owners, self._live, time.monotonic())
                 if self.store.take_deployment(row.id, row.owner, self.id)}  # fmt: skip
        for row in owners:
            if row.id in taken:
                previous = f" (node {row.owner} is gone)" if row.owner else ""
                logger.info("node %s now runs deployment %s/%s%s", self.id, row.endpoint_name, row.name, previous)
        return {(row.endpoint_name, row.name) for row in owners if row.owner == self.id or row.id in taken}

    # --- the heartbeat -------------------------------------------------------------------------------

    async def _beat_forever(self) -> None:
        interval = self.lease_s / 5
        while True:
            await asyncio.sleep(interval)
            try:
                changed = await asyncio.to_thread(self._beat)
            except Exception as exc:  # the store is down: try again; the others will see a still beat
                logger.warning("node %s could not write its heartbeat: %s", self.id, exc)
                continue
            if changed and self._on_change is not None:  # on the event loop: the callbacks are not thread-safe
                try:
                    self._on_change()
                except Exception:
                    logger.exception("reacting to a change of live nodes failed")

    def _beat(self) -> bool:
        if not self.store.beat_node(self.id, self.incarnation, self.url):
            # Our row is gone (a `leave` by a previous run racing us) or another server took our name.
            logger.warning("node %s: its row was missing or taken; registering again", self.id)
            self.store.join_node(self.id, self.incarnation, self.url)
        return self._observe()

    def _observe(self) -> bool:
        """Read the node rows; True when the live nodes or their URLs changed."""
        nodes = self.store.list_nodes()
        live = self._liveness.observe(nodes, time.monotonic(), datetime.now(UTC))
        peers = {n.id: n.url for n in nodes if n.id in live and n.id != self.id and n.url}
        changed = live != self._live or peers != self._peers
        if live != self._live:
            gone, new = sorted(self._live - live), sorted(live - self._live)
            if gone:
                logger.warning("node(s) %s stopped beating; their work will be taken over", ", ".join(gone))
            if new:
                logger.info("node(s) %s joined", ", ".join(new))
        self._live, self._peers = live, peers
        return changed
