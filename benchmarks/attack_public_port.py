"""The public port under attack at full scale: slowloris heads, huge headers, an idle-connection flood.

Starts ``tiffin serve`` with its default limits (fresh TIFFIN_HOME, a free loopback port) and one online
deployment, then runs each attack while scoring requests go on, and prints for each: how many scoring
requests succeeded, the server's RSS and open files before and at peak, and what happened to the
attackers' connections. ``tests/test_public_limits.py`` runs the same attacks at test size with short
limits; this reuses its helpers at the sizes of the security review (docs/security.md).

Every connection goes to 127.0.0.1 only, and every loop is bounded in count and time.

    .venv/bin/python benchmarks/attack_public_port.py [--slowloris 1000] [--hold 30] [--headers 10]
        [--header-mib 50] [--flood 19000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_public_limits as limits  # the tests' attack helpers

from tiffin.specs import OnlineDeployment, load_spec
from tiffin.testing import serve_tiffin


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slowloris", type=int, default=1000, help="slow-head connections (default 1000)")
    p.add_argument("--hold", type=float, default=30.0, help="seconds the slowloris attack lasts (default 30)")
    p.add_argument("--headers", type=int, default=10, help="clients sending one huge header each (default 10)")
    p.add_argument("--header-mib", type=int, default=50, help="size of each huge header in MiB (default 50)")
    p.add_argument("--flood", type=int, default=19000, help="idle connections opened (default 19000)")
    return p.parse_args()


async def slowloris(info: dict[str, Any], count: int, hold: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tests' slowloris attack held for ``hold`` seconds, whatever the server closes meanwhile."""
    outcomes, closed_after, _ = await limits.slowloris(info, count, hold=hold, until_closed=False)
    closed = [after for after in closed_after if after is not None]
    return outcomes, {"closed": len(closed), "last_closed_after_s": max(closed, default=None)}


async def huge_headers(info: dict[str, Any], count: int, size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``count`` clients at once, each sending an unfinished header of ``size`` bytes, scoring meanwhile."""
    done = asyncio.Event()
    scoring = asyncio.create_task(limits.score_while(info, done, fresh_connections=False))
    results: list[dict[str, Any]] = [{} for _ in range(count)]
    senders = [
        threading.Thread(target=limits._send_huge_header, args=(info["host"], info["port"], size, result))
        for result in results
    ]
    for sender in senders:
        sender.start()
    while any(sender.is_alive() for sender in senders):
        await asyncio.sleep(0.1)
    done.set()
    sent = [result.get("sent", 0) >> 20 for result in results]
    answers = sorted({result.get("answer", b"")[:12] for result in results})
    return await scoring, {"sent_mib": sent, "answers": answers}


async def flood(info: dict[str, Any], count: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``count`` idle connections opened as fast as they go, scoring on fresh and pooled connections."""
    done = asyncio.Event()
    fresh = asyncio.create_task(limits.score_while(info, done, fresh_connections=True))
    pooled = asyncio.create_task(limits.score_while(info, done, fresh_connections=False))
    connections, refused = [], 0
    for index in range(count):
        try:
            connections.append(await asyncio.open_connection(info["host"], info["port"]))
        except OSError:
            refused += 1
        if index % 200 == 199:
            await asyncio.sleep(0.01)
    waiters = [asyncio.create_task(limits._wait_closed(reader)) for reader, _ in connections]
    await asyncio.sleep(3)
    closed = sum(waiter.done() for waiter in waiters)
    for waiter in waiters:
        waiter.cancel()
    for _, writer in connections:
        writer.close()
    done.set()
    first, second = await fresh, await pooled
    both = {"ok": first["ok"] + second["ok"], "failed": first["failed"] + second["failed"]}
    return both, {"closed_by_server": closed, "connect_errors": refused, "failures": both["failed"][:3]}


def main() -> int:
    args = parse_args()
    # The attacker needs as many sockets as the flood opens.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with serve_tiffin(env={}) as server:
        client = server.client()
        client.online_endpoints.create_or_update({"name": "limits", "auth_mode": "key"})
        spec = load_spec(
            limits.HERE / "plain" / "deployment.yml", OnlineDeployment, overrides=["name=blue", *limits.FAST_PROBES]
        )
        client.online_deployments.create_or_update(spec.spec.to_yaml_dict(), "limits", all_traffic=True)
        key = client.online_endpoints.get_keys("limits")["primaryKey"]
        host, port = server.url.removeprefix("http://").split(":")
        info = {
            "server": server,
            "pid": server.process.pid,
            "host": host,
            "port": int(port),
            "score_url": f"{server.url}/endpoints/limits/score",
            "headers": {"Authorization": f"Bearer {key}"},
            "key": key,
        }
        print(f"tiffin serve pid {info['pid']} on {server.url}; limits: the defaults", flush=True)
        attacks = [
            (f"slowloris {args.slowloris} x {args.hold:g} s", lambda: slowloris(info, args.slowloris, args.hold)),
            (
                f"{args.headers} x {args.header_mib} MiB header",
                lambda: huge_headers(info, args.headers, args.header_mib << 20),
            ),
            (f"{args.flood} idle connections", lambda: flood(info, args.flood)),
        ]
        for name, attack in attacks:
            with limits.Sampler(info["pid"]) as sampler:
                outcomes, extra = asyncio.run(attack())
            limits.report(name, outcomes, sampler, **extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
