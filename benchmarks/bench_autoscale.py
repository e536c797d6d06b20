"""Online autoscale (issue 17): a step load on a ``target_concurrency`` deployment with real replicas.

A real ``tiffin serve`` on 127.0.0.1 and a deployment whose score.py sleeps 50 ms per request, with
``scale_settings: {type: target_concurrency, target_concurrency_per_instance: 2, min_instances: 1,
max_instances: 4, polling_interval: 2}`` (stable window 60 s, panic window 6 s, scale-down delay 30 s: the
defaults but the polling interval). In-process callers (httpx, asyncio) post back to back:

1. ``--base`` callers for ``--warmup`` seconds (one instance is enough);
2. 4x that (``--factor``) for ``--step`` seconds (the step: it should scale out within 2 polling intervals);
3. ``--base`` callers again for ``--after`` seconds (back in after the stable window and the delay).

Prints one line a second (time, phase, callers, ready instances from ``/metrics``, answers and failures in that
second), then the time from the step to the first scale-out and to the first new replica ready, the failed
requests overall, and the ``Scaled`` events with their reasons. One run.
Run: ``.venv/bin/python benchmarks/bench_autoscale.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import log

from tiffin.testing import serve_tiffin

SCORE = (
    "import time\n\n\ndef init():\n    pass\n\n\ndef run(raw_data):\n    time.sleep(0.05)\n    return {'ok': True}\n"
)
_READY = re.compile(r'^tiffin_deployment_ready_instances\{[^}]*deployment="blue"[^}]*\} (\S+)$', re.M)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--base", type=int, default=2, help="callers before and after the step")
    parser.add_argument("--factor", type=int, default=4, help="the step multiplies the callers by this")
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--step", type=float, default=60)
    parser.add_argument("--after", type=float, default=120)
    parser.add_argument("--polling-interval", type=int, default=2)
    parser.add_argument("--max-instances", type=int, default=4)
    return parser.parse_args()


async def run(args: argparse.Namespace, url: str, key: str, metrics: str, token: str) -> dict:
    counts = {"ok": 0, "failed": 0}
    per_second: list[dict] = []
    wanted = args.base
    stop = asyncio.Event()

    async def caller(number: int, client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            if number >= wanted:
                await asyncio.sleep(0.05)
                continue
            try:
                status = (await client.post(url, json={"data": [1]})).status_code
            except httpx.HTTPError:
                status = 0
            counts["ok" if status == 200 else "failed"] += 1

    phases = [("warmup", args.base, args.warmup), ("step", args.base * args.factor, args.step),
              ("after", args.base, args.after)]  # fmt: skip
    started = time.monotonic()
    step_at = started + args.warmup
    first_ready_more: float | None = None
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        callers = [asyncio.create_task(caller(i, client)) for i in range(args.base * args.factor)]
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=10) as admin:
            for phase, callers_now, seconds in phases:
                wanted = callers_now
                until = time.monotonic() + seconds
                while time.monotonic() < until:
                    before = dict(counts)
                    await asyncio.sleep(1)
                    found = _READY.search((await admin.get(metrics)).text)
                    ready = int(float(found.group(1))) if found else 0
                    now = time.monotonic()
                    if phase == "step" and ready > 1 and first_ready_more is None:
                        first_ready_more = now - step_at
                    line = {
                        "t": round(now - started, 1),
                        "phase": phase,
                        "callers": callers_now,
                        "ready": ready,
                        "ok": counts["ok"] - before["ok"],
                        "failed": counts["failed"] - before["failed"],
                    }
                    per_second.append(line)
                    print(" ".join(f"{k}={v}" for k, v in line.items()), flush=True)
        stop.set()
        await asyncio.gather(*callers)
    return {"counts": counts, "per_second": per_second, "first_ready_more": first_ready_more, "step_at": step_at}


def main() -> None:
    args = parse_args()
    with serve_tiffin() as server, tempfile.TemporaryDirectory(prefix="bench-autoscale-") as tmp:
        (Path(tmp) / "score.py").write_text(SCORE)
        client = server.client()
        client.online_endpoints.create_or_update({"name": "auto", "auth_mode": "key"})
        spec = {
            "name": "blue",
            "code_configuration": {"code": tmp, "scoring_script": "score.py"},
            "instance_count": 1,
            "scale_settings": {
                "type": "target_concurrency",
                "min_instances": 1,
                "max_instances": args.max_instances,
                "polling_interval": args.polling_interval,
                "target_concurrency_per_instance": 2,
            },
            "request_settings": {
                "max_concurrent_requests_per_instance": 2,
                "max_queue_wait_ms": 30000,
                "request_timeout_ms": 30000,
            },
            "readiness_probe": {"initial_delay": 1, "period": 1},
        }
        log("deploying (1 instance)")
        client.online_deployments.create_or_update(spec, "auto", timeout=300)
        client.online_endpoints.set_traffic("auto", {"blue": 100})
        key = client.online_endpoints.get_keys("auto")["primaryKey"]
        wall_step = time.time() + args.warmup
        result = asyncio.run(
            run(args, f"{server.url}/endpoints/auto/score", key, f"{server.url}/metrics", server.admin_token)
        )
        events = [e for e in client.online_deployments.get_events("blue", "auto") if e["name"] == "Scaled"]
    counts = result["counts"]
    total = counts["ok"] + counts["failed"]
    print("\n--- summary")
    print(f"requests: {total}, failed: {counts['failed']} ({100 * counts['failed'] / max(total, 1):.3f}%)")
    out = [e for e in events if _seconds(e["time"]) >= wall_step - 1]
    if out:
        print(f"first scale-out decision {(_seconds(out[0]['time']) - wall_step):.1f}s after the step")
    print(f"first new replica ready {result['first_ready_more']}s after the step")
    print(f"max ready instances: {max(line['ready'] for line in result['per_second'])}")
    for event in events:
        print(f"{event['time']} Scaled {event['message']}")


def _seconds(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


if __name__ == "__main__":
    main()
