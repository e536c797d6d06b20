"""The public port's limits under attack: slowloris heads, connection floods, huge headers, slow bodies.

Each test runs against a real ``tiffin serve`` with a real online deployment and checks that scoring
requests sent during the attack all succeed, and that the server closes what the attacker holds. The
limits are set low through the environment (seconds, not the defaults) so each test stays short; the
deadlines asserted below are generous multiples of them, so a loaded machine does not fail them.

Every attack is bounded in connections, bytes and time, and only ever talks to 127.0.0.1. The numbers
measured (success rate, the server's RSS and open files) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tiffin.testing import serve_tiffin

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent / "deployments"
LIMIT_SECONDS = 2.0  # head, body and keep-alive timeouts of the servers under test
GIVE_UP = 25.0  # how long a test waits for the server to close what it should close
FAST_PROBES = ["readiness_probe.initial_delay=1", "readiness_probe.period=1"]


def _limits_env(max_connections: int) -> dict[str, str]:
    return {
        "TIFFIN_HEADER_TIMEOUT": str(LIMIT_SECONDS),
        "TIFFIN_BODY_TIMEOUT": str(LIMIT_SECONDS),
        "TIFFIN_MIN_BODY_RATE": "100",
        "TIFFIN_KEEP_ALIVE_TIMEOUT": str(LIMIT_SECONDS),
        "TIFFIN_MAX_CONNECTIONS": str(max_connections),
    }


def _start(max_connections: int):
    from tiffin.specs import OnlineDeployment, load_spec

    context = serve_tiffin(env=_limits_env(max_connections))
    server = context.__enter__()
    try:
        client = server.client()
        client.online_endpoints.create_or_update({"name": "limits", "auth_mode": "key"})
        spec = load_spec(HERE / "plain" / "deployment.yml", OnlineDeployment, overrides=["name=blue", *FAST_PROBES])
        client.online_deployments.create_or_update(spec.spec.to_yaml_dict(), "limits", all_traffic=True)
        key = client.online_endpoints.get_keys("limits")["primaryKey"]
    except BaseException:
        context.__exit__(None, None, None)
        raise
    url = urlsplit(server.url)
    return context, {
        "server": server,
        "pid": server.process.pid,
        "host": url.hostname,
        "port": url.port,
        "score_url": f"{server.url}/endpoints/limits/score",
        "headers": {"Authorization": f"Bearer {key}"},
        "key": key,
    }


def _running(max_connections: int):
    context, info = _start(max_connections=max_connections)
    try:
        yield info
    finally:
        context.__exit__(None, None, None)


@pytest.fixture(scope="module")
def target():
    yield from _running(2000)


@pytest.fixture(scope="module")
def capped():
    yield from _running(200)


def rss_mb(pid: int) -> float:
    """The process's resident memory (VmRSS) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Sampler:
    """Samples the server's RSS and open files every 50 ms while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss: list[float] = []
        self.fds: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.rss.append(rss_mb(self.pid))
                self.fds.append(open_files(self.pid))
            self._stop.wait(0.05)

    def __enter__(self) -> Sampler:
        self.rss.append(rss_mb(self.pid))
        self.fds.append(open_files(self.pid))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


async def score_while(info: dict[str, Any], done: asyncio.Event, *, fresh_connections: bool) -> dict[str, Any]:
    """Scoring requests one after another until ``done`` (at most 2000 or GIVE_UP seconds)."""
    limits = httpx.Limits(max_keepalive_connections=0) if fresh_connections else httpx.Limits()
    outcomes: dict[str, Any] = {"ok": 0, "failed": []}
    deadline = time.monotonic() + GIVE_UP
    async with httpx.AsyncClient(headers=info["headers"], timeout=10, limits=limits) as client:
        for _ in range(2000):
            if done.is_set() or time.monotonic() > deadline:
                break
            try:
                r = await client.post(info["score_url"], json={"data": [[1, 2]]})
                if r.status_code == 200:
                    outcomes["ok"] += 1
                else:
                    outcomes["failed"].append(f"{r.status_code} {r.text[:200]}")
            except httpx.HTTPError as exc:
                outcomes["failed"].append(repr(exc))
            await asyncio.sleep(0.02)
    return outcomes


def report(name: str, outcomes: dict[str, Any], sampler: Sampler, **extra: Any) -> None:
    total = outcomes["ok"] + len(outcomes["failed"])
    print(
        f"\nMEASURE {name}: scoring {outcomes['ok']}/{total} succeeded; server RSS {sampler.rss[0]:.1f} MiB before, "
        f"{max(sampler.rss):.1f} MiB peak; open files {sampler.fds[0]} before, {max(sampler.fds)} peak; {extra}"
    )


async def _wait_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    try:
        return await reader.read()
    except (ConnectionError, OSError):
        return b""


async def slowloris(
    info: dict[str, Any], count: int, *, hold: float, until_closed: bool
) -> tuple[dict[str, Any], list[float | None], float]:
    """``count`` connections each sending one byte of a never-ending head a second, for ``hold`` seconds (or
    until the server closed them all, with ``until_closed``), while scoring goes on. Returns the scoring
    outcomes, when each connection was closed (seconds after opening; None if never) and how long it lasted."""
    done = asyncio.Event()
    scoring = asyncio.create_task(score_while(info, done, fresh_connections=True))
    conns = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(info["host"], info["port"])
        writer.write(b"POST /endpoints/limits/score HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        conns.append((reader, writer))
    opened = time.monotonic()
    closed_after: list[float | None] = [None] * count
    waiters = [asyncio.create_task(_wait_closed(reader)) for reader, _ in conns]
    deadline = opened + hold
    while time.monotonic() < deadline and not (until_closed and all(w.done() for w in waiters)):
        for i, (waiter, (_, writer)) in enumerate(zip(waiters, conns, strict=True)):
            if waiter.done():
                if closed_after[i] is None:
                    closed_after[i] = time.monotonic() - opened
            elif not writer.is_closing():
                writer.write(b"X")  # one byte of a header that never ends, every second
        await asyncio.sleep(1.0)
    for i, waiter in enumerate(waiters):
        if waiter.done() and closed_after[i] is None:
            closed_after[i] = time.monotonic() - opened
        waiter.cancel()
    for _, writer in conns:
        writer.close()
    done.set()
    return await scoring, closed_after, time.monotonic() - opened


def test_slowloris_heads_are_closed_after_the_head_timeout_and_scoring_goes_on(target):
    count = 500

    def attack():
        return slowloris(target, count, hold=GIVE_UP, until_closed=True)

    with Sampler(target["pid"]) as sampler:
        outcomes, closed_after, held = asyncio.run(attack())
    closed = [t for t in closed_after if t is not None]
    report(
        "slowloris",
        outcomes,
        sampler,
        connections=count,
        closed=len(closed),
        last_closed_after_s=round(max(closed), 1) if closed else None,
        attack_s=round(held, 1),
    )
    assert len(closed) == count, f"{count - len(closed)} of {count} slowloris connections still open after {held:.0f}s"
    assert outcomes["failed"] == [], outcomes["failed"][:5]
    assert outcomes["ok"] > 0


def test_an_idle_connection_is_closed_after_the_timeouts(target):
    async def idle() -> tuple[float, float]:
        # Connected, nothing sent: the head timeout closes it.
        reader, writer = await asyncio.open_connection(target["host"], target["port"])
        start = time.monotonic()
        await asyncio.wait_for(_wait_closed(reader), GIVE_UP)
        silent = time.monotonic() - start
        writer.close()
        # One request answered, then idle on keep-alive: the keep-alive timeout closes it.
        reader, writer = await asyncio.open_connection(target["host"], target["port"])
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200"), head
        start = time.monotonic()
        await asyncio.wait_for(_wait_closed(reader), GIVE_UP)
        kept = time.monotonic() - start
        writer.close()
        return silent, kept

    silent, kept = asyncio.run(idle())
    print(f"\nMEASURE idle: silent connection closed after {silent:.1f}s, idle keep-alive after {kept:.1f}s")


def test_a_connection_flood_over_the_cap_keeps_scoring_and_open_files_bounded(capped):
    cap, flood = 200, 600

    async def attack() -> tuple[dict[str, Any], dict[str, Any], int]:
        done = asyncio.Event()
        fresh = asyncio.create_task(score_while(capped, done, fresh_connections=True))
        pooled = asyncio.create_task(score_while(capped, done, fresh_connections=False))
        conns = []
        for i in range(flood):
            try:
                reader, writer = await asyncio.open_connection(capped["host"], capped["port"])
            except OSError:
                continue
            if i % 2:
                writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # half of them start a head
            conns.append((reader, writer))
            if i % 50 == 49:
                await asyncio.sleep(0.1)
        waiters = [asyncio.create_task(_wait_closed(reader)) for reader, _ in conns]
        await asyncio.sleep(1.5)  # hold them, while scoring goes on
        closed = sum(w.done() for w in waiters)
        for waiter in waiters:
            waiter.cancel()
        for _, writer in conns:
            writer.close()
        done.set()
        return await fresh, await pooled, closed

    baseline = open_files(capped["pid"])
    with Sampler(capped["pid"]) as sampler:
        fresh, pooled, closed = asyncio.run(attack())
    both = {"ok": fresh["ok"] + pooled["ok"], "failed": fresh["failed"] + pooled["failed"]}
    report("connection flood", both, sampler, cap=cap, flood=flood, closed_by_server_during_attack=closed)
    assert max(sampler.fds) <= baseline + cap + 20, (baseline, max(sampler.fds))
    assert both["failed"] == [], both["failed"][:5]
    assert fresh["ok"] > 0 and pooled["ok"] > 0


def _send_huge_header(host: str, port: int, size: int, result: dict[str, Any]) -> None:
    """Send a request whose one header is ``size`` bytes long; note how much went out and what came back."""
    sent = 0
    with socket.create_connection((host, port), timeout=10) as sock:
        try:
            sock.sendall(b"GET /endpoints/limits/score HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
            chunk = b"a" * 65536
            while sent < size:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
        except OSError as exc:
            result["send_error"] = repr(exc)
        result["sent"] = sent
        try:
            result["answer"] = sock.recv(4096)
        except OSError as exc:
            result["answer"] = b""
            result["recv_error"] = repr(exc)


def test_huge_headers_are_refused_before_they_are_read_and_memory_stays_flat(target):
    size, senders = 16 * 1024 * 1024, 5
    results: list[dict[str, Any]] = [{} for _ in range(senders)]

    async def attack() -> dict[str, Any]:
        done = asyncio.Event()
        scoring = asyncio.create_task(score_while(target, done, fresh_connections=False))
        threads = [
            threading.Thread(target=_send_huge_header, args=(target["host"], target["port"], size, result))
            for result in results
        ]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        done.set()
        return await scoring

    with Sampler(target["pid"]) as sampler:
        outcomes = asyncio.run(attack())
    report("huge headers", outcomes, sampler, senders=senders, sent_mib=[r.get("sent", 0) >> 20 for r in results])
    for result in results:
        # Refused before the whole header was read: a 431, or the connection closed under the sender.
        assert result.get("sent", size) < size or result["answer"].startswith(b"HTTP/1.1 431"), result
        assert not result["answer"] or result["answer"].startswith(b"HTTP/1.1 431"), result["answer"][:200]
    assert max(sampler.rss) - sampler.rss[0] < 48, (sampler.rss[0], max(sampler.rss))
    assert outcomes["failed"] == [], outcomes["failed"][:5]


def test_a_header_over_the_cap_gets_431_and_one_under_it_is_served(target):
    with socket.create_connection((target["host"], target["port"]), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(4096):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b'"message"' in answer and b"header" in answer.lower()
    r = httpx.post(
        target["score_url"], json={"data": [[1, 2]]}, headers={**target["headers"], "X-Pad": "a" * 32_000}, timeout=10
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("where", ["gateway", "control plane"])
def test_a_stalled_body_is_answered_408(target, where):
    if where == "gateway":
        head = f"POST /endpoints/limits/score HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {target['key']}\r\n"
    else:
        token = target["server"].admin_token
        head = f"POST /api/online-endpoints HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
    request = (head + "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n").encode() + b'{"data": '

    async def stall() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection(target["host"], target["port"])
        writer.write(request)  # and then nothing more of the 1000 bytes promised
        start = time.monotonic()
        answer = await asyncio.wait_for(_wait_closed(reader), GIVE_UP)
        writer.close()
        return answer, time.monotonic() - start

    answer, waited = asyncio.run(stall())
    print(f"\nMEASURE slow body ({where}): answered after {waited:.1f}s: {answer[:40]!r}")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"message"' in answer


def test_a_trickling_body_is_answered_408_though_it_never_stops(target):
    head = (
        f"POST /endpoints/limits/score HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {target['key']}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )

    async def trickle() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection(target["host"], target["port"])
        writer.write(head.encode())
        start = time.monotonic()
        answer = asyncio.create_task(_wait_closed(reader))
        # One byte every half second: progress well within the body timeout, far under the minimum rate.
        while not answer.done() and time.monotonic() - start < GIVE_UP:
            if not writer.is_closing():
                writer.write(b" ")
            await asyncio.sleep(0.5)
        writer.close()
        return (await answer if answer.done() else b""), time.monotonic() - start

    answer, waited = asyncio.run(trickle())
    print(f"\nMEASURE trickling body: answered after {waited:.1f}s: {answer[:40]!r}")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_over_the_cap_with_every_connection_busy_a_new_one_gets_503_until_they_time_out(capped):
    cap = 200

    async def fill() -> tuple[bytes, float, int]:
        request = (
            f"POST /endpoints/limits/score HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {capped['key']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        ).encode()
        busy = []
        for _ in range(cap):  # each one a request under way, its body stalled: none may be evicted
            reader, writer = await asyncio.open_connection(capped["host"], capped["port"])
            writer.write(request)
            busy.append((reader, writer))
        await asyncio.sleep(0.3)
        reader, writer = await asyncio.open_connection(capped["host"], capped["port"])
        writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        refused = await asyncio.wait_for(_wait_closed(reader), GIVE_UP)
        writer.close()
        # The stalled bodies time out (408), which frees the slots: scoring works again.
        start = time.monotonic()
        answers = await asyncio.wait_for(asyncio.gather(*(_wait_closed(r) for r, _ in busy)), GIVE_UP)
        for _, w in busy:
            w.close()
        return refused, time.monotonic() - start, sum(a.startswith(b"HTTP/1.1 408") for a in answers)

    refused, freed_after, timed_out = asyncio.run(fill())
    print(f"\nMEASURE all busy: new connection got {refused[:30]!r}; {timed_out} 408s after {freed_after:.1f}s")
    assert refused.startswith(b"HTTP/1.1 503"), refused[:200]
    assert b"retry-after: 1" in refused.lower() and b'"message"' in refused
    assert timed_out == cap
    r = httpx.post(capped["score_url"], json={"data": [[1, 2]]}, headers=capped["headers"], timeout=10)
    assert r.status_code == 200, r.text


def test_limits_come_from_options_then_the_environment_then_defaults():
    from tiffin.connection_limits import ConnectionLimits, default_max_connections
    from tiffin.errors import TiffinError

    environ = {"TIFFIN_MAX_CONNECTIONS": "300", "TIFFIN_BODY_TIMEOUT": "2.5", "TIFFIN_MIN_BODY_RATE": "1e3"}
    limits = ConnectionLimits.from_environment(environ, open_files=1000, max_connections=50, header_timeout=None)
    assert limits == ConnectionLimits(max_connections=50, body_timeout=2.5, min_body_rate=1000)
    assert ConnectionLimits.from_environment({}, open_files=1000).max_connections == 800
    assert default_max_connections(10_000_000) == 65536
    for bad in ("0", "-1", "many"):
        with pytest.raises(TiffinError, match="TIFFIN_HEADER_TIMEOUT"):
            ConnectionLimits.from_environment({"TIFFIN_HEADER_TIMEOUT": bad})
