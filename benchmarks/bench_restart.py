"""A deployment's only replica killed (SIGKILL) under load: failed requests and latency across the restart.

Two client threads send requests back to back to a one-replica deployment; after 2 s its replica is killed;
the run ends 2 s after the replacement answers. Side by side, one run each:

* ``max_queue_wait_ms=0``: nothing waits; what a request meets while no replica is ready is 503 at once
  (tiffin's behaviour before requests queued for a replacement);
* ``max_queue_wait_ms=30000``: requests queue for the replacement and are forwarded when it is ready.

    .venv/bin/python benchmarks/bench_restart.py

Loopback only; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from tiffin.specs import OnlineDeployment, load_spec
from tiffin.testing import command_lines, serve_tiffin

PLAIN = Path(__file__).resolve().parents[1] / "tests" / "deployments" / "plain" / "deployment.yml"
PROBES = ["readiness_probe.initial_delay=1", "readiness_probe.period=1"]


def _replica_pid(home: Path, endpoint: str) -> int:
    for pid, cmdline in command_lines():
        if str(home) in cmdline and f"/deployments/{endpoint}/" in cmdline:
            return pid
    raise RuntimeError(f"no replica of {endpoint}")


def run(server, endpoint: str, max_queue_wait_ms: int) -> dict[str, float]:
    client = server.client()
    client.online_endpoints.create_or_update({"name": endpoint, "auth_mode": "key"})
    overrides = [
        "name=only",
        *PROBES,
        f"request_settings.max_queue_wait_ms={max_queue_wait_ms}",
        "request_settings.request_timeout_ms=30000",
    ]
    spec = load_spec(PLAIN, OnlineDeployment, overrides=overrides).spec.to_yaml_dict()
    client.online_deployments.create_or_update(spec, endpoint, all_traffic=True)
    key = client.online_endpoints.get_keys(endpoint)["primaryKey"]
    url, headers = f"{server.url}/endpoints/{endpoint}/score", {"Authorization": f"Bearer {key}"}
    statuses: Counter[int] = Counter()
    latencies: list[float] = []  # of requests answered from the kill on
    killed_at = [float("inf")]
    stop = threading.Event()
    lock = threading.Lock()

    def load() -> None:
        with httpx.Client(headers=headers, timeout=60) as http:
            deadline = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    status = http.post(url, json={"data": [[1, 2]]}).status_code
                except httpx.HTTPError:
                    status = 0
                ended = time.monotonic()
                with lock:
                    if ended >= killed_at[0]:  # answered after the kill (it may have been sent just before)
                        statuses[status] += 1
                        latencies.append(ended - started)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(2)
    pid = _replica_pid(server.home, endpoint)
    killed_at[0] = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    recovered = float("nan")
    while time.monotonic() - killed_at[0] < 60:
        if httpx.post(url, json={"data": [[1, 2]]}, headers=headers, timeout=60).status_code == 200:
            recovered = time.monotonic() - killed_at[0]
            break
        time.sleep(0.05)
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join(60)
    lat = sorted(latencies)
    return {
        "requests": len(lat),
        "failed": sum(n for s, n in statuses.items() if s != 200),
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000 if lat else float("nan"),
        "max_ms": lat[-1] * 1000 if lat else float("nan"),
        "ready_again_s": recovered,
    }


def main() -> int:
    with serve_tiffin() as server:
        before = run(server, "restart-nowait", 0)
        after = run(server, "restart-queued", 30000)
    print(f"load average: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    columns = ("requests", "failed", "p50 ms", "p99 ms", "max ms", "ready s")
    print(f"{'answered after kill':<20}{columns[0]:>10}" + "".join(f"{c:>9}" for c in columns[1:]))
    for label, r in (("queue wait 0", before), ("queue wait 30000", after)):
        print(
            f"{label:<20}{r['requests']:>10.0f}{r['failed']:>8.0f}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['max_ms']:>9.1f}{r['ready_again_s']:>9.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
