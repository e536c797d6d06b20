"""Per-deployment environments (issue 13): time to a ready deployment, and replica throughput inside one.

Uses the quickstart's deployment (Azure's model-1 ``score.py``, a Ridge model trained here by tiffin's Python)
with a conda file of its own: Python of tiffin's minor and tiffin's own scikit-learn, numpy, scipy and joblib
versions, so the one pickle loads identically in both environments and the comparison is about where the
replica runs, not about library versions.

1. **Cold uv cache**: ``tiffin serve`` on a fresh TIFFIN_HOME with ``UV_CACHE_DIR`` an empty folder; the time of
   ``online-deployment create`` (it waits until the deployment is ready: build, replica start, readiness probe).
2. **Warm cache**: a fresh TIFFIN_HOME, uv's default cache (primed first with the same packages, untimed); the
   same create. Then a second deployment with the same conda file (**reuse**: the environment is already built),
   and, as the baseline, the same deployment with no environment (tiffin's own Python). Reuse overhead = reuse -
   baseline.
3. **Throughput**: the deployment's replica plan served by ``python -m tiffin.replica.run`` on a loopback port,
   once on the built environment's interpreter (its runtime copy first on PYTHONPATH, as the supervisor starts
   it) and once on tiffin's own, alternately, each loaded alone with wrk (1 thread, 16 connections); best of the
   rounds, and their ratio.

Every create uses readiness/liveness probes of 1 s (Azure's default 10 s initial delay would hide the build).
Targets from the issue: warm-cache build <= 15 s, reuse adds <= 1 s, throughput >= 0.95x.

    .venv/bin/python benchmarks/bench_env.py [--duration 10] [--warmup 3] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import statistics
import sys
import time
from importlib import metadata
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

from tiffin.environments.builder import ENVS_DIR_ENV
from tiffin.environments.runtime import prepare
from tiffin.environments.sources import environment_of
from tiffin.replica.factory import plan_from_file
from tiffin.replica.plan import write_plan
from tiffin.specs import OnlineDeployment, load_spec

BIN = Path(sys.executable).parent
PROBES = [
    "readiness_probe.initial_delay=1",
    "readiness_probe.period=1",
    "liveness_probe.initial_delay=1",
    "liveness_probe.period=1",
]
PINNED = ("scikit-learn", "numpy", "scipy", "joblib")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=10.0, help="timed seconds per throughput run (default 10)")
    p.add_argument("--warmup", type=float, default=3.0, help="untimed seconds before each timed run (default 3)")
    p.add_argument("--rounds", type=int, default=3, help="env/own throughput runs, alternated (default 3)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def write_deployments(root: Path) -> tuple[Path, Path]:
    """The environment's conda file and two deployment YAMLs beside the quickstart's files: one declaring it,
    one declaring none (tiffin's own Python)."""
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    pins = "".join(f"    - {name}=={metadata.version(name)}\n" for name in PINNED)
    (root / "bench-env.yaml").write_text(
        f"name: bench-env\nchannels:\n  - conda-forge\ndependencies:\n  - python={minor}\n  - pip\n  - pip:\n{pins}"
    )
    common = (
        "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n"
        "endpoint_name: bench\nmodel:\n  path: model/\n"
        "code_configuration:\n  code: onlinescoring/\n  scoring_script: score.py\n"
        "instance_type: Standard_DS3_v2\ninstance_count: 1\n"
    )
    in_env, own = root / "env-deployment.yml", root / "own-deployment.yml"
    in_env.write_text(f"name: env-a\n{common}environment:\n  conda_file: bench-env.yaml\n")
    own.write_text(f"name: own\n{common}")
    return in_env, own


class TiffinServe:
    """``tiffin serve`` on a fresh TIFFIN_HOME, with the CLI's environment for it."""

    def __init__(self, home: Path, label: str, extra_env: dict[str, str] | None = None) -> None:
        shutil.rmtree(home, ignore_errors=True)
        port = free_port()
        self.home = home
        self.env = {
            **os.environ,
            "TIFFIN_HOME": str(home),
            "TIFFIN_URL": f"http://{LOOPBACK}:{port}",
            **(extra_env or {}),
        }
        self.env.pop("TIFFIN_ADMIN_TOKEN", None)
        self.env.pop("TIFFIN_STORE_URL", None)
        command = [str(BIN / "tiffin"), "serve", "--host", LOOPBACK, "--port", str(port)]
        self.server = Server(
            f"tiffin-serve ({label})", command, port, BENCH_DIR / "logs" / f"env-{label}.log", env=self.env
        )

    def __enter__(self) -> TiffinServe:
        self.server.start()
        self.server.wait_ready(path="/api/health")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def create(self, deployment: Path, name: str) -> dict[str, Any]:
        """``online-deployment create`` (waits until ready); its wall time and the build time the environment
        log reports, if the environment was built."""
        started = time.monotonic()
        cli(
            self.env,
            "online-deployment",
            "create",
            "-f",
            str(deployment),
            "-n",
            name,
            *(a for p in PROBES for a in ("--set", p)),
        )
        seconds = time.monotonic() - started
        env_log = self.home / "logs" / "bench" / name / "environment.log"
        text = env_log.read_text() if env_log.exists() else ""
        built = re.search(r"built environment \w+ in ([\d.]+) s", text)
        reused = "reusing environment" in text
        log(
            f"create {name}: {seconds:.2f} s"
            + (f" (build {built.group(1)} s)" if built else "")
            + (" (reused)" if reused else "")
        )
        return {"seconds": seconds, "build_s": float(built.group(1)) if built else None, "reused": reused}


def time_creates(in_env: Path, own: Path) -> dict[str, dict[str, Any]]:
    """Create times: cold uv cache, warm cache, reusing the built environment, and tiffin's own environment."""
    out: dict[str, dict[str, Any]] = {}
    cold_cache = BENCH_DIR / "env-uv-cache-cold"
    shutil.rmtree(cold_cache, ignore_errors=True)
    try:
        with TiffinServe(BENCH_DIR / "env-home-cold", "cold", {"UV_CACHE_DIR": str(cold_cache)}) as served:
            cli(served.env, "online-endpoint", "create", "-n", "bench")
            out["cold"] = served.create(in_env, "env-a")
    finally:
        shutil.rmtree(cold_cache, ignore_errors=True)

    # The default cache primed with the same packages (a no-op when it already has them), untimed.
    scratch = BENCH_DIR / "env-home-prime"
    shutil.rmtree(scratch, ignore_errors=True)
    environ = {k: v for k, v in os.environ.items() if k != "UV_CACHE_DIR"}
    prepare(spec_of(in_env), scratch, log=io.StringIO(), environ=environ)
    shutil.rmtree(scratch, ignore_errors=True)

    warm_home = BENCH_DIR / "env-home-warm"
    with TiffinServe(warm_home, "warm", None) as served:
        served.env.pop("UV_CACHE_DIR", None)
        cli(served.env, "online-endpoint", "create", "-n", "bench")
        out["own"] = served.create(own, "own")
        out["warm"] = served.create(in_env, "env-a")
        out["reuse"] = served.create(in_env, "env-b")
    return out


def spec_of(deployment: Path):
    loaded = load_spec(deployment, OnlineDeployment)
    spec = environment_of(loaded.spec, kind="script", owner=f"deployment '{loaded.spec.name}'")
    assert spec is not None
    return spec


def throughput(in_env: Path, work_body: bytes, expected: list[float], args: argparse.Namespace) -> dict[str, Any]:
    """One replica plan, served on the environment's interpreter and on tiffin's, alternately under wrk."""
    wrk = ensure_wrk()
    home = BENCH_DIR / "env-home-warm"
    prepared = prepare(spec_of(in_env), home, log=io.StringIO())  # built above: reused
    plan = in_env.with_suffix(".plan.json")
    write_plan(plan_from_file(in_env, home=home), plan)
    script = write_wrk_script(BENCH_DIR / "wrk" / "env.lua", work_body)
    runs: dict[str, list[dict[str, Any]]] = {"environment": [], "tiffin's own": []}
    pythons = {
        "environment": (str(prepared.python), prepared.process_env({**os.environ, "TIFFIN_HOME": str(home)})),
        "tiffin's own": (sys.executable, {**os.environ, "TIFFIN_HOME": str(home)}),
    }
    for round_ in range(args.rounds):
        for label, (python, env) in pythons.items():
            port = free_port()
            command = [python, "-m", "tiffin.replica.run", "--plan", str(plan), "--host", LOOPBACK, "--port", str(port)]
            logfile = BENCH_DIR / "logs" / f"env-replica-{'env' if label == 'environment' else 'own'}.log"
            with Server(f"replica ({label})", command, port, logfile, env=env) as replica:
                replica.wait_ready(timeout=180)
                got = score(replica, work_body)
                if max_abs_diff(got, expected) > 1e-9:
                    raise RuntimeError(f"{label} answered {got}, expected {expected}")
                url = replica.base_url + "/score"
                if args.warmup > 0:
                    run_wrk(wrk, url, script, args.warmup, 1, args.connections)
                result = run_wrk(wrk, url, script, args.duration, 1, args.connections)
                if result.errors:
                    raise RuntimeError(f"{label}: {result.errors} failed requests")
                log(f"{label} (round {round_ + 1}): {result.requests_per_s:.1f} req/s, p50 {result.p50_ms} ms")
                runs[label].append(result.to_dict())
    versions = {label: _versions(python, env) for label, (python, env) in pythons.items()}
    return {"runs": runs, "versions": versions, "environment": str(prepared.path)}


def _versions(python: str, env: dict[str, str]) -> str:
    import subprocess

    code = (
        "import platform, uvicorn, sklearn, numpy; "
        "print(f'Python {platform.python_version()}, uvicorn {uvicorn.__version__}, '"
        "f'scikit-learn {sklearn.__version__}, numpy {numpy.__version__}')"
    )
    return subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=60).stdout.strip()


