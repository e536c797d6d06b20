"""HTTP probes of replica processes (Azure's liveness and readiness probes: ``GET /``), over TCP or a Unix socket."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from tiffin.routing import V2_MODEL_HEADER, V2_UPSTREAM_HEADER

__all__ = ["PROBE_PATH", "ProbeResult", "http_probe", "probe_session"]

PROBE_PATH = "/"
"""The route a tiffin replica answers ``200 Healthy`` on, as Azure's inference server does."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One probe's outcome; ``detail`` says what was seen (status code or error), for logs and status."""

    ok: bool
    detail: str
    v2_url: str | None = None
    """The replica's V2 model server, when it names one (see :data:`tiffin.routing.V2_UPSTREAM_HEADER`)."""
    v2_model: str | None = None


def probe_session() -> aiohttp.ClientSession:
    """A client session for probes.

    ``force_close``: each probe opens a new connection, as Kubernetes' probes do, so a probe tests that
    the replica still accepts connections and no idle keep-alive sockets to replicas pile up.
    ``trust_env=False`` (aiohttp's default, spelled out): proxy variables must never route loopback probes.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, limit=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


async def http_probe(session: aiohttp.ClientSession, base_url: str, timeout: float) -> ProbeResult:
    """``GET base_url + /`` within ``timeout`` seconds; any 2xx or 3xx status is a success (Kubernetes' rule).

    ``base_url`` is ``http://HOST:PORT`` (through ``session``) or ``unix:/path/to.sock`` (a replica
    started by the supervisor): aiohttp binds a Unix socket to a connector, so that probe gets a
    session of its own, closed with its one connection.
    """
    if base_url.startswith("unix:"):
        connector = aiohttp.UnixConnector(path=base_url.removeprefix("unix:"), force_close=True)
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as own:
            return await _get(own, "http://localhost", timeout)
    return await _get(session, base_url, timeout)


async def _get(session: aiohttp.ClientSession, base_url: str, timeout: float) -> ProbeResult:
    try:
        async with session.get(
            base_url + PROBE_PATH, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        ) as response:
            await response.read()
            return ProbeResult(
                200 <= response.status < 400,
                f"HTTP {response.status}",
                response.headers.get(V2_UPSTREAM_HEADER.decode()),
                response.headers.get(V2_MODEL_HEADER.decode()),
            )
    except TimeoutError:
        return ProbeResult(False, f"no answer within {timeout:g}s")
    except (aiohttp.ClientError, OSError) as exc:
        return ProbeResult(False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
