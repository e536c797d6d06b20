"""What an idle ``tiffin serve`` costs: CPU of the server process and of each replica, by number of endpoints.

For N = 1, 2, 4 (``--endpoints``) it starts a fresh ``tiffin serve`` (:func:`tiffin.testing.serve_tiffin`),
creates N endpoints with two small script deployments each (``tests/deployments/plain``, created with
``--no-wait``, then waited for ``Succeeded``), lets it settle, and reads the CPU time (utime + stime in
``/proc/PID/stat``, children not included) of the server and of every replica process over ``--seconds``
of idleness. Printed side by side: % of one core for the server, per replica (mean), and in all.

    .venv/bin/python benchmarks/bench_idle.py                 # N = 1, 2, 4; 20 s each
    .venv/bin/python benchmarks/bench_idle.py --endpoints 1 --seconds 10

Linux only (``/proc``). One run; the load average is printed with the figures, since other work on the
machine lands in none of the sampled processes but does slow them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tiffin.testing import serve_tiffin

REPO_ROOT = Path(__file__).resolve().parent.parent
PLAIN = REPO_ROOT / "tests" / "deployments" / "plain" / "deployment.yml"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its threads included, its children not), in seconds; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (replicas run in sessions of their own, but stay its children)."""
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                out.append(child)
                todo.append(child)
    return out


def cli(env: dict[str, str], *args: str) -> str:
    command = [sys.executable, "-m", "tiffin.cli", *args]
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True, timeout=120).stdout


def deploy(server, endpoints: int) -> None:
    env = server.env
    names = []
    for e in range(endpoints):
        endpoint = f"idle{e}"
        cli(env, "online-endpoint", "create", "-n", endpoint)
        for d in ("blue", "green"):
            cli(env, "online-deployment", "create", "-f", str(PLAIN), "-e", endpoint, "-n", d, "--no-wait")
            names.append((endpoint, d))
    deadline = time.monotonic() + 300
    for endpoint, d in names:
        while True:
            request = urllib.request.Request(
                f"{server.url}/api/online-endpoints/{endpoint}/deployments/{d}",
                headers={"Authorization": f"Bearer {server.admin_token}"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                state = json.load(response).get("provisioning_state")
            if state == "Succeeded":
                break
            if state == "Failed" or time.monotonic() > deadline:
                raise RuntimeError(f"{endpoint}/{d} is {state}; see {server.log_path}")
            time.sleep(0.2)


def measure(endpoints: int, seconds: float, settle: float) -> dict[str, float]:
    with serve_tiffin(timeout=120) as server:
        deploy(server, endpoints)
        time.sleep(settle)  # start-up work (probes tightened while starting, first reads) is over
        pid = server.process.pid
        replicas = descendants(pid)
        before = {p: cpu_seconds(p) for p in [pid, *replicas]}
        load_before = os.getloadavg()[0]
        start = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - start
        after = {p: cpu_seconds(p) for p in before}
        gone = [p for p in replicas if not Path(f"/proc/{p}").exists()]
        if gone:
            raise RuntimeError(f"replica processes {gone} exited while idle; see {server.log_path}")
    used = {p: 100.0 * (after[p] - before[p]) / elapsed for p in before}
    per_replica = [used[p] for p in replicas]
    return {
        "endpoints": endpoints,
        "replica_processes": len(replicas),
        "server_pct": used[pid],
        "replica_pct_mean": sum(per_replica) / max(1, len(per_replica)),
        "replicas_pct": sum(per_replica),
        "total_pct": sum(used.values()),
        "load": load_before,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=20.0, help="idle time sampled per server")
    parser.add_argument("--settle", type=float, default=5.0, help="idle time before sampling")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    rows = [measure(n, args.seconds, args.settle) for n in args.endpoints]
    print(f"idle tiffin serve, {args.seconds:.0f} s sampled, % of one core (utime+stime); 2 deployments per endpoint")
    print(f"{'endpoints':>9} | {'replicas':>8} | {'server %':>8} | {'per replica %':>13} | {'total %':>7} | load1")
    for row in rows:
        print(
            f"{row['endpoints']:>9} | {row['replica_processes']:>8} | {row['server_pct']:>8.2f} | "
            f"{row['replica_pct_mean']:>13.2f} | {row['total_pct']:>7.2f} | {row['load']:.2f}"
        )
    if len(rows) > 1:
        print(f"server % at N={rows[-1]['endpoints']} / N={rows[0]['endpoints']}: "
              f"{rows[-1]['server_pct'] / max(rows[0]['server_pct'], 1e-9):.2f}x")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