def _load() -> str:
    """The 1-minute load average: what else ran on the machine during the run (the numbers are only as quiet)."""
    return f"{os.getloadavg()[0]:.2f}"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    # Each phase builds into its own fresh TIFFIN_HOME/envs: a shared TIFFIN_ENVS_DIR would make the cold and warm
    # creates reuse an environment built earlier.
    os.environ.pop(ENVS_DIR_ENV, None)
    load_before = _load()
    ensure_wrk()
    work = prepare_workdir(BENCH_DIR / "env-work")
    expected = local_predictions(work)
    in_env, own = write_deployments(work.root)
    creates = time_creates(in_env, own)
    flow = throughput(in_env, work.request_body, expected, args)

    print()
    print(f"{'online-deployment create (until ready)':<44} | {'seconds':>7} | {'build s':>7}")
    print(f"{'-' * 44}-+-{'-' * 7}-+-{'-' * 7}")
    labels = {
        "cold": "scikit-learn env, cold uv cache",
        "warm": "scikit-learn env, warm uv cache",
        "reuse": "second deployment, reusing the env",
        "own": "same deployment, tiffin's own Python",
    }
    for key, label in labels.items():
        c = creates[key]
        build = f"{c['build_s']:.1f}" if c["build_s"] is not None else ("reused" if c["reused"] else "-")
        print(f"{label:<44} | {c['seconds']:>7.2f} | {build:>7}")
    overhead = creates["reuse"]["seconds"] - creates["own"]["seconds"]
    print()
    print(f"warm-cache build: {creates['warm']['build_s']:.1f} s (target <= 15 s)")
    print(f"reuse adds {overhead:+.2f} s to a create over tiffin's own Python (target <= 1 s)")
    print()
    title = f"replica (same plan, wrk -c{args.connections})"
    print(f"{title:<28} | {'req/s':>9} | {'p50 ms':>8} | {'p99 ms':>8}")
    print(f"{'-' * 28}-+-{'-' * 9}-+-{'-' * 8}-+-{'-' * 8}")
    for label, results in flow["runs"].items():
        for i, r in enumerate(results):
            name = f"{label} (round {i + 1})"
            print(f"{name:<28} | {r['requests_per_s']:>9.1f} | {r['p50_ms']:>8.2f} | {r['p99_ms']:>8.2f}")
    rates = {label: [r["requests_per_s"] for r in results] for label, results in flow["runs"].items()}
    ratio = max(rates["environment"]) / max(rates["tiffin's own"])
    median_ratio = statistics.median(rates["environment"]) / statistics.median(rates["tiffin's own"])
    print()
    for label, versions in flow["versions"].items():
        print(f"{label}: {versions}")
    print(
        f"throughput, best of {args.rounds}: environment/own = {ratio:.3f}x (target >= 0.95x); "
        f"median of {args.rounds}: {median_ratio:.3f}x"
    )
    print(
        f"load average before/after: {load_before} / {_load()} on {os.cpu_count()} CPUs; "
        f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        results = {"creates": creates, "throughput": flow, "ratio": ratio, "median_ratio": median_ratio}
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
