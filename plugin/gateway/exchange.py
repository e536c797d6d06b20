"""The gateway's calls to replicas: choose one, send the request, stream the answer back.

:class:`Forwarding` holds the gateway's part from "a slot of this deployment is ours" to "the caller has its
answer": pick a replica (power of two choices, skipping one that just refused a connection), send the body
over the pooled connection, retry once elsewhere when the connection was refused (the request never ran),
408 past the deployment's request timeout, 502 when the replica broke off, and the answer sent on, buffered
or streamed, with ``azureml-model-deployment`` naming who answered. :class:`~tiffin.gateway.app.Gateway` is
one; the peer route and mirror copies (:mod:`tiffin.gateway.peers`, :mod:`tiffin.gateway.side`) call it too.

Like app.py, its tracing code is between ``# tracing:begin`` and ``# tracing:end`` markers, which
benchmarks/bench_gateway.py's "no tracing code" arm deletes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from tiffin.asgi import Scope, Send, send_error
from tiffin.errors import RequestTimeoutError, UnavailableError
from tiffin.gateway.forwarding import ANSWERED_BY, DROP_RESPONSE, forward_headers, request_target, upstream
from tiffin.gateway.outcome import Outcome
from tiffin.gateway.stats import EndpointStats
from tiffin.http_client import ConnectFailed, UpstreamError, UpstreamPool, UpstreamResponse
from tiffin.routing import DeploymentRoute, EndpointRoute, Replica, pick_replica

__all__ = ["Forwarding", "Unreachable"]

logger = logging.getLogger("tiffin.gateway")

_STREAM_ABOVE = 1 << 20  # responses larger than this (or of unknown size) are streamed, not buffered
_DOWN_FOR_S = 1.0  # a replica that refused a connection is skipped this long (the supervisor decides the rest)


class Unreachable(UnavailableError):
    """503: no replica could be connected to, so the request was not delivered (safe to send again)."""


class Forwarding:
    """The gateway's forwarding to replicas (a mixin: the state is the gateway's, made in its ``__init__``)."""

    prefix: str
    _rng: random.Random
    _pool: UpstreamPool
    _in_flight: dict[str, int]
    """Requests in flight per replica id (what :func:`pick_replica` compares)."""
    _down_until: dict[str, float]
    """Replica id → monotonic time until which it is skipped (it refused a connection)."""

    def _prefix_of(self, name: str) -> bytes:
        return f"{self.prefix}/{name}".encode()

    def _choose(self, deployment: DeploymentRoute, avoid: Replica | None = None) -> Replica | None:
        replicas = deployment.replicas
        if len(replicas) == 1 and avoid is None and not self._down_until:
            return replicas[0]  # the common case, without a clock read or a list
        now = time.monotonic()
        down = self._down_until
        for replica_id in [k for k, until in down.items() if until <= now]:
            del down[replica_id]  # served its time: back on the fast path once all have
        candidates = [r for r in replicas if r is not avoid and r.id not in down]
        if not candidates:
            return None
        rng = self._rng
        return pick_replica(candidates, self._in_flight, rng.getrandbits(16), rng.getrandbits(16))

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        endpoint: EndpointRoute,
        deployment: DeploymentRoute,
        tail: str,
        body: bytes,
        stats: EndpointStats,
        outcome: Outcome,
    ) -> None:
        headers = forward_headers(scope)
        target = request_target(scope, self._prefix_of(endpoint.name), tail)
        replica = self._choose(deployment)
        if replica is None:
            raise Unreachable(f"no replica of deployment '{deployment.name}' answers right now; retry shortly")
        timeout_s = deployment.request_timeout_ms / 1000
        method = scope["method"]
        aliases = (endpoint.name, deployment.name)
        try:
            try:
                url, path = upstream(replica, target, aliases)
                status = await self._exchange(
                    send, replica, url, method, path, headers, body, deployment, timeout_s, outcome
                )
            except ConnectFailed:
                # Never reached the replica, so retrying cannot run the request twice: once, elsewhere.
                retry = self._choose(deployment, avoid=replica) or replica
                url, path = upstream(retry, target, aliases)
                status = await self._exchange(
                    send, retry, url, method, path, headers, body, deployment, timeout_s, outcome
                )
        except TimeoutError:
            raise RequestTimeoutError(
                f"deployment '{deployment.name}' did not answer within request_timeout_ms "
                f"({deployment.request_timeout_ms} ms)"
            ) from None
        except ConnectFailed as exc:
            raise Unreachable(f"deployment '{deployment.name}' could not be reached: {exc}") from None
        except UpstreamError as exc:
            stats.rejected[502] += 1
            outcome.status = 502
            await send_error(send, 502, f"deployment '{deployment.name}' failed to answer: {exc}")
            return
        outcome.status = status
        stats.answered(deployment.name, status)

    async def _exchange(
        self,
        send: Send,
        replica: Replica,
        url: str,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        deployment: DeploymentRoute,
        timeout_s: float,
        outcome: Outcome,
    ) -> int:
        """One request to one replica (at ``url``: the replica, or its own V2 server); returns the status sent
        to the client."""
        in_flight = self._in_flight
        in_flight[replica.id] = in_flight.get(replica.id, 0) + 1
        response: UpstreamResponse | None = None
        # tracing:begin
        if outcome.trace is not None:
            headers = outcome.trace.upstream(headers, replica, deployment.name)
        # tracing:end
        try:
            async with asyncio.timeout(timeout_s):
                try:
                    extra = replica.headers
                    response = await self._pool.request(
                        url, method, target, [*headers, *extra] if extra else headers, body
                    )
                except ConnectFailed:
                    self._down_until[replica.id] = time.monotonic() + _DOWN_FOR_S
                    raise
                length = response.content_length
                data = await response.read() if length is not None and length <= _STREAM_ABOVE else None
        except BaseException:
            if response is not None:
                self._pool.abandon(response)
            raise
        finally:
            in_flight[replica.id] -= 1
        status = response.status
        # tracing:begin
        if outcome.trace is not None:
            outcome.trace.upstream_done(status)
        # tracing:end
        out_headers = [(k, v) for k, v in response.headers if k.lower() not in DROP_RESPONSE]
        out_headers.append((ANSWERED_BY, deployment.name.encode()))
        outcome.headers = out_headers
        if data is not None:
            outcome.bytes_out = len(data)
            out_headers.append((b"content-length", b"%d" % len(data)))
            await send({"type": "http.response.start", "status": status, "headers": out_headers})
            await send({"type": "http.response.body", "body": data})
            return status
        # Large or unsized: stream it. Once headers are out, a failure can only cut the body short.
        await send({"type": "http.response.start", "status": status, "headers": out_headers})
        try:
            async for chunk in response.iter_chunks():
                outcome.bytes_out += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            logger.warning("response of deployment '%s' broke off: %s", deployment.name, exc)
            self._pool.abandon(response)
            return status
        except BaseException:
            self._pool.abandon(response)
            raise
        await send({"type": "http.response.body", "body": b""})
        return status
