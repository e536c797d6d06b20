"""Deploy latency (issue 14): ``online-deployment create`` to ``Succeeded``, in one run, on a real ``tiffin serve``.

Starts ``tiffin serve`` (fresh home, 127.0.0.1), creates the quickstart's endpoint, then creates ``--runs``
deployments of fresh names, each deleted after it succeeds, three ways:

* ``cli``: the real ``tiffin online-deployment create -f FILE`` console script (its own poll included);
* ``sdk``: ``TiffinClient().online_deployments.create_or_update(spec)`` in this process (its own poll included);
* ``server``: a ``--no-wait`` create, then the deployment read every 10 ms: the server's own create →
  Succeeded, without any client's poll interval. Its stages are timed from the same clock: the replica log's
  first line (process spawned), its ``tiffin replica ready`` line (imports and ``init()`` done; the log is
  tailed every 5 ms), and Succeeded in the store.

The deployment is the quickstart's ``blue-deployment.yml`` (scikit-learn model, trained here) without its
``environment`` (tiffin's own Python: what start-up itself costs); ``--with-environment`` also times it as is,
with its conda environment built once beforehand (docs/environments.md), which is not timed.
Run: ``.venv/bin/python benchmarks/bench_deploy.py [--runs 7] [--with-environment] [--baseline REF]``.
Results go to stdout, progress to stderr, with the load average (2 shared CPUs: read the figures with it).
``--baseline REF`` also times a git revision's tiffin (its ``plugin/`` and ``runners/`` first on ``PYTHONPATH``
of a second server, its CLI and its replicas), interleaved run by run with this tree's, and prints the ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import BENCH_DIR, log, prepare_workdir
from bench_cli import _baseline_tree

from tiffin import paths
from tiffin.specs import load_spec
from tiffin.testing import serve_tiffin

TIFFIN = str(Path(sys.executable).parent / "tiffin")
ENDPOINT = "my-endpoint"
TARGET_S = 2.0


def _yaml(workdir: Path, name: str, environment: bool) -> Path:
    text = (workdir / "blue-deployment.yml").read_text().replace("name: blue", f"name: {name}")
    if not environment:
        lines, skip = [], False
        for line in text.splitlines():
            if line.startswith("environment:"):
                skip = True
                continue
            if skip and line.startswith("  "):
                continue
            skip = False
            lines.append(line)
        text = "\n".join(lines) + "\n"
    path = workdir / f"{name}.yml"
    path.write_text(text)
    return path


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([TIFFIN, *args], capture_output=True, text=True, env=env, timeout=900, check=False)
    if done.returncode != 0:
        raise SystemExit(f"tiffin {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _delete(client, name: str) -> None:
    client.online_deployments.begin_delete(name, ENDPOINT).result()


def _server_side(client, env, home: Path, spec: Path, name: str) -> dict[str, float]:
    """One ``--no-wait`` create, timed from the server's side: stage times in seconds from the create call."""
    log_path = paths.replica_log_path(home, ENDPOINT, name, 0)
    started = time.perf_counter()
    _cli(env, "online-deployment", "create", "-f", str(spec), "--no-wait")
    stages: dict[str, float] = {"stored (CLI --no-wait returned)": time.perf_counter() - started}
    deadline = time.monotonic() + 600
    last_read = 0.0
    while time.monotonic() < deadline:
        now = time.perf_counter()
        if "spawned (log opened)" not in stages and log_path.exists():
            stages["spawned (log opened)"] = now - started
        if "ready line" not in stages and log_path.exists() and "tiffin replica ready" in log_path.read_text():
            stages["ready line"] = now - started
        if now - last_read >= 0.01:
            last_read = now
            state = client.online_deployments.get(name, ENDPOINT)["provisioning_state"]
            if state == "Succeeded":
                stages["Succeeded"] = time.perf_counter() - started
                return stages
            if state == "Failed":
                raise SystemExit(f"{name} failed: {client.online_deployments.get(name, ENDPOINT).get('reason')}")
        time.sleep(0.005)
    raise SystemExit(f"{name} did not succeed in 600 s")


@dataclass
class _Target:
    """One ``tiffin serve`` to time (this tree's, or a baseline's) and what was measured on it."""

    label: str
    client: Any
    env: dict[str, str]
    home: Path
    rows: dict[str, list[float]] = field(default_factory=dict)
    stages: dict[str, list[float]] = field(default_factory=dict)


