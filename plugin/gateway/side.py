"""The gateway's side paths: mirror copies (fire and forget) and the endpoint's swagger document."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from tiffin.asgi import JSON, Scope, Send, send_bytes
from tiffin.errors import UnavailableError
from tiffin.gateway.forwarding import ANSWERED_BY, forward_headers, request_target, upstream
from tiffin.gateway.stats import EndpointStats
from tiffin.http_client import UpstreamResponse
from tiffin.rollout.agreement import MAX_COMPARED_BYTES, AgreementCheck
from tiffin.routing import DeploymentRoute, EndpointRoute

if TYPE_CHECKING:
    from tiffin.gateway.app import Gateway

__all__ = ["Captured", "describe", "send_mirror"]

logger = logging.getLogger("tiffin.gateway")


class Captured:
    """The primary's answer to a request whose mirror copy an agreement check compares: status, time, and the
    body when it is at most MAX_COMPARED_BYTES (``body`` None past it). Made only while a check is active."""

    __slots__ = ("check", "chunks", "deployment", "seconds", "send", "size", "status")

    def __init__(self, check: AgreementCheck, send: Send, deployment: str = "") -> None:
        self.check, self.send, self.deployment = check, send, deployment
        self.status, self.size, self.seconds = 500, 0, 0.0
        self.chunks: list[bytes] | None = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body" and self.chunks is not None:
            chunk = message.get("body", b"")
            self.size += len(chunk)
            if self.size > MAX_COMPARED_BYTES:
                self.chunks = None  # counts, not bodies: too large to keep for a comparison
            else:
                self.chunks.append(chunk)
        await self.send(message)

    def primary(self) -> tuple[int, bytes | None, float]:
        return self.status, b"".join(self.chunks) if self.chunks is not None else None, self.seconds


async def send_mirror(
    gateway: Gateway,
    scope: Scope,
    endpoint: EndpointRoute,
    name: str,
    tail: str,
    body: bytes,
    stats: EndpointStats,
    captured: Captured | None = None,
) -> None:
    """Send a copy to deployment ``name``; record the outcome (and, with ``captured``, compare the answers with
    the primary's for the agreement report); never raise."""
    counters = stats.mirror_of(name)
    meter = gateway.meters.get(endpoint.name, name) if gateway.meters is not None else None
    deployment = endpoint.deployments.get(name)
    admission = gateway._admissions.get((endpoint.name, name))
    replica = gateway._choose(deployment) if deployment is not None else None
    # A copy never waits: if the mirror deployment is busy or down, the copy is dropped and counted.
    if deployment is None or admission is None or replica is None or admission.in_flight >= admission.capacity:
        counters.dropped += 1
        if meter is not None:
            meter.mirror_dropped += 1
        return
    admission.take()
    counters.sent += 1
    if meter is not None:
        meter.mirror_sent += 1
    started = time.perf_counter()
    response: UpstreamResponse | None = None
    try:
        url, target = upstream(
            replica, request_target(scope, gateway._prefix_of(endpoint.name), tail), (endpoint.name, name)
        )
        async with asyncio.timeout(deployment.request_timeout_ms / 1000):
            headers = [*forward_headers(scope), *replica.headers]
            response = await gateway._pool.request(url, scope["method"], target, headers, body)
            answer = await response.read()
        counters.statuses[response.status] += 1
        elapsed = time.perf_counter() - started
        if captured is not None:
            captured.check.record(captured.primary(), response.status, answer, elapsed, captured.deployment)
        counters.latencies_ms.append(elapsed * 1000)
        if meter is not None:
            meter.mirrored(elapsed)
    except asyncio.CancelledError:
        if response is not None:
            gateway._pool.abandon(response)
        raise
    except Exception as exc:  # recorded, never propagated: a mirror must not affect anyone
        if response is not None:
            gateway._pool.abandon(response)
        counters.errors += 1
        if meter is not None:
            meter.mirrored(None)
        if captured is not None:
            captured.check.record(captured.primary(), None, None, time.perf_counter() - started, captured.deployment)
        logger.warning("mirror copy to deployment '%s' of '%s' failed: %r", name, endpoint.name, exc)
    finally:
        admission.release()


async def describe(
    gateway: Gateway, scope: Scope, send: Send, endpoint: EndpointRoute, deployment: DeploymentRoute
) -> None:
    """The answering deployment's swagger document, with paths under this endpoint's URL."""
    query = scope.get("query_string", b"").decode("latin-1")
    key = (gateway.table.generation, endpoint.name, deployment.name, query)
    cached = gateway._swagger_cache.get(key)
    if cached is None:
        replica = gateway._choose(deployment)
        if replica is None:
            raise UnavailableError(f"deployment '{deployment.name}' has no ready replica to describe it")
        target = b"/swagger.json" + (b"?" + query.encode("latin-1") if query else b"")
        async with asyncio.timeout(10):
            response = await gateway._pool.request(
                replica.url, "GET", replica.prefix + target, list(replica.headers), b""
            )
            raw = await response.read()
        if response.status != 200:
            await send_bytes(send, response.status, raw, JSON, [(ANSWERED_BY, deployment.name.encode())])
            return
        document = json.loads(raw)
        prefix = f"{gateway.prefix}/{endpoint.name}"
        document["paths"] = {prefix + p: v for p, v in document.get("paths", {}).items()}
        cached = gateway._swagger_cache[key] = json.dumps(document).encode()
    await send_bytes(send, 200, cached, JSON, [(ANSWERED_BY, deployment.name.encode())])
