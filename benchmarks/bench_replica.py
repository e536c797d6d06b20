"""Benchmark a tiffin script deployment against Microsoft's azmlinfsrv on the same score.py.

Both servers serve the quickstart (Azure's model-1 ``onlinescoring/score.py`` with a diabetes
Ridge model trained at run time) over the same HTTP contract (``GET /``, ``POST /score``). Each is
started alone (the other stopped, so they don't share the cores), checked to answer
``sample-request.json`` with the same predictions as the model itself (within ``--tolerance``),
warmed up, then loaded with ``wrk -t1 -c16`` for ``--duration`` seconds. Then, against tiffin
only, ``--memory-requests`` more requests are sent and the server's memory is read before and
after.

Usage: .venv/bin/python benchmarks/bench_replica.py [--duration 15] [--json out.json] ...
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from _harness import (
    BENCH_DIR,
    LOOPBACK,
    PeakSampler,
    Server,
    Workdir,
    WrkResult,
    cpu_busy_fraction,
    ensure_azmlinfsrv_venv,
    ensure_wrk,
    format_cmd,
    free_port,
    local_predictions,
    log,
    max_abs_diff,
    prepare_workdir,
    run_main,
    run_wrk,
    score,
    tree_memory,
    venv_versions,
    write_wrk_script,
    wrk_version,
)

DEFAULT_TIFFIN_CMD = "{tiffin} replica serve -f {deployment} --host {host} --port {port}"

# azmlinfsrv hard-codes its bind address (constants.DEFAULT_HOST = "0.0.0.0") and has no flag for
# it. This runs the very entry point of the `azmlinfsrv` console script with that one constant set
# to loopback; everything else (gunicorn, 1 sync worker, its Flask app) is unchanged.
AZML_LOOPBACK_SHIM = (
    "import sys, azureml_inference_server_http.amlserver as s; "
    f"s.DEFAULT_HOST = {LOOPBACK!r}; sys.argv[0] = 'azmlinfsrv'; sys.exit(s.run())"
)

SERVERS = ("azmlinfsrv", "tiffin", "bentoml")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated servers to run, in this order: azmlinfsrv, tiffin, bentoml",
    )
    p.add_argument("--duration", type=float, default=15.0, help="seconds of timed load per server")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of untimed load before timing")
    p.add_argument("--threads", type=int, default=1, help="wrk threads (-t)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (-c)")
    p.add_argument(
        "--wrk-timeout",
        type=float,
        default=10.0,
        help="wrk's per-request timeout in seconds (a slower request counts as an error)",
    )
    p.add_argument(
        "--memory-requests",
        type=int,
        default=100_000,
        help="requests of the memory run against tiffin (0 skips it)",
    )
    p.add_argument("--memory-timeout", type=float, default=600.0, help="upper bound in seconds on the memory run")
    p.add_argument(
        "--tiffin-cmd",
        default=DEFAULT_TIFFIN_CMD,
        help="command that serves the deployment (shell-quoted; fields: {tiffin} {python} "
        "{deployment} {workdir} {host} {port})",
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for a server's GET / to answer 200",
    )
    p.add_argument(
        "--azml-venv",
        type=Path,
        default=BENCH_DIR / "azmlinfsrv-venv",
        help="venv for azureml-inference-server-http (created when missing)",
    )
    p.add_argument(
        "--azml-bind-all",
        action="store_true",
        help="run the stock `azmlinfsrv` script, which binds 0.0.0.0, instead of the "
        "same entry point bound to 127.0.0.1",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=BENCH_DIR / "replica-work",
        help="where the example is copied and the model trained (replaced on each run)",
    )
    p.add_argument("--tolerance", type=float, default=1e-9, help="largest allowed difference between predictions")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.servers) - set(SERVERS)
    if unknown or not args.servers:
        p.error(f"--servers: unknown {sorted(unknown)}; pick from {SERVERS}")
    if args.duration <= 0 or args.warmup < 0 or args.memory_requests < 0:
        p.error("--duration must be > 0, --warmup and --memory-requests >= 0")
    return args


def azml_server(args: argparse.Namespace, work: Workdir, logs: Path) -> tuple[Server, dict[str, Any]]:
    """The azmlinfsrv server, as Azure runs it: ``azmlinfsrv --entry_script score.py`` + AZUREML_MODEL_DIR."""
    vpy = ensure_azmlinfsrv_venv(args.azml_venv)
    port = free_port()
    tail = ["--entry_script", str(work.entry_script), "--port", str(port)]
    if args.azml_bind_all:
        cmd, bind = [str(args.azml_venv / "bin" / "azmlinfsrv"), *tail], "0.0.0.0"
    else:
        cmd, bind = [str(vpy), "-c", AZML_LOOPBACK_SHIM, *tail], LOOPBACK
    env = {
        **os.environ,
        "AZUREML_MODEL_DIR": str(work.model_root),
        "PATH": f"{args.azml_venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(args.azml_venv),
    }
    env.pop("PYTHONPATH", None)
    versions = venv_versions(vpy, ["azureml-inference-server-http", "gunicorn", "flask", "scikit-learn", "numpy"])
    info = {
        "command": [*cmd[:2], "<loopback shim>", *tail] if not args.azml_bind_all else cmd,
        "bind": bind,
        "workers": 1,
        "versions": versions,
    }
    return Server("azmlinfsrv", cmd, port, logs / "azmlinfsrv.log", env=env, cwd=work.root), info


def tiffin_server(args: argparse.Namespace, work: Workdir, logs: Path) -> tuple[Server, dict[str, Any]]:
    """The tiffin replica server started from ``--tiffin-cmd``."""
    port = free_port()
    tiffin = str(Path(sys.executable).parent / "tiffin")
    cmd = format_cmd(
        args.tiffin_cmd,
        tiffin=tiffin,
        python=sys.executable,
        deployment=work.deployment,
        workdir=work.root,
        host=LOOPBACK,
        port=port,
    )
    env = {**os.environ}
    env.pop("AZUREML_MODEL_DIR", None)  # tiffin must find the model from the deployment YAML
    return Server("tiffin", cmd, port, logs / "tiffin.log", env=env, cwd=work.root), {"command": cmd}


def bentoml_server(args: argparse.Namespace, work: Workdir, logs: Path) -> tuple[Server, dict[str, Any]]:
    """The same deployment as a BentoML service under plain ``bentoml serve`` (BentoML's request path)."""
    port = free_port()
    bentoml = str(Path(sys.executable).parent / "bentoml")
    cmd = [bentoml, "serve", "tiffin.replica.service:Deployment", "--host", LOOPBACK, "--port", str(port)]
    env = {
        **os.environ,
        "TIFFIN_DEPLOYMENT": str(work.deployment),
        "BENTOML_HOME": str(BENCH_DIR / "bentoml-home"),
        # BentoML logs every request at INFO by default; the other two servers log nothing per request.
        "BENTOML_CONFIG_OPTIONS": "api_server.logging.access.enabled=false api_server.metrics.enabled=false",
    }
    env.pop("AZUREML_MODEL_DIR", None)
    return Server("bentoml", cmd, port, logs / "bentoml.log", env=env, cwd=work.root), {"command": cmd}


def memory_run(args: argparse.Namespace, server: Server, wrk: str, script: Path) -> dict[str, Any]:
    """Send ``--memory-requests`` requests to ``server`` and read its memory before and after."""
    assert server.proc is not None
    pid = server.proc.pid
    before = tree_memory(pid)
    log(
        f"memory run: {args.memory_requests} requests to {server.name} "
        f"(RSS before {before.rss_mb:.1f} MiB over {before.processes} processes)"
    )
    t0 = time.monotonic()
    with PeakSampler(pid) as peak:
        result = run_wrk(
            wrk,
            server.base_url + "/score",
            script,
            args.memory_timeout,
            args.threads,
            args.connections,
            args.wrk_timeout,
            stop_at_limit=True,
        )
    elapsed = time.monotonic() - t0
    time.sleep(1.0)  # let in-flight work settle before the reading
    after = tree_memory(pid)
    alive = server.proc.poll() is None
    return {
        "requests_asked": args.memory_requests,
        "requests_completed": result.requests,
        "errors": result.errors,
        "elapsed_s": round(elapsed, 2),
        "processes_before": before.processes,
        "processes_after": after.processes,
        "rss_before_mb": round(before.rss_mb, 2),
        "rss_after_mb": round(after.rss_mb, 2),
        "rss_growth_mb": round(after.rss_mb - before.rss_mb, 2),
        "rss_peak_mb": round(max(peak.peak_rss_mb, before.rss_mb, after.rss_mb), 2),
        "pss_before_mb": round(before.pss_mb, 2),
        "pss_after_mb": round(after.pss_mb, 2),
        "server_alive_after": alive,
        "wrk": result.to_dict(),
    }


def bench_one(
    name: str,
    args: argparse.Namespace,
    work: Workdir,
    wrk: str,
    scripts: dict[str, Path],
    reference: list[float],
    answers: dict[str, list[float]],
) -> dict[str, Any]:
    """Start one server alone, check its predictions, warm it up, time it; stop it."""
    logs = BENCH_DIR / "logs"
    factory = {"azmlinfsrv": azml_server, "tiffin": tiffin_server, "bentoml": bentoml_server}[name]
    server, info = factory(args, work, logs)
    out: dict[str, Any] = {**info, "port": server.port, "log": str(server.log_path)}
    out["cpu_busy_before"] = busy = round(cpu_busy_fraction(), 3)
    if busy > 0.2:
        log(f"warning: the CPUs were {busy:.0%} busy before {name} started: something else is running")
    with server:
        out["ready_after_s"] = round(server.wait_ready(args.ready_timeout), 2)
        got = score(server, work.request_body)
        diffs = {"model": max_abs_diff(got, reference)} | {
            other: max_abs_diff(got, theirs) for other, theirs in answers.items()
        }
        out["predictions"], out["max_abs_diff"] = got, diffs
        bad = {k: v for k, v in diffs.items() if not v <= args.tolerance}
        if bad:
            raise SystemExit(f"{name} predictions {got} differ from {bad} (model says {reference}); not timing it")
        answers[name] = got
        log(f"{name} predictions match (max diff {max(diffs.values()):.3g})")
        url = server.base_url + "/score"
        if args.warmup > 0:
            log(f"{name}: warm-up {args.warmup:.0f}s")
            run_wrk(wrk, url, scripts["load"], args.warmup, args.threads, args.connections, args.wrk_timeout)
        log(f"{name}: timed run {args.duration:.0f}s (wrk -t{args.threads} -c{args.connections})")
        result = run_wrk(wrk, url, scripts["load"], args.duration, args.threads, args.connections, args.wrk_timeout)
        out["wrk"] = result.to_dict()
        out["memory_after_timed_run"] = vars(tree_memory(server.proc.pid)) if server.proc else None
        log(
            f"{name}: {result.requests_per_s:.1f} req/s, p50 {result.p50_ms} ms, p99 {result.p99_ms} ms, "
            f"errors {result.errors}"
        )
        if name == "tiffin" and args.memory_requests > 0:
            out["memory"] = memory_run(args, server, wrk, scripts["memory"])
    return out


def _fmt(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def report(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Print the table and the ratios to stdout; return the ratios."""
    print()
    print(f"{'server':<12} | {'req/s':>9} | {'p50 ms':>8} | {'p99 ms':>8} | {'errors':>6}")
    print(f"{'-' * 12}-+-{'-' * 9}-+-{'-' * 8}-+-{'-' * 8}-+-{'-' * 6}")
    for name, r in results.items():
        w = WrkResult(**{k: v for k, v in r["wrk"].items() if k != "errors"})
        print(f"{name:<12} | {w.requests_per_s:>9.1f} | {_fmt(w.p50_ms):>8} | {_fmt(w.p99_ms):>8} | {w.errors:>6}")
    for name, r in results.items():
        if r.get("cpu_busy_before", 0) > 0.2:
            print(f"note: the CPUs were {r['cpu_busy_before']:.0%} busy (other work) just before {name} started")
    ratios: dict[str, float | None] = {}
    a, t = results.get("azmlinfsrv", {}).get("wrk"), results.get("tiffin", {}).get("wrk")
    print()
    if a and t:
        ratios["tiffin_over_azmlinfsrv_req_per_s"] = (
            t["requests_per_s"] / a["requests_per_s"] if a["requests_per_s"] else None
        )
        ratios["tiffin_over_azmlinfsrv_p50"] = t["p50_ms"] / a["p50_ms"] if a["p50_ms"] else None
        print(f"req/s ratio tiffin/azmlinfsrv: {_fmt(ratios['tiffin_over_azmlinfsrv_req_per_s'])}x")
    b = results.get("bentoml", {}).get("wrk")
    if b and t and b["requests_per_s"]:
        ratios["tiffin_over_bentoml_req_per_s"] = t["requests_per_s"] / b["requests_per_s"]
        print(f"req/s ratio tiffin/bentoml-serve: {ratios['tiffin_over_bentoml_req_per_s']:.2f}x")
    for name, w in (("tiffin", t), ("azmlinfsrv", a)):
        if w and w["p50_ms"]:
            ratios[f"{name}_p99_over_p50"] = w["p99_ms"] / w["p50_ms"]
            print(f"{name} p99/p50: {ratios[f'{name}_p99_over_p50']:.2f}")
    mem = results.get("tiffin", {}).get("memory")
    if mem:
        print()
        print(
            f"tiffin memory run: {mem['requests_completed']} of {mem['requests_asked']} requests completed "
            f"in {mem['elapsed_s']:.1f}s, {mem['errors']} errors"
        )
        print(
            f"  RSS (server + children, {mem['processes_after']} processes): before "
            f"{mem['rss_before_mb']:.1f} MB, after {mem['rss_after_mb']:.1f} MB, growth "
            f"{mem['rss_growth_mb']:+.1f} MB (peak {mem['rss_peak_mb']:.1f} MB)"
        )
        print(
            f"  PSS: before {mem['pss_before_mb']:.1f} MB, after {mem['pss_after_mb']:.1f} MB; "
            f"server alive after: {mem['server_alive_after']}"
        )
    return ratios


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)  # so the servers' finally-blocks run
    wrk = ensure_wrk()
    log(f"preparing {args.workdir} (training the model with {sys.executable})")
    work = prepare_workdir(args.workdir)
    reference = local_predictions(work)
    scripts = {
        "load": write_wrk_script(BENCH_DIR / "wrk" / "post.lua", work.request_body),
        "memory": write_wrk_script(
            BENCH_DIR / "wrk" / "post_limit.lua",
            work.request_body,
            max_requests=max(1, -(-args.memory_requests // args.threads)),  # per thread
        ),
    }
    answers: dict[str, list[float]] = {}
    results: dict[str, dict[str, Any]] = {}
    for name in args.servers:
        results[name] = bench_one(name, args, work, wrk, scripts, reference, answers)
    ratios = report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "environment": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": sys.version.split()[0],
                "wrk": wrk_version(wrk),
            },
            "reference_predictions": reference,
            "servers": results,
            "ratios": ratios,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    run_main(main)
