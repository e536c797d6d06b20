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

import hmac
from collections.abc import Callable, Mapping

from tiffin.asgi import Receive, Scope, Send, send_error
from tiffin.routing import Replica
from tiffin.store import DeploymentRecord

from .app import Gateway
from .forwarding import PEER_HEADER

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
        await self.gateway.forward_local(
            scope, receive, send, endpoint.decode("latin-1"), deployment.decode("latin-1"), target
        )
