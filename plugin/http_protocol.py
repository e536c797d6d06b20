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

Replicas use :data:`HTTP_PROTOCOL` as it is: their only client is the gateway's pool. ``tiffin serve``,
whose port anyone may reach, uses :func:`public_protocol`: the same protocol under the limits of
:mod:`tiffin.connection_limits` (head size and time, body progress, connection count), applied from
uvicorn's own parser callbacks, so that parsing stays uvicorn's and httptools'.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from tiffin.asgi import send_error
from tiffin.connection_limits import ConnectionGuard, ConnectionLimits, response

__all__ = ["HTTP_PROTOCOL", "public_protocol"]

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

    class LimitedHttpToolsProtocol(CoalescingHttpToolsProtocol):
        """The public port's protocol: :class:`CoalescingHttpToolsProtocol` under a :class:`ConnectionGuard`.

        A connection is "in its head" from when it opens, and again from the end of each request body,
        until the parser has the next request's headers. Bytes received in the head are counted (431 past
        the cap, before httptools buffers more than one read beyond it); a deadline runs from the head's
        first byte (or the connection's opening) and, while a body is read, from its last progress (and its
        average rate). No
        deadline runs while the app works on a request or while uvicorn's keep-alive timer waits.
        """

        def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.guard = guard
            self.deadline = 0.0
            self._in_head = True
            self._head_begun = False
            self._head_bytes = 0
            self._done = False  # refused, evicted or timed out: nothing more it sends is parsed
            self._body_start = 0.0
            self._body_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if self.guard.admit(self, self.loop):
                self.deadline = self.loop.time() + self.guard.limits.header_timeout

        def connection_lost(self, exc: Exception | None) -> None:
            self.guard.forget(self)
            self.deadline = 0.0
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._in_head:
                super().data_received(data)
                return
            if self._done:
                return
            # Count the whole read: a head that ends inside it stops the count (on_headers_complete).
            self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and self._head_bytes > self.guard.limits.max_header_bytes:
                self._close_with(response(431, "Request Header Fields Too Large", self._too_large_message()))

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_begun = True
            if not self.deadline:
                self.deadline = self.loop.time() + self.guard.limits.header_timeout

        def on_headers_complete(self) -> None:
            self._in_head = self._head_begun = False
            self.guard.waiting.pop(self, None)  # a request in progress is never evicted
            self._body_start = self.loop.time()
            self._body_bytes = 0
            self.deadline = self._body_start + self.guard.limits.body_timeout
            cap = self.guard.limits.max_header_bytes
            # A head that came in one read with more after it was not caught by the count: measure it
            # (only then, so that ordinary requests pay nothing) and let uvicorn run a 431 instead of the app.
            if self._head_bytes > cap and self._head_size() > cap:
                app = self.app
                self.app = self._refuse_large_head
                try:
                    super().on_headers_complete()
                finally:
                    self.app = app
                return
            super().on_headers_complete()

        def _head_size(self) -> int:
            # The request line and headers as sent, give or take the spaces around each header's colon.
            return len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)

        async def _refuse_large_head(self, scope: Any, receive: Any, send: Any) -> None:
            await send_error(send, 431, self._too_large_message(), [(b"connection", b"close")])

        def on_body(self, body: bytes) -> None:
            limits = self.guard.limits
            self._body_bytes += len(body)
            # Due: body_timeout without progress, or (a trickle that keeps the connection busy for ever)
            # on average slower than min_body_rate once the first body_timeout has passed.
            self.deadline = min(
                self.loop.time() + limits.body_timeout,
                self._body_start + limits.body_timeout + self._body_bytes / limits.min_body_rate,
            )
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._in_head = True
            self._head_bytes = 0
            self.deadline = 0.0  # the app has the request; the next head's clock starts at its first byte
            super().on_message_complete()

        def on_response_complete(self) -> None:
            pipelined = bool(self.pipeline)  # then the next request starts now: not waiting
            super().on_response_complete()
            if not pipelined and not self.transport.is_closing() and self in self.guard.connections:
                self.guard.waiting[self] = None  # waits for its next request: newest in line for eviction

        # Called by ConnectionGuard.
        def expire(self) -> None:
            """The deadline passed: 408 (when a request was under way) and close."""
            self.deadline = 0.0
            if self.transport.is_closing():
                return
            limits = self.guard.limits
            if self._in_head:
                if not self._head_begun:  # nothing sent since connecting or the last answer: just close
                    self._close_with(b"")
                    return
                message = (
                    f"the request line and headers did not arrive within {limits.header_timeout:g} s; "
                    "send the whole request head at once"
                )
            elif self.flow.read_paused:  # the app is behind reading the body, not the client sending it
                self._body_start += limits.body_timeout  # nor is the time it paused the client's
                self.deadline = self.loop.time() + limits.body_timeout
                return
            else:
                message = (
                    f"the request body stopped arriving (nothing for {limits.body_timeout:g} s, or under "
                    f"{limits.min_body_rate:g} bytes/s on average); send it without pauses"
                )
            cycle = self.cycle
            started = cycle is not None and cycle.response_started
            if cycle is not None and not cycle.response_complete:
                # The app sees the client gone: its receive() returns http.disconnect, its send() nothing.
                cycle.disconnected = True
                cycle.message_event.set()
            self._close_with(b"" if started else response(408, "Request Timeout", message))

        def evict(self) -> None:
            """Closed to make room for a new connection: it was waiting longest between requests."""
            self.deadline = 0.0
            self._done = True
            if not self.transport.is_closing():
                self.transport.close()

        def refuse(self, body: bytes, *, linger: bool) -> None:
            """Over the cap with every connection busy: answer ``body`` (a 503) and close.

            Closing with the client's request unread would reset the connection, and the client could
            lose the 503 with it: when ``linger``, the answer is followed by a FIN and what the client
            sends is read and dropped for a second before the close.
            """
            if not linger or not self.transport.can_write_eof():
                self._close_with(body)
                return
            self._done = self._in_head = True
            self.transport.write(body)
            self.transport.write_eof()
            self.loop.call_later(1.0, self.transport.close)

        def _too_large_message(self) -> str:
            cap = self.guard.limits.max_header_bytes
            return f"the request line and headers are larger than {cap} bytes; send smaller headers"

        def _close_with(self, answer: bytes) -> None:
            self.guard.forget(self)
            self.deadline = 0.0
            self._done = self._in_head = True  # so data_received drops whatever still arrives
            if answer:
                self.transport.write(answer)
            self.transport.close()

    HTTP_PROTOCOL: Any = CoalescingHttpToolsProtocol

    def public_protocol(limits: ConnectionLimits) -> Any:
        """The ``http=`` of a public server's ``uvicorn.Config``: the limited protocol under ``limits``."""
        return functools.partial(LimitedHttpToolsProtocol, guard=ConnectionGuard(limits))

else:  # pragma: no cover - a uvicorn we do not know
    HTTP_PROTOCOL = "httptools" if HttpToolsProtocol is not None else "auto"

    def public_protocol(limits: ConnectionLimits) -> Any:
        """Without uvicorn's httptools protocol there is nothing to build on: uvicorn's own (no limits)."""
        return HTTP_PROTOCOL
