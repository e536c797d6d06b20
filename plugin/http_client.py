"""A lean HTTP/1.1 client for loopback hops: pooled keep-alive connections, bytes in, bytes out.

The gateway sends requests to replicas with it, and runners that front a server of their own (a BYOC
server, tritonserver) send requests and health checks to that server with it; so it lives here, beside
neither of them.

Why not aiohttp: profiled under load, aiohttp's client spent more of the gateway's time building request
objects and header multidicts than moving bytes, and the gateway shares two cores with the replica it
feeds. This client writes each request in one ``transport.write`` (the request line, the caller's header
bytes as they came, the body) and parses answers with ``httptools`` (the parser uvicorn uses), handing
back the status, the raw header pairs and the body without decoding anything.

Scope, on purpose: plain HTTP/1.1 to loopback replicas that speak it correctly (uvicorn). No TLS, no
redirects, no proxies, no 1xx handling beyond ignoring ``100 Continue`` (we never send ``Expect``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

__all__ = ["ConnectFailed", "UpstreamError", "UpstreamPool", "UpstreamResponse"]


class UpstreamError(Exception):
    """The replica closed the connection or sent a malformed answer."""


class ConnectFailed(UpstreamError):
    """The request never reached the replica: connecting failed, or a pooled connection was found closed
    before the request was written. Retrying elsewhere cannot run the request twice."""


@dataclass(eq=False)
class UpstreamResponse:
    """An answer being received: status and headers are known, the body may still be arriving."""

    status: int
    headers: list[tuple[bytes, bytes]]
    content_length: int | None
    _conn: _Connection = field(repr=False)

    async def read(self) -> bytes:
        """The whole body."""
        conn = self._conn
        await conn.complete
        return b"".join(conn.chunks)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body in the pieces it arrives in."""
        conn = self._conn
        while True:
            while conn.chunks:
                yield conn.chunks.popleft()
            if conn.complete.done():
                conn.complete.result()  # raises if the connection broke mid-body
                return
            conn.more.clear()
            if not conn.chunks and not conn.complete.done():
                await conn.more.wait()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; carries one request at a time."""

    def __init__(self, pool: _HostPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        loop = asyncio.get_running_loop()
        self.head: asyncio.Future[UpstreamResponse] = loop.create_future()
        self.complete: asyncio.Future[None] = loop.create_future()
        self.chunks: deque[bytes] = deque()
        self.more = asyncio.Event()
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.busy = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed response from replica: {exc}"))
            self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.busy:
            self._fail(UpstreamError("the replica closed the connection before answering in full"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status == 100:
            self.headers = []
            return
        self.keep_alive = self.parser.should_keep_alive()
        length = None
        for name, value in self.headers:
            if len(name) == 14 and name.lower() == b"content-length":
                length = int(value)
        if not self.head.done():
            self.head.set_result(UpstreamResponse(status, self.headers, length, self))

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.more.set()

    def on_message_complete(self) -> None:
        if not self.complete.done():
            self.complete.set_result(None)
        self.more.set()

    # helpers
    def _fail(self, exc: Exception) -> None:
        for future in (self.head, self.complete):
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: the other future reports it to the caller
        self.more.set()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.pool.forget(self)


class _HostPool:
    """Idle connections to one replica: TCP (host, port) or a Unix socket (path)."""

    def __init__(self, host: str, port: int | None, path: str | None = None) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.idle: deque[_Connection] = deque()
        self.host_header = f"{host}:{port}".encode() if port else b"localhost"

    def forget(self, conn: _Connection) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    async def connection(self) -> tuple[_Connection, bool]:
        """An idle connection (reused=True) or a new one."""
        while self.idle:
            conn = self.idle.pop()  # most recently used first: warmest, least likely to be closed
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn, True
        loop = asyncio.get_running_loop()
        try:
            if self.path is not None:
                _, conn = await loop.create_unix_connection(lambda: _Connection(self), self.path)
            else:
                _, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError as exc:
            where = self.path or f"{self.host}:{self.port}"
            raise ConnectFailed(f"cannot connect to {where}: {exc.strerror or exc}") from exc
        return conn, False


class UpstreamPool:
    """Pooled keep-alive HTTP/1.1 connections to replicas, by base URL (``http://127.0.0.1:PORT`` or
    ``unix:/path/to.sock``)."""

    def __init__(self) -> None:
        self._hosts: dict[str, _HostPool] = {}

    def _host(self, base_url: str) -> _HostPool:
        pool = self._hosts.get(base_url)
        if pool is None:
            if base_url.startswith("unix:"):
                # Unix sockets skip the TCP stack on both sides of the hop: cheaper per request.
                pool = self._hosts[base_url] = _HostPool("localhost", None, base_url.removeprefix("unix:"))
                return pool
            parts = urlsplit(base_url)
            if parts.scheme != "http" or not parts.hostname or not parts.port:
                raise ValueError(f"replica URL must be http://HOST:PORT or unix:/PATH, not {base_url!r}")
            pool = self._hosts[base_url] = _HostPool(parts.hostname, parts.port)
        return pool

    async def request(
        self, base_url: str, method: str, target: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        """Send one request; return once the status and headers arrived (read the body from the response).

        ``target`` is the path and query (``/score?x=1``); ``headers`` are sent as given (the caller
        removes hop-by-hop ones); ``content-length`` and ``host`` are added here. The connection returns
        to the pool when the body has been received in full and both sides allow keep-alive.
        """
        host = self._host(base_url)
        conn, reused = await host.connection()
        parts = [method.encode(), b" ", target, b" HTTP/1.1\r\nhost: ", host.host_header]
        parts.append(b"\r\ncontent-length: %d\r\n" % len(body))
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        parts += (b"\r\n", body)
        conn._reset()
        conn.busy = True
        assert conn.transport is not None
        conn.transport.write(b"".join(parts))
        try:
            response = await conn.head
        except UpstreamError as exc:
            conn.busy = False
            conn._close()
            # A reused connection that died before answering most likely never saw the request (the
            # replica closed it while idle): report it as retryable.
            raise (ConnectFailed(str(exc)) if reused and not conn.chunks else exc) from None
        except BaseException:
            conn.busy = False
            conn._close()
            raise
        conn.complete.add_done_callback(lambda _: self._settle(host, conn))
        return response

    @staticmethod
    def _settle(host: _HostPool, conn: _Connection) -> None:
        conn.busy = False
        if conn.complete.cancelled() or conn.complete.exception() is not None or not conn.keep_alive:
            conn._close()
        elif not conn.closed:
            host.idle.append(conn)

    def abandon(self, response: UpstreamResponse) -> None:
        """Close the connection of a response whose body will not be read (timeout, client gone)."""
        conn = response._conn
        conn.busy = False
        conn._close()

    async def close(self) -> None:
        """Close every idle connection."""
        for host in self._hosts.values():
            while host.idle:
                host.idle.pop()._close()
        self._hosts.clear()
