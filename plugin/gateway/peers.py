"""Routing to replicas that run on another ``tiffin serve`` sharing the store.

Replicas listen on Unix sockets only their own server can reach (docs/security.md), so a gateway does not
call another node's replicas: it calls that node's **peer route**, ``/_tiffin/peer/ENDPOINT/DEPLOYMENT/…``,
which hands the request to one of the replicas *there*. The calling gateway has done everything else
already (key or token, traffic split, pinning, admission, mirroring); the peer only forwards, and never
on to a third node, so two nodes with different views of who runs what cannot bounce a request around.

The route takes one credential: ``x-tiffin-peer``, a secret every node derives from the store's shared
secret key (``TIFFIN_SECRET_KEY``), which any other caller lacks. Without it the route does not exist
(404, as for any unknown path).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable, Mapping
from dataclasses import replace
from urllib.parse import unquote

from tiffin.asgi import Receive, Scope, Send, send_error
from tiffin.errors import TiffinError, UnavailableError
from tiffin.routing import Replica
from tiffin.store import DeploymentRecord

from .app import Gateway
from .forwarding import PEER_HEADER
from .outcome import Outcome

__all__ = ["PEER_PREFIX", "PeerDirectory", "PeerRoute"]

PEER_PREFIX = "/_tiffin/peer/"
# A deployment another node runs is routed to while it serves there (Updating: its old replicas still do).
_SERVING = frozenset({"Succeeded", "Updating"})


class PeerDirectory:
    """The replicas of deployments other live nodes run, as this gateway's routing table lists them."""

    def __init__(self, me: str, peers: Callable[[], Mapping[str, str]], secret: str) -> None:
        self.me = me
        self._peers = peers
        self._header = ((PEER_HEADER, secret.encode()),)

    def replicas(self, record: DeploymentRecord) -> tuple[Replica, ...]:
        """One entry per instance the deployment asks for, when a live peer owns it and it serves there."""
        if record.owner is None or record.owner == self.me or record.state not in _SERVING:
            return ()
        url = self._peers().get(record.owner)
        if url is None:  # its node stopped beating: nobody serves it until a live node takes it over
            return ()
        prefix = f"{PEER_PREFIX}{record.endpoint_name}/{record.name}".encode()
        count = max(1, int(record.spec.get("instance_count") or 1))
        return tuple(
            Replica(id=f"{record.owner}:{record.endpoint_name}/{record.name}/{i}", url=url, prefix=prefix,
                    headers=self._header)
            for i in range(count)
        )  # fmt: skip


class PeerRoute:
    """ASGI app of ``/_tiffin/peer/ENDPOINT/DEPLOYMENT/PATH`` (see the module's docstring)."""

    def __init__(self, gateway: Gateway, secret: str) -> None:
        self.gateway = gateway
        self._secret = secret.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        given = next((value for key, value in scope["headers"] if key == PEER_HEADER), b"")
        if not hmac.compare_digest(given, self._secret):
            await send_error(send, 404, f"{scope['path']} is not served here; try /api/openapi.json")
            return
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        endpoint, _, rest = raw[len(PEER_PREFIX) :].partition(b"/")
        deployment, _, path = rest.partition(b"/")
        query: bytes = scope.get("query_string", b"")
        target = b"/" + path + (b"?" + query if query else b"")
        await forward_local(
            self.gateway, scope, receive, send, endpoint.decode("latin-1"), deployment.decode("latin-1"), target
        )


_PEER_TABLE_WAIT_S = 1.0
"""How long a request a peer routed here waits for this node's table to show the deployment's replica."""


async def forward_local(
    gateway: Gateway,
    scope: Scope,
    receive: Receive,
    send: Send,
    endpoint_name: str,
    deployment_name: str,
    target: bytes,
) -> None:
    """Serve a request a peer node's gateway already authenticated, admitted and routed to a deployment
    this node runs: to one of its replicas here, never on to another node (no loops between nodes)."""
    # The peer saw this node's replica in the store a moment before this node's own table may have the
    # deployment (its records re-read just after the replica became ready): wait that moment, bounded.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _PEER_TABLE_WAIT_S
    while True:
        endpoint = gateway.table.endpoints.get(endpoint_name)
        deployment = endpoint.deployments.get(deployment_name) if endpoint is not None else None
        local = tuple(r for r in deployment.replicas if not r.remote) if deployment is not None else ()
        left_ms = (deadline - loop.time()) * 1000
        if local or left_ms <= 0 or not await gateway._next_table(left_ms):
            break
    try:
        if endpoint is None or deployment is None or not local:
            raise UnavailableError(f"deployment '{deployment_name}' has no ready replica on this node")
        body = await gateway._read_body(receive)
        prefix = gateway._prefix_of(endpoint.name)
        path, _, query = target.partition(b"?")
        inner = {**scope, "raw_path": prefix + path, "query_string": query}
        tail = unquote(path.decode("latin-1"))
        # Counted by the node the caller reached, not here (its own stats and meters).
        only_here = replace(deployment, replicas=local)
        await gateway._forward(inner, send, endpoint, only_here, tail, body, gateway._peer_stats, Outcome())
    except TiffinError as exc:
        await send_error(send, exc.status_code, exc.message)
