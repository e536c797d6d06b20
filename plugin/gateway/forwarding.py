"""What the gateway forwards: which headers go on and come back, where a request goes, and its target.

Pure functions over ASGI scopes and :class:`~tiffin.routing.Replica`; the gateway (:mod:`tiffin.gateway.app`)
and the peer route (:mod:`tiffin.gateway.peers`) share them.
"""

from __future__ import annotations

from urllib.parse import quote

from tiffin.asgi import Scope
from tiffin.routing import Replica
from tiffin.v2 import alias_model

__all__ = [
    "ANSWERED_BY",
    "DROP_REQUEST",
    "DROP_RESPONSE",
    "PEER_HEADER",
    "forward_headers",
    "request_target",
    "upstream",
]

PEER_HEADER = b"x-tiffin-peer"
ANSWERED_BY = b"azureml-model-deployment"
"""The response header naming the deployment that answered (Azure's)."""
"""The credential of the peer route (:mod:`tiffin.gateway.peers`), added by a gateway towards another node."""

# Hop-by-hop headers (RFC 9110 7.6.1) and those the gateway sets itself are not forwarded.
DROP_REQUEST = frozenset(
    {
        b"host",
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"content-length",
        b"authorization",
        b"expect",
        PEER_HEADER,  # only the gateway adds it, towards a peer node
    }
)
# The deployment that answered is named by this gateway (a peer node's gateway named it already).
DROP_RESPONSE = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"content-length",
        b"date",
        b"server",
        b"azureml-model-deployment",
    }
)


def upstream(replica: Replica, target: bytes, aliases: tuple[str, str]) -> tuple[str, bytes]:
    """Where a request goes: V2 requests straight to the replica's own V2 server when it has one (Triton;
    one hop less), with the endpoint's or deployment's name standing for that server's default model."""
    if replica.v2_url is None or not target.startswith(b"/v2"):
        return replica.url, replica.prefix + target if replica.prefix else target
    if replica.v2_model is None:
        return replica.v2_url, target
    names = (aliases[0].encode(), aliases[1].encode())
    return replica.v2_url, alias_model(target, names, replica.v2_model.encode())


def forward_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in scope["headers"] if k not in DROP_REQUEST]


def request_target(scope: Scope, prefix: bytes, tail: str) -> bytes:
    """The request target for the replica: the path after ``prefix`` (``/endpoints/NAME``) as the client
    sent it, percent-encoding kept (the decoded path may hold spaces), plus the query string."""
    raw_path: bytes | None = scope.get("raw_path")
    rest = raw_path[len(prefix) :] if raw_path is not None and raw_path.startswith(prefix) else None
    if rest is not None and rest[:1] in (b"", b"/"):
        path = rest or b"/"
    else:  # no raw path, or the client escaped characters of the prefix itself: encode again
        path = quote(tail, safe="/:@!$&'()*+,;=-._~").encode("ascii")
    query = scope.get("query_string")
    return path + b"?" + query if query else path
