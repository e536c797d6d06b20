"""A tiffin batch job vs a hand-written process-pool loop, same MLflow model, same files, in one run.

Writes ``--files`` CSV files of ``--rows`` rows (the diabetes features, resampled with noise) and an MLflow
model (scikit-learn Ridge on the diabetes data, with a signature) under .bench/batch, then, each alone:

* **hand-written**: a script of its own (run as ``python hand_written.py``) with a
  ``concurrent.futures.ProcessPoolExecutor(max_workers=N)`` whose initializer loads the model with
  ``mlflow.pyfunc.load_model``; one task per file: ``pandas.read_csv``, ``predict``, a frame
  ``file,prediction`` as CSV text; the parent writes them to one output file. Timed whole, from starting the
  script to its output written, as the user waits for it; the time from creating its pool on (without its
  own imports) is printed too. (``--baseline-engine pyarrow`` makes it read with pandas' pyarrow engine.)
* **tiffin**: one ``tiffin serve`` for the whole run, as a service is up, with a batch endpoint and an MLflow
  batch deployment (no script, ``max_concurrency_per_instance: N``, ``mini_batch_size: 10``) created
  through the SDK before the first round; timed from ``batch_endpoints.invoke`` to the job Completed (its
  output file written), with the time to its first output row (the first part file under
  ``jobs/JOB/parts/``: the first mini-batch done, written whole). Workers start per job (each loads the
  model); the model runs in its own environment (its python_env.yaml), which ``batch_deployments.
  create_or_update`` waits for (built, spare workers started: timed as "create"). The **first job after the
  create** is invoked at once and timed on its own (create, then invoke to first row); the rounds' jobs take
  the spare workers the previous job's end started (``TIFFIN_BATCH_SPARE_WORKERS=0``: none). Between jobs the
  bench waits for tiffin's processes to settle (spares importing), so that neither side is timed while the
  other works.

Both outputs are checked to hold the same rows. Prints rows/s of both, the ratio, and the first-row latency.

    .venv/bin/python benchmarks/bench_batch.py [--files 200] [--rows 5000] [--workers N] [--rounds 2] [--own-python]
        [--json PATH]
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

from _harness import BENCH_DIR, LOOPBACK, Server, free_port, log, run_main

BIN = Path(sys.executable).parent
ROOT = BENCH_DIR / "batch"

_MODEL = r"""
import sys, mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
x, y = load_diabetes(return_X_y=True, as_frame=True)
model = Ridge().fit(x, y)
mlflow.sklearn.save_model(model, sys.argv[1], signature=infer_signature(x, model.predict(x)))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--files", type=int, default=200, help="input CSV files (default 200)")
    p.add_argument("--rows", type=int, default=5000, help="rows per file (default 5000)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPUs)")
    p.add_argument("--rounds", type=int, default=2, help="alternate the two this many times (default 2)")
    p.add_argument("--baseline-engine", choices=["c", "pyarrow"], default="c", help="pandas.read_csv engine")
    p.add_argument(
        "--own-python",
        action="store_true",
        help="the deployment runs on tiffin's own Python (a copy of the model without its environment files)",
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


# --- data ------------------------------------------------------------------------------------------------


def prepare(files: int, rows: int) -> tuple[Path, Path]:
    """The input folder and the model folder (made once per size; reused by later runs)."""
    import numpy as np
    from sklearn.datasets import load_diabetes

    data = ROOT / f"inputs-{files}x{rows}"
    model = ROOT / "model"
    if not (model / "MLmodel").is_file():
        log("saving the MLflow model")
        subprocess.run([sys.executable, "-c", _MODEL, str(model)], check=True, capture_output=True, timeout=300)
    marker = ROOT / f"inputs-{files}x{rows}.done"  # beside the folder: every file in it is an input
    if not marker.is_file():
        log(f"writing {files} CSV files of {rows} rows to {data}")
        data.mkdir(parents=True, exist_ok=True)
        x, _ = load_diabetes(return_X_y=True, as_frame=True)
        rng = np.random.default_rng(7)
        for i in range(files):
            sample = x.sample(rows, replace=True, random_state=i).reset_index(drop=True)
            sample += rng.normal(0, 0.001, sample.shape)
            sample.to_csv(data / f"part-{i:04d}.csv", index=False)
        marker.write_text("")
    return data, model


# --- hand-written ------------------------------------------------------------------------------------------

# What a user writes instead of a batch endpoint, as a script of its own; run with `python -c`, timed whole
# (interpreter start and imports included, as the user waits for them), and from the pool's creation on.
HAND_WRITTEN = r"""
import os, sys, time
started = time.perf_counter()
from concurrent.futures import ProcessPoolExecutor
import mlflow.pyfunc
import pandas as pd

data, model_path, workers, out, engine = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
model = None

def init():
    global model
    model = mlflow.pyfunc.load_model(model_path)

def score(path):
    frame = pd.read_csv(path, engine=engine)
    result = pd.DataFrame({"file": os.path.basename(path), "prediction": model.predict(frame)})
    return result.to_csv(header=False, index=False)

if __name__ == "__main__":
    files = sorted(os.path.join(data, f) for f in os.listdir(data) if f.endswith(".csv"))
    pool_started = time.perf_counter()
    first = None
    with ProcessPoolExecutor(max_workers=workers, initializer=init) as pool, open(out, "w") as output:
        for text in pool.map(score, files, chunksize=1):
            if first is None:
                first = time.perf_counter() - started
            output.write(text)
    end = time.perf_counter()
    print(end - started, end - pool_started, first)
"""


def hand_written(data: Path, model: Path, workers: int, out: Path, engine: str) -> dict[str, float]:
    """The baseline script, run once: its whole time, its pool's time and its first row."""
    script = ROOT / "hand_written.py"
    script.write_text(HAND_WRITTEN)
    begun = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), str(data), str(model), str(workers), str(out), engine],
                          capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    wall = time.perf_counter() - begun
    if done.returncode != 0:
        raise RuntimeError(f"the hand-written loop failed:\n{done.stderr}")
    _, pool_s, first = (float(v) for v in done.stdout.split())
    return {"seconds": wall, "pool_seconds": pool_s, "first_row_s": first}


