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
Run: ``.venv/bin/python benchmarks/bench_deploy.py [--runs 7] [--with-environment]``. Results go to stdout,
progress to stderr, with the load average (2 shared CPUs: read the figures with it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import BENCH_DIR, log, prepare_workdir

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


def _time_case(client, env, home, workdir, label: str, environment: bool, runs: int, counter: list[int]):
    cli, sdk, server = [], [], []
    stages: dict[str, list[float]] = {}
    for _ in range(runs):
        counter[0] += 1
        name = f"d{counter[0]}"
        spec = _yaml(workdir, name, environment)
        started = time.perf_counter()
        _cli(env, "online-deployment", "create", "-f", str(spec))
        cli.append(time.perf_counter() - started)
        _delete(client, name)

        counter[0] += 1
        name = f"d{counter[0]}"
        spec = _yaml(workdir, name, environment)
        loaded = load_spec(spec).spec  # read before timing: the YAML is the caller's, not the create's cost
        started = time.perf_counter()
        client.online_deployments.create_or_update(loaded, timeout=600)
        sdk.append(time.perf_counter() - started)
        _delete(client, name)

        counter[0] += 1
        name = f"d{counter[0]}"
        spec = _yaml(workdir, name, environment)
        for stage, value in _server_side(client, env, home, spec, name).items():
            stages.setdefault(stage, []).append(value)
        server.append(stages["Succeeded"][-1])
        _delete(client, name)
        log(f"{label}: cli {cli[-1]:.2f}s, sdk {sdk[-1]:.2f}s, server {server[-1]:.2f}s")
    return [(f"{label}: CLI create", cli), (f"{label}: SDK create + wait", sdk), (f"{label}: server", server)], stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7, help="creates of each kind (default 7)")
    parser.add_argument("--with-environment", action="store_true", help="also time the quickstart with its env")
    args = parser.parse_args()

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-deploy-", dir=BENCH_DIR) as tmp:
        work = Path(tmp)
        log("training the quickstart's model")
        workdir = prepare_workdir(work / "quickstart").root
        with serve_tiffin(work / "home", env={"BENTOML_DO_NOT_TRACK": "True"}) as server:
            from tiffin.sdk import TiffinClient

            env = {**os.environ, "TIFFIN_URL": server.url, "TIFFIN_ADMIN_TOKEN": server.admin_token}
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            client = TiffinClient(server.url, admin_token=server.admin_token)
            _cli(env, "online-endpoint", "create", "-f", str(workdir / "endpoint.yml"))
            counter = [0]
            # One untimed create first: bytecode compiled, page cache warm.
            warm = _yaml(workdir, "warm", False)
            _cli(env, "online-deployment", "create", "-f", str(warm))
            _delete(client, "warm")
            rows, stages = _time_case(client, env, server.home, workdir, "own Python", False, args.runs, counter)
            if args.with_environment:
                log("building the quickstart's environment (untimed)")
                built = _yaml(workdir, "envwarm", True)
                _cli(env, "online-deployment", "create", "-f", str(built))
                _delete(client, "envwarm")
                env_rows, env_stages = _time_case(
                    client, env, server.home, workdir, "with environment", True, args.runs, counter
                )
                rows += env_rows
            else:
                env_stages = {}

    loads = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"\nDeploy latency, create -> Succeeded, {args.runs} runs each, wall seconds (load average {loads})")
    width = max(len(label) for label, _ in rows)
    print(f"{'case':<{width}} | best s | median s | target s")
    print(f"{'-' * width}-+--------+----------+---------")
    for label, timings in rows:
        print(f"{label:<{width}} | {min(timings):6.2f} | {statistics.median(timings):8.2f} | {TARGET_S:8.2f}")
    for title, found in (("own Python", stages), ("with environment", env_stages)):
        if found:
            print(f"\nserver-side stages, {title} (seconds from the create call; median, best)")
            for stage, values in found.items():
                print(f"  {stage:<34} {statistics.median(values):6.2f} {min(values):6.2f}")


if __name__ == "__main__":
    main()
