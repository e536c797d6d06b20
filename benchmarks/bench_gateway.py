"""The gateway's cost: one deployment called directly vs through a tiffin endpoint, in one run.

1. Serves the quickstart deployment (Azure's model-1 score.py) with ``tiffin replica serve`` and loads it
   directly with wrk (16 connections).
2. Stops it, starts ``tiffin serve`` (fresh TIFFIN_HOME under .bench/), creates the endpoint and the same
   deployment with the CLI exactly as an Azure user would (``online-endpoint create``,
   ``online-deployment create --all-traffic``), and loads its scoring URI with the endpoint key.

3. The gateway three ways, each a fresh ``tiffin serve`` on the same home (the endpoint kept):

   * ``gateway``: as shipped: metrics and the traffic log on, no OTLP exporter (tracing off);
   * ``metrics off``: ``TIFFIN_METRICS=0 TIFFIN_TRAFFIC_LOG=0``;
   * ``no tracing code``: as ``gateway``, but its Gateway class compiled from tiffin/gateway/app.py with every
     ``# tracing:begin`` .. ``# tracing:end`` block deleted (benchmarks/no_tracing_code/sitecustomize.py does it
     at the server's start), i.e. the gateway as it would be had tracing never been written.

   Ratios: ``gateway / metrics off`` (the cost of metrics and the traffic log; issue 15 wants >= 0.97) and
   ``gateway / no tracing code`` (the cost of tracing when off; >= 0.99). Paths alternate round by round and
   the best round of each is compared; the load average is printed, as the machine may be shared.
   On a shared machine req/s moves with the neighbours' load: the gateway process's CPU time per request
   (``/proc/PID/stat`` around each timed run; median round) is printed too, and is the steadier measure.

Each path runs alone on the machine. The deployment is given
``request_settings.max_concurrent_requests_per_instance=16`` so that the gateway lets through the same 16
concurrent requests that wrk sends in the direct run (Azure's default of 1 would queue them: a different
experiment). Prints req/s, p50, p99 of both, their ratio and the latency the hop adds.

    .venv/bin/python benchmarks/bench_gateway.py [--duration 15] [--warmup 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    BENCH_DIR,
    LOOPBACK,
    Server,
    cli,
    ensure_wrk,
    free_port,
    local_predictions,
    log,
    max_abs_diff,
    prepare_workdir,
    run_main,
    run_wrk,
    score,
    write_wrk_script,
)

from tiffin.config import REPLICA_CPUS_ENV

BIN = Path(sys.executable).parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=15.0, help="timed seconds per path (default 15)")
    p.add_argument("--warmup", type=float, default=3.0, help="untimed seconds before each timed run (default 3)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument("--rounds", type=int, default=2, help="alternate direct/gateway this many times (default 2)")
    p.add_argument(
        "--pin",
        action="store_true",
        help="keep the replica on CPUs 1..N-1 and wrk (and the gateway) on CPU 0, in both paths:\n"
        "the replica then shares no CPU with the load generator or the hop, as on Azure",
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(
    wrk: str, url: str, script: Path, args: argparse.Namespace, label: str, pid: int | None = None
) -> dict[str, Any]:
    """Warm up, then one timed wrk run; with ``pid`` (the gateway's), also its CPU time per request, which a
    busy shared machine disturbs far less than req/s."""
    if args.warmup > 0:
        run_wrk(wrk, url, script, args.warmup, 1, args.connections)
    before = cpu_seconds(pid) if pid is not None else 0.0
    result = run_wrk(wrk, url, script, args.duration, 1, args.connections)
    answer = result.to_dict()
    cpu = ""
    if pid is not None and result.requests:
        answer["gateway_cpu_us_per_request"] = (cpu_seconds(pid) - before) / result.requests * 1e6
        cpu = f", gateway CPU {answer['gateway_cpu_us_per_request']:.1f} us/request"
    log(f"{label}: {result.requests_per_s:.1f} req/s, p50 {result.p50_ms} ms, p99 {result.p99_ms} ms{cpu}")
    if result.errors:
        raise RuntimeError(f"{label}: {result.errors} failed requests")
    return answer


VARIANTS: dict[str, dict[str, str]] = {
    "gateway": {},
    "metrics off": {"TIFFIN_METRICS": "0", "TIFFIN_TRAFFIC_LOG": "0"},
    "no tracing code": {
        "TIFFIN_BENCH_NO_TRACING_CODE": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parent / "no_tracing_code"),
    },
}


def _ready_to_score(env: dict[str, str], request: Path, timeout: float = 120.0) -> Any:
    """Invoke the endpoint until its (restarted) replica answers; the answer."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return json.loads(
                cli(env, "online-endpoint", "invoke", "-n", "my-endpoint", "--request-file", str(request))
            )
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    wrk = ensure_wrk()
    work = prepare_workdir(BENCH_DIR / "gateway-work")
    expected = local_predictions(work)
    deployment = work.root / "bench-deployment.yml"
    text = work.deployment.read_text()
    deployment.write_text(text + "request_settings:\n  max_concurrent_requests_per_instance: 16\n")
    home = BENCH_DIR / "gateway-home"
    subprocess.run(["rm", "-rf", str(home)], check=True)
    logs = BENCH_DIR / "logs"
    results: dict[str, list[dict[str, Any]]] = {"direct": [], **{name: [] for name in VARIANTS}}

    port = free_port()
    env = {**os.environ, "TIFFIN_HOME": str(home), "TIFFIN_URL": f"http://{LOOPBACK}:{port}"}
    for name in ("TIFFIN_ADMIN_TOKEN", "TIFFIN_STORE_URL", "TIFFIN_METRICS", "TIFFIN_TRAFFIC_LOG", "PYTHONPATH"):
        env.pop(name, None)
    for name in [k for k in env if k.startswith("OTEL_")]:
        env.pop(name)  # no exporter: tracing off in every arm
    serve_cmd = [str(BIN / "tiffin"), "serve", "--port", str(port)]
    if args.pin:
        cpus = os.cpu_count() or 1
        if cpus < 2:
            raise RuntimeError("--pin needs at least 2 CPUs")
        replica_cpus = f"1-{cpus - 1}"
        # This process and so wrk on CPU 0; the direct replica pins itself to the rest (the same
        # mechanism tiffin serve --replica-cpus gives its replicas), tiffin serve stays on CPU 0.
        os.sched_setaffinity(0, {0})
        env[REPLICA_CPUS_ENV] = replica_cpus
        serve_cmd += ["--replica-cpus", replica_cpus]
        log(f"pinned: wrk and the gateway on CPU 0, replicas on CPUs {replica_cpus}")
    direct_port = free_port()
    direct_cmd = [str(BIN / "tiffin"), "replica", "serve", "-f", str(deployment), "--port", str(direct_port)]
    created = False
    loads = [os.getloadavg()]

    for round_ in range(args.rounds):
        with Server("replica", direct_cmd, direct_port, logs / "direct-replica.log", env=env, cwd=work.root) as replica:
            replica.wait_ready()
            script = write_wrk_script(BENCH_DIR / "wrk" / "post.lua", work.request_body)
            got = score(replica, work.request_body)
            assert max_abs_diff(got, expected) < 1e-9, (got, expected)
            results["direct"].append(
                timed(wrk, replica.base_url + "/score", script, args, f"direct (round {round_ + 1})")
            )
        for variant, extra in VARIANTS.items():
            variant_env = {**env, **extra}
            log_name = "tiffin-serve-" + variant.replace(" ", "-") + ".log"
            with Server("tiffin-serve", serve_cmd, port, logs / log_name, env=variant_env, cwd=work.root) as server:
                server.wait_ready(path="/api/health")
                if not created:
                    cli(env, "online-endpoint", "create", "-f", str(work.root / "endpoint.yml"))
                    cli(env, "online-deployment", "create", "-f", str(deployment), "--all-traffic")
                    created = True
                got = _ready_to_score(env, work.root / "sample-request.json")
                assert max_abs_diff(got, expected) < 1e-9, (got, expected)
                if variant == "no tracing code" and "tracing code (" not in server.tail(200):
                    raise RuntimeError("the no-tracing-code arm did not strip the gateway; see " + log_name)
                scoring_uri = cli(
                    env, "online-endpoint", "show", "-n", "my-endpoint", "-o", "tsv", "--query", "scoring_uri"
                ).strip()
                key = cli(
                    env, "online-endpoint", "get-credentials", "-n", "my-endpoint", "-o", "tsv", "--query", "primaryKey"
                ).strip()
                script = write_wrk_script(
                    BENCH_DIR / "wrk" / "post_auth.lua", work.request_body, headers={"Authorization": f"Bearer {key}"}
                )
                label = f"{variant} (round {round_ + 1})"
                assert server.proc is not None
                results[variant].append(timed(wrk, scoring_uri, script, args, label, server.proc.pid))
        loads.append(os.getloadavg())

    best = {path: max(runs, key=lambda r: r["requests_per_s"]) for path, runs in results.items()}
    print()
    print(f"{'path':<28} | {'req/s':>9} | {'p50 ms':>8} | {'p99 ms':>8}")
    print(f"{'-' * 28}-+-{'-' * 9}-+-{'-' * 8}-+-{'-' * 8}")
    for path, runs in results.items():
        for i, r in enumerate(runs):
            label = f"{path} (round {i + 1})"
            print(f"{label:<28} | {r['requests_per_s']:>9.1f} | {r['p50_ms']:>8.2f} | {r['p99_ms']:>8.2f}")
    d, g = best["direct"], best["gateway"]
    ratios = {
        "gateway/direct": g["requests_per_s"] / d["requests_per_s"],
        "metrics on/metrics off": g["requests_per_s"] / best["metrics off"]["requests_per_s"],
        "tracing off/no tracing code": g["requests_per_s"] / best["no tracing code"]["requests_per_s"],
    }
    print()
    label = f"best of {args.rounds}" + (" (pinned)" if args.pin else "")
    print(f"{label}: gateway/direct req/s = {ratios['gateway/direct']:.2f}x; added p50 "
          f"{g['p50_ms'] - d['p50_ms']:+.2f} ms, added p99 {g['p99_ms'] - d['p99_ms']:+.2f} ms")  # fmt: skip
    print(f"{label}: metrics and traffic log on / off req/s = {ratios['metrics on/metrics off']:.3f}x (want >= 0.97)")
    print(f"{label}: tracing off / no tracing code req/s = {ratios['tracing off/no tracing code']:.3f}x (want >= 0.99)")
    # CPU per request: the median round of each arm (what a request costs the gateway process).
    cpu = {v: sorted(r["gateway_cpu_us_per_request"] for r in results[v])[len(results[v]) // 2] for v in VARIANTS}
    print("gateway CPU per request (median round): " + ", ".join(f"{v} {us:.1f} us" for v, us in cpu.items()))
    print(f"  throughput these allow, on vs off: metrics {cpu['metrics off'] / cpu['gateway']:.3f}x, "
          f"tracing {cpu['no tracing code'] / cpu['gateway']:.3f}x")  # fmt: skip
    print("load average (1, 5, 15 min) before and after each round: " + "; ".join(
        " ".join(f"{x:.2f}" for x in load) for load in loads))  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"runs": results, "ratios": ratios, "cpu_us": cpu, "load": loads}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    run_main(main)