# --- tiffin ----------------------------------------------------------------------------------------------


def tiffin_job(client: Any, data: Path, home: Path) -> tuple[dict[str, float], Path]:
    """One job through the SDK; (timings, output file)."""
    started = time.perf_counter()
    job = client.batch_endpoints.invoke("bench", str(data))
    name, first = job["name"], None
    parts = home / "jobs" / name / "parts"
    while True:
        if first is None and parts.is_dir() and any(p.suffix == ".csv" for p in parts.iterdir()):
            first = time.perf_counter() - started
        job = client.jobs.get(name)
        if job["status"] in ("Completed", "Failed", "Canceled"):
            break
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    if job["status"] != "Completed":
        raise RuntimeError(f"job {name} ended {job['status']}: {job.get('error')}")
    return {"seconds": seconds, "first_row_s": first or seconds}, Path(job["outputs"]["score"]["path"])


def settle(pid: int, timeout: float = 60.0) -> float:
    """Wait until the process ``pid`` and every process it started (spare workers in sessions of their own
    included) use under 5% of a core over half a second; the seconds waited."""
    import psutil

    started = time.perf_counter()
    root = psutil.Process(pid)

    def cpu() -> float:
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    before = cpu()
    while time.perf_counter() - started < timeout:
        time.sleep(0.5)
        now = cpu()
        if now - before < 0.025:
            break
        before = now
    return time.perf_counter() - started


def rows_of(path: Path, names: tuple[str, ...] = ("file", "prediction")) -> Any:
    """The output's rows as a frame of (file, prediction) sorted by both: the two must agree, whatever their
    order and however each wrote a number. tiffin writes Azure's MLflow columns, ``row,prediction,file``."""
    import pandas as pd

    frame = pd.read_csv(path, header=None, names=list(names), engine="pyarrow")[["file", "prediction"]]
    return frame.sort_values(["file", "prediction"], ignore_index=True)


