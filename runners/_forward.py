"""Forward a scoring request, as bytes, to a model server the runner started (a BYOC server, tritonserver).

Both runners that front a server of their own pass requests through without decoding them: the same
pooled keep-alive HTTP/1.1 client the gateway uses, the request's headers less the hop-by-hop ones, and
the server's status, content type and headers back as they came.
"""

from __future__ import annotations

import asyncio

from tiffin.errors import RunnerError
from tiffin.http_client import ConnectFailed, UpstreamError, UpstreamPool
from tiffin.runners.protocol import ScoreRequest, ScoreResponse

__all__ = ["Forwarder"]

_HOP_BY_HOP = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"te"})
_NOT_PASSED_BACK = _HOP_BY_HOP | {b"date", b"server", b"content-type"}


class Forwarder:
    """Sends :class:`ScoreRequest` objects to ``base_url`` (``http://127.0.0.1:PORT``) over pooled connections.

    The pool is made on first use, so it belongs to the event loop that serves requests.
    """

    def __init__(self, base_url: str, *, what: str = "the deployment's server") -> None:
        self.base_url = base_url
        self.what = what
        self._pool = None

    async def forward(self, request: ScoreRequest, path: str) -> ScoreResponse:
        """``request`` sent to ``path`` (query string kept); the server's answer as a :class:`ScoreResponse`."""
        if self._pool is None:
            self._pool = UpstreamPool()
        target = path.encode() + (b"?" + request.query_string if request.query_string else b"")
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()
                   if k.encode("latin-1") not in _HOP_BY_HOP]  # fmt: skip
        try:
            response = await self._pool.request(self.base_url, request.method, target, headers, request.body)
            body = await response.read()
        except (TimeoutError, ConnectFailed, UpstreamError) as exc:
            raise RunnerError(f"{self.what} did not answer: {exc}") from exc
        content_type = "application/octet-stream"
        passed = []
        for name, value in response.headers:
            lowered = name.lower()
            if lowered == b"content-type":
                content_type = value.decode("latin-1")
            elif lowered not in _NOT_PASSED_BACK:
                passed.append((name.decode("latin-1"), value.decode("latin-1")))
        return ScoreResponse(body=body, status=response.status, content_type=content_type, headers=passed)

    async def answers_2xx(self, path: str, timeout: float) -> bool:
        """Whether ``GET path`` answers with a 2xx status within ``timeout`` seconds.

        Asked over the pool, on the event loop: a server that hangs (stopped, swapping) keeps this call
        waiting, never the loop and the requests it serves meanwhile.
        """
        if self._pool is None:
            self._pool = UpstreamPool()
        pool = self._pool
        response = None
        try:
            async with asyncio.timeout(timeout):
                response = await pool.request(self.base_url, "GET", path.encode(), [], b"")
                await response.read()
        except (TimeoutError, UpstreamError):
            if response is not None:
                pool.abandon(response)  # its body never came: the connection cannot be reused
            return False
        return 200 <= response.status < 300

    async def close(self) -> None:
        """Close the pooled connections."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
