"""The gateway's cost: one deployment called directly vs through a tiffin endpoint, in one run.

1. Serves the quickstart deployment (Azure's model-1 score.py) with ``tiffin replica serve`` and loads it
   directly with wrk (16 connections).
2. Stops it, starts ``tiffin serve`` (fresh TIFFIN_HOME under .bench/), creates the endpoint and the same
   deployment with the CLI exactly as an Azure user would (``online-endpoint create``,
   ``online-deployment create --all-traffic``), and loads its scoring URI with the endpoint key.

3. The gateway four ways, four ``tiffin serve`` side by side (a TIFFIN_HOME each, the same deployment):

   * ``gateway``: as shipped: metrics and the traffic log on, no OTLP exporter (tracing off);
   * ``metrics off``: ``TIFFIN_METRICS=0 TIFFIN_TRAFFIC_LOG=0``;
   * ``traffic log off``: metrics on, ``TIFFIN_TRAFFIC_LOG=0``;
   * ``no tracing code``: as ``gateway``, but its Gateway class compiled from tiffin/gateway/app.py and
     exchange.py with every ``# tracing:begin`` .. ``# tracing:end`` block deleted
     (benchmarks/no_tracing_code/sitecustomize.py does it at the server's start), i.e. the gateway as it would
     be had tracing never been written.

   They take turns, one timed wrk burst each per round (each arm first in turn), and each ratio is the median
   over rounds of two arms' bursts of the same round: ``traffic log off / metrics off`` (the cost of metrics;
   issue 15 wants >= 0.97), ``gateway / traffic log off`` (the traffic log's), ``gateway / metrics off`` (both)
   and ``gateway / no tracing code`` (the cost of tracing when off; >= 0.99; the two arms differ by a few
   ``is None`` tests, so this ratio also shows how far the machine's noise goes). On a shared machine req/s
   moves with the neighbours' load, so the gateway process's CPU time per request (``/proc/PID/stat`` around
   each burst) is compared too, and the load average printed.

Each burst runs alone (the other servers idle). The deployment is given
``request_settings.max_concurrent_requests_per_instance=16`` so that the gateway lets through the same 16
concurrent requests that wrk sends in the direct run (Azure's default of 1 would queue them: a different
experiment). Prints req/s, p50, p99 of both, their ratio and the latency the hop adds.

    .venv/bin/python benchmarks/bench_gateway.py [--duration 8] [--warmup 3] [--rounds 6] [--json PATH]
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
    p.add_argument("--duration", type=float, default=8.0, help="timed seconds per path and round (default 8)")
    p.add_argument("--warmup", type=float, default=3.0, help="untimed seconds before each timed run (default 3)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument("--rounds", type=int, default=6, help="rounds of the four gateways taking turns (default 6)")
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
    "traffic log off": {"TIFFIN_TRAFFIC_LOG": "0"},
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


def hot_path_costs() -> dict[str, float]:
    """What metrics and the traffic log add to one request, timed in this process (µs per call)."""
    import timeit

    from tiffin.gateway.outcome import Outcome, traffic_entry
    from tiffin.telemetry.meters import DeploymentMeter
    from tiffin.telemetry.traffic_log import TrafficLog, _Clock, format_entry

    meter, outcome, clock = DeploymentMeter("my-endpoint", "blue"), Outcome(), _Clock()
    request = [(b"host", b"127.0.0.1"), (b"authorization", b"Bearer k"), (b"content-type", b"application/json")]
    outcome.headers = [(b"content-type", b"application/json"), (b"x-request-id", b"0" * 36),
                       (b"x-ms-request-id", b"0" * 36), (b"azureml-model-deployment", b"blue")]  # fmt: skip
    scope = {"method": "POST", "path": "/endpoints/my-endpoint/score", "headers": request, "client": ("1", 2)}
    log = TrafficLog(BENCH_DIR / "hot-path-traffic.log", max_bytes=1 << 30, backups=0)  # never started: a queue
    entry = traffic_entry(scope, "my-endpoint", outcome, 0.003)

    def per_call(statement: Any) -> float:
        number = 100_000
        return min(timeit.repeat(statement, number=number, repeat=5)) / number * 1e6

    def queue_one() -> None:
        log.add(traffic_entry(scope, "my-endpoint", outcome, 0.003))
        log.pending.clear()

    return {
        "meter (request path)": per_call(lambda: (meter.waited(0.0), meter.answered(200, 1.0, 0.003, 58, 23))),
        "traffic log entry (request path)": per_call(queue_one),
        "traffic log line (writer thread)": per_call(lambda: format_entry(entry, clock)),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    wrk = ensure_wrk()
    work = prepare_workdir(BENCH_DIR / "gateway-work")
    expected = local_predictions(work)
    deployment = work.root / "bench-deployment.yml"
    text = work.deployment.read_text()
    deployment.write_text(text + "request_settings:\n  max_concurrent_requests_per_instance: 16\n")
    logs = BENCH_DIR / "logs"
    results: dict[str, list[dict[str, Any]]] = {"direct": [], **{name: [] for name in VARIANTS}}

    base = dict(os.environ)
    for name in ("TIFFIN_ADMIN_TOKEN", "TIFFIN_STORE_URL", "TIFFIN_METRICS", "TIFFIN_TRAFFIC_LOG", "PYTHONPATH"):
        base.pop(name, None)
    for name in [k for k in base if k.startswith("OTEL_")]:
        base.pop(name)  # no exporter: tracing off in every arm
    extra_args: list[str] = []
    if args.pin:
        cpus = os.cpu_count() or 1
        if cpus < 2:
            raise RuntimeError("--pin needs at least 2 CPUs")
        replica_cpus = f"1-{cpus - 1}"
        # This process and so wrk on CPU 0; the direct replica pins itself to the rest (the same
        # mechanism tiffin serve --replica-cpus gives its replicas), tiffin serve stays on CPU 0.
        os.sched_setaffinity(0, {0})
        base[REPLICA_CPUS_ENV] = replica_cpus
        extra_args = ["--replica-cpus", replica_cpus]
        log(f"pinned: wrk and the gateways on CPU 0, replicas on CPUs {replica_cpus}")
    loads = [os.getloadavg()]

    direct_port = free_port()
    direct_cmd = [str(BIN / "tiffin"), "replica", "serve", "-f", str(deployment), "--port", str(direct_port)]
    with Server("replica", direct_cmd, direct_port, logs / "direct-replica.log", env=base, cwd=work.root) as replica:
        replica.wait_ready()
        script = write_wrk_script(BENCH_DIR / "wrk" / "post.lua", work.request_body)
        got = score(replica, work.request_body)
        assert max_abs_diff(got, expected) < 1e-9, (got, expected)
        for round_ in range(args.rounds):
            results["direct"].append(timed(wrk, replica.base_url + "/score", script, args, f"direct ({round_ + 1})"))

    # The gateways run side by side (a home each) and take turns, round after round, so that each
    # comparison is between bursts a few seconds apart, under the same neighbours' load.
    servers: dict[str, Server] = {}
    targets: dict[str, tuple[str, Path]] = {}
    try:
        for variant, extra in VARIANTS.items():
            slug = variant.replace(" ", "-")
            home = BENCH_DIR / f"gateway-home-{slug}"
            subprocess.run(["rm", "-rf", str(home)], check=True)
            port = free_port()
            env = {**base, "TIFFIN_HOME": str(home), "TIFFIN_URL": f"http://{LOOPBACK}:{port}"}
            cmd = [str(BIN / "tiffin"), "serve", "--port", str(port), *extra_args]
            server = servers[variant] = Server(
                "tiffin-serve", cmd, port, logs / f"tiffin-serve-{slug}.log", env={**env, **extra}, cwd=work.root
            )
            server.start()
            server.wait_ready(path="/api/health")
            cli(env, "online-endpoint", "create", "-f", str(work.root / "endpoint.yml"))
            cli(env, "online-deployment", "create", "-f", str(deployment), "--all-traffic")
            got = _ready_to_score(env, work.root / "sample-request.json")
            assert max_abs_diff(got, expected) < 1e-9, (got, expected)
            if variant == "no tracing code" and "tracing code (" not in server.tail(200):
                raise RuntimeError(f"the no-tracing-code arm did not strip the gateway; see {server.log_path}")
            uri = cli(env, "online-endpoint", "show", "-n", "my-endpoint", "-o", "tsv", "--query", "scoring_uri")
            key = cli(
                env, "online-endpoint", "get-credentials", "-n", "my-endpoint", "-o", "tsv", "--query", "primaryKey"
            ).strip()
            auth_script = write_wrk_script(
                BENCH_DIR / "wrk" / f"post_auth_{slug}.lua",
                work.request_body,
                headers={"Authorization": f"Bearer {key}"},
            )
            targets[variant] = (uri.strip(), auth_script)
        names = list(VARIANTS)
        for round_ in range(args.rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]  # each arm goes first in turn
            for variant in order:
                server = servers[variant]
                assert server.proc is not None
                uri, auth_script = targets[variant]
                label = f"{variant} ({round_ + 1})"
                results[variant].append(timed(wrk, uri, auth_script, args, label, server.proc.pid))
            loads.append(os.getloadavg())
    finally:
        for server in servers.values():
            server.stop()  # also on failure: never leave a server behind

    print()
    print(f"{'path':<28} | {'req/s':>9} | {'p50 ms':>8} | {'p99 ms':>8} | {'gw CPU us/req':>13}")
    print(f"{'-' * 28}-+-{'-' * 9}-+-{'-' * 8}-+-{'-' * 8}-+-{'-' * 13}")
    for path, runs in results.items():
        for i, r in enumerate(runs):
            label = f"{path} ({i + 1})"
            cpu_us = r.get("gateway_cpu_us_per_request")
            cpu_text = f"{cpu_us:>13.1f}" if cpu_us is not None else f"{'':>13}"
            print(f"{label:<28} | {r['requests_per_s']:>9.1f} | {r['p50_ms']:>8.2f} | {r['p99_ms']:>8.2f} | {cpu_text}")

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        middle = len(ordered) // 2
        return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2

    def paired(a: str, b: str, key: str) -> float:
        """The median over rounds of arm a's value over arm b's in the same round."""
        return median([x[key] / y[key] for x, y in zip(results[a], results[b], strict=True)])

    d, g = results["direct"], results["gateway"]
    ratios = {
        "gateway/direct": median([r["requests_per_s"] for r in g]) / median([r["requests_per_s"] for r in d]),
        "metrics on/metrics off": paired("traffic log off", "metrics off", "requests_per_s"),
        "traffic log on/off": paired("gateway", "traffic log off", "requests_per_s"),
        "metrics and traffic log on/off": paired("gateway", "metrics off", "requests_per_s"),
        "tracing off/no tracing code": paired("gateway", "no tracing code", "requests_per_s"),
        "metrics on/off by CPU": 1 / paired("traffic log off", "metrics off", "gateway_cpu_us_per_request"),
        "traffic log on/off by CPU": 1 / paired("gateway", "traffic log off", "gateway_cpu_us_per_request"),
        "tracing off/no code by CPU": 1 / paired("gateway", "no tracing code", "gateway_cpu_us_per_request"),
    }
    print()
    label = f"median of {args.rounds} rounds" + (" (pinned)" if args.pin else "")
    print(f"{label}: gateway/direct req/s = {ratios['gateway/direct']:.2f}x")
    print(f"{label}, paired by round (want >= 0.97 and >= 0.99):")
    print(f"  metrics on / off (traffic log off): req/s {ratios['metrics on/metrics off']:.3f}x, "
          f"by gateway CPU per request {ratios['metrics on/off by CPU']:.3f}x")  # fmt: skip
    print(f"  traffic log on / off (metrics on):  req/s {ratios['traffic log on/off']:.3f}x, "
          f"by gateway CPU per request {ratios['traffic log on/off by CPU']:.3f}x")  # fmt: skip
    print(f"  metrics and traffic log on / off:   req/s {ratios['metrics and traffic log on/off']:.3f}x")
    print(f"  tracing off / no tracing code:      req/s {ratios['tracing off/no tracing code']:.3f}x, "
          f"by gateway CPU per request {ratios['tracing off/no code by CPU']:.3f}x")  # fmt: skip
    costs = hot_path_costs()
    print("per request, timed in-process: " + ", ".join(f"{k} {v:.2f} us" for k, v in costs.items()))
    print("load average (1, 5, 15 min) at the start and after each round: " + "; ".join(
        " ".join(f"{x:.2f}" for x in load) for load in loads))  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"runs": results, "ratios": ratios, "hot_path_us": costs, "load": loads}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    run_main(main)