def same_rows(a: Any, b: Any) -> bool:
    """Whether two outputs hold the same rows (predictions equal as doubles)."""
    return (
        len(a) == len(b) and bool((a["file"] == b["file"]).all()) and bool((a["prediction"] == b["prediction"]).all())
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    data, model = prepare(args.files, args.rows)
    if args.own_python:  # no python_env.yaml, requirements.txt or conda.yaml: no environment to build
        own = ROOT / "model-own-python"
        own.mkdir(exist_ok=True)
        for name in ("MLmodel", "model.skops", "model.pkl"):
            if (model / name).is_file():
                (own / name).write_bytes((model / name).read_bytes())
        model = own
    total_rows = args.files * args.rows
    home = ROOT / "home"
    subprocess.run(["rm", "-rf", str(home)], check=True)
    port = free_port()
    env = {**os.environ, "TIFFIN_HOME": str(home), "TIFFIN_URL": f"http://{LOOPBACK}:{port}"}
    for name in ("TIFFIN_ADMIN_TOKEN", "TIFFIN_STORE_URL", "TIFFIN_RAY_ADDRESS"):
        env.pop(name, None)
    results: dict[str, list[dict[str, float]]] = {"hand-written": [], "tiffin": []}
    reference = None
    serve = [str(BIN / "tiffin"), "serve", "--port", str(port)]
    with Server("tiffin-serve", serve, port, BENCH_DIR / "logs" / "batch-serve.log", env=env) as server:
        server.wait_ready(path="/api/health")
        os.environ.update({k: env[k] for k in ("TIFFIN_HOME", "TIFFIN_URL")})
        from tiffin.sdk import TiffinClient

        with TiffinClient(env["TIFFIN_URL"]) as client:
            client.batch_endpoints.create_or_update({"name": "bench", "auth_mode": "key"})
            created = time.perf_counter()
            client.batch_deployments.create_or_update({
                "name": "mlflow", "endpoint_name": "bench", "type": "model",
                "model": {"path": str(model), "type": "mlflow_model"},
                "resources": {"instance_count": 1},
                "settings": {"max_concurrency_per_instance": args.workers, "mini_batch_size": 10,
                             "output_action": "append_row", "retry_settings": {"timeout": 300}},
            })  # fmt: skip
            # As `az ml batch-deployment create` waits for it: its environment built, spare workers started.
            create_s = time.perf_counter() - created
            log(f"batch-deployment create: Succeeded after {create_s:.2f} s")
            timing, output = tiffin_job(client, data, home)  # at once: the first job after the create
            first_job = {**timing, "create_s": create_s}
            log(
                f"tiffin first job after create: {timing['seconds']:.2f} s, first row after "
                f"{timing['first_row_s']:.2f} s (create to first row {create_s + timing['first_row_s']:.2f} s)"
            )
            assert server.proc is not None
            log(f"tiffin settled {settle(server.proc.pid):.1f} s after the job")
            for round_ in range(args.rounds):
                out = ROOT / "hand-written.csv"
                timing = hand_written(data, model, args.workers, out, args.baseline_engine)
                reference = rows_of(out)
                if len(reference) != total_rows:
                    raise RuntimeError(f"the hand-written loop wrote {len(reference)} rows, not {total_rows}")
                results["hand-written"].append(timing)
                log(f"hand-written #{round_ + 1}: {total_rows / timing['seconds']:,.0f} rows/s "
                    f"({timing['seconds']:.2f} s; pool alone {timing['pool_seconds']:.2f} s)")  # fmt: skip

                if round_ == 0 and not same_rows(rows_of(output, ("row", "prediction", "file")), reference):
                    raise RuntimeError("tiffin's first job's output differs from the hand-written loop's")
                timing, output = tiffin_job(client, data, home)
                if not same_rows(rows_of(output, ("row", "prediction", "file")), reference):
                    raise RuntimeError("tiffin's output differs from the hand-written loop's")
                results["tiffin"].append(timing)
                log(f"tiffin #{round_ + 1}: {total_rows / timing['seconds']:,.0f} rows/s ({timing['seconds']:.2f} s), "
                    f"first row after {timing['first_row_s']:.2f} s")  # fmt: skip
                assert server.proc is not None
                log(f"tiffin settled {settle(server.proc.pid):.1f} s after the job")

    print()
    print(f"{args.files} files x {args.rows} rows = {total_rows:,} rows, {args.workers} workers, "
          f"MLflow Ridge; baseline read_csv engine: {args.baseline_engine}")  # fmt: skip
    print(f"{'run':<18} | {'seconds':>8} | {'rows/s':>10} | {'first row s':>11} | {'pool alone s':>12}")
    print(f"{'-' * 18}-+-{'-' * 8}-+-{'-' * 10}-+-{'-' * 11}-+-{'-' * 12}")
    for label, runs in results.items():
        for i, r in enumerate(runs):
            pool = f"{r['pool_seconds']:>12.2f}" if "pool_seconds" in r else f"{'':>12}"
            print(f"{f'{label} #{i + 1}':<18} | {r['seconds']:>8.2f} | {total_rows / r['seconds']:>10,.0f} | "
                  f"{r['first_row_s']:>11.2f} | {pool}")  # fmt: skip
    first = first_job
    print(f"{'tiffin first job':<18} | {first['seconds']:>8.2f} | {total_rows / first['seconds']:>10,.0f} | "
          f"{first['first_row_s']:>11.2f} | {'':>12}  (create took {first['create_s']:.2f} s)")  # fmt: skip
    best = {label: min(r["seconds"] for r in runs) for label, runs in results.items()}
    pool_only = min(r["pool_seconds"] for r in results["hand-written"])
    ratio = best["hand-written"] / best["tiffin"]
    first_row = min(r["first_row_s"] for r in results["tiffin"])
    print()
    print(f"best of {args.rounds}: tiffin/hand-written rows/s = {ratio:.2f}x "
          f"({total_rows / best['tiffin']:,.0f} vs {total_rows / best['hand-written']:,.0f} rows/s, the script "
          f"timed whole); {pool_only / best['tiffin']:.2f}x against its pool alone "
          f"({total_rows / pool_only:,.0f} rows/s); tiffin submission to first row: {first_row:.2f} s; "
          f"first job after batch-deployment create: {first_job['first_row_s']:.2f} s to its first row "
          f"(the create {first_job['create_s']:.2f} s)")  # fmt: skip
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {
            "runs": results,
            "ratio": ratio,
            "ratio_pool_alone": pool_only / best["tiffin"],
            "first_row_s": first_row,
            "first_job_after_create": first_job,
        }
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
