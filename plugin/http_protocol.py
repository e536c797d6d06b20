"""uvicorn's httptools protocol, writing a response's head and first body part in one ``write``.

uvicorn writes the status line and headers as soon as the app sends ``http.response.start``, and the body
separately: two ``send`` system calls per response. Profiled under load, those writes were the largest
single cost of both the gateway and a replica (about a fifth of their time). An ASGI server may buffer
the head until the first body message, so this protocol does: it holds ``http.response.start`` and lets
uvicorn produce both messages into one buffer, written at once. Everything else (parsing, keep-alive,
flow control, pipelining, errors) is uvicorn's own code.

It relies on two uvicorn internals, checked at import: ``HttpToolsProtocol.on_headers_complete`` creates
``self.cycle``, and ``RequestResponseCycle.send`` writes through ``self.transport``. Where either is
missing :data:`HTTP_PROTOCOL` falls back to plain ``"httptools"``.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["HTTP_PROTOCOL"]

# Pass HTTP_PROTOCOL as ``uvicorn.Config(http=HTTP_PROTOCOL)``.


class _Buffer:
    """Stands in for the transport while uvicorn writes the head and the first body part."""

    __slots__ = ("closing", "parts", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.parts: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def close(self) -> None:
        self.closing = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
except ImportError:  # pragma: no cover - httptools missing: let uvicorn choose
    HttpToolsProtocol = RequestResponseCycle = None


if HttpToolsProtocol is not None and hasattr(HttpToolsProtocol, "on_headers_complete"):

    class CoalescingCycle(RequestResponseCycle):  # type: ignore[misc, valid-type]
        """A request/response cycle that holds the response head until the first body part."""

        _held: dict[str, Any] | None = None

        async def send(self, message: Any) -> None:
            if message["type"] == "http.response.start" and not self.response_started and not self.disconnected:
                self._held = message
                return
            held = self._held
            if held is None:
                await RequestResponseCycle.send(self, message)
                return
            self._held = None
            transport = self.transport
            buffer = _Buffer(transport)
            self.transport = buffer
            try:
                await RequestResponseCycle.send(self, held)
                await RequestResponseCycle.send(self, message)
            finally:
                self.transport = transport
                if buffer.parts and not transport.is_closing():
                    transport.write(b"".join(buffer.parts))
                if buffer.closing:
                    transport.close()

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc, valid-type]
        """uvicorn's httptools protocol whose responses go out in as few writes as possible.

        Defined at module level so that uvicorn can pickle it for its worker processes.
        """

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            # The cycle's coroutine has not started yet (it is a task), so swapping its class here
            # changes which send() it will use; the subclass adds no state, so the layout is the same.
            cycle = self.cycle
            if cycle is not None and type(cycle) is RequestResponseCycle:
                cycle.__class__ = CoalescingCycle

    HTTP_PROTOCOL: Any = CoalescingHttpToolsProtocol
else:  # pragma: no cover - a uvicorn we do not know
    HTTP_PROTOCOL = "httptools" if HttpToolsProtocol is not None else "auto"
