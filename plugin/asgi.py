"""ASGI type aliases and the two ways tiffin's lean apps answer: bytes, or a ``{"message": ...}`` error.

Shared by the replica app, the gateway and ``tiffin serve``'s dispatcher, which speak raw ASGI on purpose
(they are the hot path; docs/performance.md has the figures).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

# typing's generics, not builtins' and collections.abc's: these aliases are subscripted at run time, and a replica
# in a deployment's environment may run on Python 3.8 (tiffin.environments.runtime).
from typing import Any, Awaitable, Callable, Dict  # noqa: UP035

__all__ = ["JSON", "Receive", "Scope", "Send", "send_bytes", "send_error"]

Scope = Dict[str, Any]  # noqa: UP006
Receive = Callable[[], Awaitable[Dict[str, Any]]]  # noqa: UP006
Send = Callable[[Dict[str, Any]], Awaitable[None]]  # noqa: UP006

JSON = b"application/json"


async def send_bytes(
    send: Send, status: int, body: bytes, content_type: bytes = JSON, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    """A complete response: status, content type and length, extra headers, body."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body)), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, status: int, message: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """``{"message": message}`` with ``status``: every error tiffin answers has this shape."""
    await send_bytes(send, status, json.dumps({"message": message}).encode(), JSON, headers)