def _one_round(target: _Target, workdir: Path, case: str, environment: bool, counter: list[int]) -> None:
    """One create of each kind on ``target`` (each deleted after), recorded under ``case``."""
    client, env = target.client, target.env

    def fresh() -> tuple[str, Path]:
        counter[0] += 1
        name = f"d{counter[0]}"
        return name, _yaml(workdir, name, environment)

    name, spec = fresh()
    started = time.perf_counter()
    _cli(env, "online-deployment", "create", "-f", str(spec))
    cli = time.perf_counter() - started
    _delete(client, name)

    name, spec = fresh()
    loaded = load_spec(spec).spec  # read before timing: the YAML is the caller's, not the create's cost
    started = time.perf_counter()
    client.online_deployments.create_or_update(loaded, timeout=600)
    sdk = time.perf_counter() - started
    _delete(client, name)

    name, spec = fresh()
    stages = _server_side(client, env, target.home, spec, name)
    _delete(client, name)
    for stage, value in stages.items():
        target.stages.setdefault(f"{case}: {stage}", []).append(value)
    for kind, value in (("CLI create", cli), ("SDK create + wait", sdk), ("server", stages["Succeeded"])):
        target.rows.setdefault(f"{case}: {kind}", []).append(value)
    log(f"{target.label}, {case}: cli {cli:.2f}s, sdk {sdk:.2f}s, server {stages['Succeeded']:.2f}s")


def _start_target(stack, work: Path, label: str, workdir: Path, pythonpath: str | None) -> _Target:
    from tiffin.sdk import TiffinClient

    extra = {"BENTOML_DO_NOT_TRACK": "True"}
    if pythonpath:
        extra["PYTHONPATH"] = pythonpath  # the server, its CLI and its replicas run the baseline's tiffin
    server = stack.enter_context(serve_tiffin(work / ("home-baseline" if pythonpath else "home"), env=extra))
    env = {**os.environ, **extra, "TIFFIN_URL": server.url, "TIFFIN_ADMIN_TOKEN": server.admin_token}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    target = _Target(label, TiffinClient(server.url, admin_token=server.admin_token), env, server.home)
    _cli(env, "online-endpoint", "create", "-f", str(workdir / "endpoint.yml"))
    # One untimed create first: bytecode compiled, page cache warm.
    _cli(env, "online-deployment", "create", "-f", str(_yaml(workdir, "warm", False)))
    _delete(target.client, "warm")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="creates of each kind (default 7)")
    parser.add_argument("--with-environment", action="store_true", help="also time the quickstart with its env")
    parser.add_argument("--baseline", metavar="REF", help="also time a git revision's tiffin, interleaved")
    args = parser.parse_args()

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-deploy-", dir=BENCH_DIR) as tmp, ExitStack() as stack:
        work = Path(tmp)
        log("training the quickstart's model")
        workdir = prepare_workdir(work / "quickstart").root
        targets = [_start_target(stack, work, "this tree", workdir, None)]
        if args.baseline:
            tree = _baseline_tree(args.baseline, work / "baseline")
            targets.append(_start_target(stack, work, args.baseline, workdir, str(tree)))
        cases = [("own Python", False)]
        if args.with_environment:
            log("building the quickstart's environment (untimed)")
            for target in targets:
                _cli(target.env, "online-deployment", "create", "-f", str(_yaml(workdir, "envwarm", True)))
                _delete(target.client, "envwarm")
            cases.append(("with environment", True))
        counter = [0]
        for case, environment in cases:
            for _ in range(args.runs):  # interleaved: a change in the machine's load touches every target alike
                for target in targets:
                    _one_round(target, workdir, case, environment, counter)

    loads = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"\nDeploy latency, create -> Succeeded, {args.runs} runs each, wall seconds (load average {loads})")
    rows = [(f"{label} [{t.label}]", values) for t in targets for label, values in t.rows.items()]
    width = max(len(label) for label, _ in rows)
    print(f"{'case':<{width}} | best s | median s | target s")
    print(f"{'-' * width}-+--------+----------+---------")
    for label, timings in sorted(rows):
        print(f"{label:<{width}} | {min(timings):6.2f} | {statistics.median(timings):8.2f} | {TARGET_S:8.2f}")
    for target in targets:
        print(f"\nserver-side stages [{target.label}] (seconds from the create call; median, best)")
        for stage, values in target.stages.items():
            print(f"  {stage:<52} {statistics.median(values):6.2f} {min(values):6.2f}")
    if args.baseline:
        print(f"\nmedian of this tree / median of {args.baseline}:")
        for label, values in targets[0].rows.items():
            print(f"  {label}: {statistics.median(values) / statistics.median(targets[1].rows[label]):.2f}x")


if __name__ == "__main__":
    main()
