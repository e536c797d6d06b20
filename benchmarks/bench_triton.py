"""Triton through a tiffin endpoint vs straight to tritonserver, in one run, with two load generators.

The model is examples/triton's: a Python-backend Ridge regression (10 FP64 input tensors, one output) in a
model repository, trained here. Two paths, each alone on the machine:

* **direct**: ``tritonserver`` serving the repository (the same binary and flags tiffin runs), called at
  ``/v2/models/diabetes/infer``;
* **tiffin**: ``tiffin serve``, the endpoint and a ``triton_model`` deployment created with the CLI as an
  Azure user would, called at ``{scoring host}/endpoints/diabetes/v2/models/diabetes/infer`` with the key.

and two loads, each 16 requests in flight:

* **tritonclient**: ``tritonclient.http.aio`` with binary tensors (its default) in a process of its own,
  what Azure's Triton samples use; the issue's "tritonclient straight to tritonserver";
* **wrk**: the same request as JSON tensors, 1 thread: a load generator cheap enough to find each
  server's capacity.

``--pin`` keeps the model server (tritonserver; under tiffin also its replica) on CPUs 1..N-1 and the load
generator and tiffin's gateway on CPU 0, in both paths, as on Azure where clients, the endpoint's front
end and the deployment's instances are separate machines. Prints req/s, p50 and p99 of every run and the
ratio tiffin/direct per load generator (best of ``--rounds``).

    .venv/bin/python benchmarks/bench_triton.py [--duration 10] [--rounds 2] [--pin] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
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
    REPO_ROOT,
    Server,
    cli,
    ensure_wrk,
    free_port,
    log,
    run_main,
    run_wrk,
    write_wrk_script,
)

from tiffin.config import REPLICA_CPUS_ENV
from tiffin.runners.tritonserver import TRITONSERVER_ENV, find_tritonserver

BIN = Path(sys.executable).parent
EXAMPLE = REPO_ROOT / "examples" / "triton"
MODEL = "diabetes"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="timed seconds per run (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="untimed seconds before each timed run (default 2)")
    p.add_argument("--connections", type=int, default=16, help="requests in flight (default 16)")
    p.add_argument("--rounds", type=int, default=2, help="alternate direct/tiffin this many times (default 2)")
    p.add_argument("--pin", action="store_true", help="model server on CPUs 1..N-1; load and gateway on CPU 0")
    p.add_argument("--json", type=Path, help="also write the results here")
    # Internal: the tritonclient load generator, run as a process of its own.
    p.add_argument("--tritonclient-load", nargs=3, metavar=("URL", "SECONDS", "HEADERS_JSON"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


# --- the tritonclient load generator ---------------------------------------------------------------------


async def _tritonclient_load(url: str, seconds: float, headers: dict[str, str], connections: int) -> dict[str, Any]:
    import numpy as np
    import tritonclient.http.aio as aio
    from tritonclient.http import InferInput, InferRequestedOutput

    request = json.loads((EXAMPLE / "sample-request.json").read_text())["inputs"]
    inputs = []
    for name, values in request.items():
        tensor = InferInput(name, [len(values)], "FP64")
        tensor.set_data_from_numpy(np.asarray(values, dtype=np.float64))
        inputs.append(tensor)
    outputs = [InferRequestedOutput("predictions")]
    client = aio.InferenceServerClient(url, conn_limit=connections)
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < end:
            started = time.perf_counter()
            try:
                result = await client.infer(MODEL, inputs, outputs=outputs, headers=dict(headers))
                result.as_numpy("predictions")
            except Exception:  # counted, and the run is refused below: a benchmark of errors is no benchmark
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - began
    await client.close()
    latencies.sort()
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000, 3)  # noqa: E731
    return {"requests_per_s": len(latencies) / elapsed, "p50_ms": pick(0.5), "p99_ms": pick(0.99), "errors": errors}


def tritonclient_run(url: str, seconds: float, headers: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """One tritonclient load run in a child process (it inherits this process's CPU placement)."""
    command = [sys.executable, __file__, "--connections", str(args.connections),
               "--tritonclient-load", url, str(seconds), json.dumps(headers)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if done.returncode != 0:
        raise RuntimeError(f"tritonclient load failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the benchmark ---------------------------------------------------------------------------------------


def v2_body() -> bytes:
    request = json.loads((EXAMPLE / "sample-request.json").read_text())["inputs"]
    tensors = [{"name": k, "shape": [len(v)], "datatype": "FP64", "data": v} for k, v in request.items()]
    return json.dumps({"inputs": tensors}, separators=(",", ":")).encode()


def measure(wrk: str, base: str, headers: dict[str, str], args: argparse.Namespace, label: str) -> dict[str, Any]:
    """Both loads against one path; ``base`` is what tritonclient gets as its URL (host:port[/prefix])."""
    infer_url = f"http://{base}/v2/models/{MODEL}/infer"
    script = write_wrk_script(BENCH_DIR / "wrk" / f"triton-{label}.lua", v2_body(), headers=headers)
    if args.warmup > 0:
        run_wrk(wrk, infer_url, script, args.warmup, 1, args.connections)
    result = run_wrk(wrk, infer_url, script, args.duration, 1, args.connections)
    if result.errors:
        raise RuntimeError(f"{label} (wrk): {result.errors} failed requests")
    out = {"wrk": {"requests_per_s": result.requests_per_s, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms}}
    out["tritonclient"] = tritonclient_run(base, args.duration, headers, args)
    if out["tritonclient"]["errors"]:
        raise RuntimeError(f"{label} (tritonclient): {out['tritonclient']['errors']} failed requests")
    for loader, r in out.items():
        log(f"{label} ({loader}): {r['requests_per_s']:.1f} req/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms")
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    if args.tritonclient_load:
        url, seconds, headers = args.tritonclient_load
        print(json.dumps(asyncio.run(_tritonclient_load(url, float(seconds), json.loads(headers), args.connections))))
        return 0
    wrk = ensure_wrk()
    install = find_tritonserver()
    work = BENCH_DIR / "triton-work"
    subprocess.run([sys.executable, str(EXAMPLE / "train.py"), str(work)], check=True, capture_output=True)
    for name in ("endpoint.yml", "green-deployment.yml"):
        (work / name).write_text((EXAMPLE / name).read_text())
    home = BENCH_DIR / "triton-home"
    subprocess.run(["rm", "-rf", str(home)], check=True)
    logs = BENCH_DIR / "logs"

    port = free_port()
    env = {**os.environ, "TIFFIN_HOME": str(home), "TIFFIN_URL": f"http://{LOOPBACK}:{port}"}
    if env.get(TRITONSERVER_ENV):  # tiffin serve runs in the work folder: the path must not be relative
        env[TRITONSERVER_ENV] = str(Path(env[TRITONSERVER_ENV]).expanduser().resolve())
    env.pop("TIFFIN_ADMIN_TOKEN", None)
    env.pop("TIFFIN_STORE_URL", None)
    serve_cmd = [str(BIN / "tiffin"), "serve", "--port", str(port)]
    direct_port = free_port()
    direct_cmd = install.command(work / "models", direct_port, shm_prefix=f"tiffin_bench_{direct_port}_")
    if args.pin:
        cpus = os.cpu_count() or 1
        if cpus < 2:
            raise RuntimeError("--pin needs at least 2 CPUs")
        server_cpus = f"1-{cpus - 1}"
        os.sched_setaffinity(0, {0})  # this process, wrk and the tritonclient load on CPU 0
        env[REPLICA_CPUS_ENV] = server_cpus
        serve_cmd += ["--replica-cpus", server_cpus]
        direct_cmd = ["taskset", "-c", server_cpus, *direct_cmd]
        log(f"pinned: load and gateway on CPU 0, tritonserver (and its replica) on CPUs {server_cpus}")
    tiffin_serve = Server("tiffin-serve", serve_cmd, port, logs / "tiffin-serve.log", env=env, cwd=work)
    results: dict[str, list[dict[str, Any]]] = {"direct": [], "tiffin": []}
    try:
        for round_ in range(args.rounds):
            with Server("tritonserver", direct_cmd, direct_port, logs / "tritonserver.log",
                        env=install.environment(os.environ), cwd=work) as direct:  # fmt: skip
                direct.wait_ready(path="/v2/health/ready")
                results["direct"].append(measure(wrk, f"{LOOPBACK}:{direct_port}", {}, args, f"direct #{round_ + 1}"))
            if tiffin_serve.proc is None:
                tiffin_serve.start()
                tiffin_serve.wait_ready(path="/api/health")
                cli(env, "online-endpoint", "create", "-f", str(work / "endpoint.yml"))
                cli(env, "online-deployment", "create", "-f", str(work / "green-deployment.yml"), "--all-traffic")
            key = cli(env, "online-endpoint", "get-credentials", "-n", "diabetes", "-o", "tsv", "--query", "primaryKey")
            auth = {"Authorization": f"Bearer {key.strip()}"}
            base = f"{LOOPBACK}:{port}/endpoints/diabetes"
            results["tiffin"].append(measure(wrk, base, auth, args, f"tiffin #{round_ + 1}"))
    finally:
        tiffin_serve.stop()

    print()
    print(f"{'path':<12} | {'load':<12} | {'req/s':>9} | {'p50 ms':>8} | {'p99 ms':>8}")
    print(f"{'-' * 12}-+-{'-' * 12}-+-{'-' * 9}-+-{'-' * 8}-+-{'-' * 8}")
    for path, runs in results.items():
        for i, run in enumerate(runs):
            for loader, r in run.items():
                print(f"{f'{path} #{i + 1}':<12} | {loader:<12} | {r['requests_per_s']:>9.1f} | "
                      f"{r['p50_ms']:>8.2f} | {r['p99_ms']:>8.2f}")  # fmt: skip
    print()
    ratios = {}
    for loader in ("tritonclient", "wrk"):
        best = {
            path: max((run[loader] for run in runs), key=lambda r: r["requests_per_s"])
            for path, runs in results.items()
        }
        d, t = best["direct"], best["tiffin"]
        ratios[loader] = t["requests_per_s"] / d["requests_per_s"]
        placement = " (pinned)" if args.pin else ""
        print(f"{loader:<12} best of {args.rounds}{placement}: tiffin/direct = {ratios[loader]:.2f}x "
              f"({t['requests_per_s']:.0f} vs {d['requests_per_s']:.0f} req/s); "
              f"added p50 {t['p50_ms'] - d['p50_ms']:+.2f} ms, p99 {t['p99_ms'] - d['p99_ms']:+.2f} ms")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": results, "ratios": ratios, "pinned": args.pin}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
