"""An MLflow model served by tiffin (no scoring script) vs ``mlflow models serve``, in one run.

Logs a scikit-learn Ridge (diabetes data bundled with scikit-learn, with a signature) to a SQLite tracking
store under .bench/mlflow, registers it as ``diabetes`` version 1, then serves ``models:/diabetes/1``:

* ``mlflow models serve -m models:/diabetes/1 --env-manager local`` (MLflow's own server), and
* ``tiffin replica serve`` of an Azure deployment YAML with ``model: {path: models:/diabetes/1,
  type: mlflow_model}``, and
* ``tiffin replica serve`` of a script deployment of the same model (a copy of its folder; ``score.py`` loads
  it with ``mlflow.sklearn.load_model`` and predicts on a DataFrame of the ``dataframe_split`` payload, what a
  careful script does for a model fitted with feature names),

each alone on the machine, checks all answer the same predictions, and loads them with wrk (1 thread, 16
connections) POSTing the same ``dataframe_split`` payload (to ``/invocations``, the script to ``/score``).
Prints req/s, p50, p99 and the ratios of the MLflow deployment to ``mlflow models serve`` and to the script.

    .venv/bin/python benchmarks/bench_mlflow.py [--duration 15] [--warmup 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    BENCH_DIR,
    LOOPBACK,
    Server,
    ensure_wrk,
    free_port,
    http_request,
    log,
    run_main,
    run_wrk,
    write_wrk_script,
)

BIN = Path(sys.executable).parent
COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]
ROWS = [
    [0.038, 0.050, 0.061, 0.021, -0.044, -0.034, -0.043, -0.002, 0.019, -0.017],
    [-0.001, -0.044, -0.051, -0.026, -0.008, -0.019, 0.074, -0.039, -0.068, -0.092],
]
_LOG_MODEL = r"""
import sys, mlflow
from mlflow.models import infer_signature
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge
root = sys.argv[1]
mlflow.set_tracking_uri(f"sqlite:///{root}/mlflow.db")
if mlflow.get_experiment_by_name("bench") is None:
    mlflow.create_experiment("bench", artifact_location=f"{root}/artifacts")
mlflow.set_experiment("bench")
x, y = load_diabetes(return_X_y=True, as_frame=True)
model = Ridge().fit(x, y)
with mlflow.start_run():
    info = mlflow.sklearn.log_model(model, name="model", signature=infer_signature(x, model.predict(x)),
                                    registered_model_name="diabetes")
mlflow.artifacts.download_artifacts(info.model_uri, dst_path=f"{root}/script/model")
"""
_SCORE = r"""
import glob, json, os
import mlflow.sklearn
import pandas as pd

model = None


def init():
    global model
    found = glob.glob(os.path.join(os.environ["AZUREML_MODEL_DIR"], "**", "MLmodel"), recursive=True)
    model = mlflow.sklearn.load_model(os.path.dirname(found[0]))


def run(raw_data):
    split = json.loads(raw_data)["dataframe_split"]
    return {"predictions": model.predict(pd.DataFrame(split["data"], columns=split["columns"])).tolist()}
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=15.0, help="timed seconds per server (default 15)")
    p.add_argument("--warmup", type=float, default=3.0, help="untimed seconds first (default 3)")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    wrk = ensure_wrk()
    root = BENCH_DIR / "mlflow"
    subprocess.run(["rm", "-rf", str(root)], check=True)
    root.mkdir(parents=True)
    log("logging and registering the model with mlflow")
    subprocess.run([sys.executable, "-c", _LOG_MODEL, str(root)], check=True, capture_output=True, cwd=root)
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db", "TIFFIN_HOME": str(root / "home")}
    deployment = root / "mlflow-deployment.yml"
    deployment.write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n"
        "name: mlflow\nendpoint_name: bench\nmodel:\n  path: models:/diabetes/1\n  type: mlflow_model\n"
    )
    (root / "script" / "code").mkdir(parents=True)
    (root / "script" / "code" / "score.py").write_text(_SCORE)
    script_deployment = root / "script" / "script-deployment.yml"
    script_deployment.write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n"
        "name: script\nendpoint_name: bench\nmodel:\n  path: model/\n"
        "code_configuration:\n  code: code/\n  scoring_script: score.py\n"
    )
    body = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": ROWS}}).encode()
    script = write_wrk_script(BENCH_DIR / "wrk" / "mlflow.lua", body)
    servers = {
        "mlflow models serve": lambda port: [str(BIN / "mlflow"), "models", "serve", "-m", "models:/diabetes/1",
                                             "--env-manager", "local", "-h", LOOPBACK, "-p", str(port)],
        "tiffin": lambda port: [str(BIN / "tiffin"), "replica", "serve", "-f", str(deployment), "--port", str(port)],
        "tiffin script": lambda port: [str(BIN / "tiffin"), "replica", "serve", "-f", str(script_deployment),
                                       "--port", str(port)],
    }  # fmt: skip
    results: dict[str, dict[str, Any]] = {}
    answers: dict[str, Any] = {}
    for name, command in servers.items():
        port = free_port()
        env_path = {**env, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
        log_file = BENCH_DIR / "logs" / f"{name.replace(' ', '-')}.log"
        with Server(name, command(port), port, log_file, env=env_path) as server:
            server.wait_ready(timeout=180, path="/ping" if name.startswith("mlflow") else "/")
            url = server.base_url + ("/score" if name == "tiffin script" else "/invocations")
            status, raw = http_request(url, body)
            if status != 200:
                raise RuntimeError(f"{name} answered {status}: {raw[:300]!r}")
            answers[name] = json.loads(raw)["predictions"]
            if args.warmup > 0:
                run_wrk(wrk, url, script, args.warmup)
            result = run_wrk(wrk, url, script, args.duration)
            if result.errors:
                raise RuntimeError(f"{name}: {result.errors} failed requests")
            results[name] = result.to_dict()
            log(f"{name}: {result.requests_per_s:.1f} req/s, p50 {result.p50_ms} ms, p99 {result.p99_ms} ms")
    reference, ours = answers["mlflow models serve"], answers["tiffin"]
    for name, theirs in answers.items():
        if any(abs(a - b) > 1e-9 for a, b in zip(reference, theirs, strict=True)):
            raise RuntimeError(f"predictions differ: mlflow {reference}, {name} {theirs}")
    print()
    print(f"{'server':<20} | {'req/s':>9} | {'p50 ms':>8} | {'p99 ms':>8}")
    print(f"{'-' * 20}-+-{'-' * 9}-+-{'-' * 8}-+-{'-' * 8}")
    for name, r in results.items():
        print(f"{name:<20} | {r['requests_per_s']:>9.1f} | {r['p50_ms']:>8.2f} | {r['p99_ms']:>8.2f}")
    ratio = results["tiffin"]["requests_per_s"] / results["mlflow models serve"]["requests_per_s"]
    to_script = results["tiffin"]["requests_per_s"] / results["tiffin script"]["requests_per_s"]
    print(f"\nreq/s ratio tiffin/mlflow models serve: {ratio:.2f}x (same predictions: {ours})")
    print(f"req/s ratio tiffin MLflow deployment/script deployment of the same model: {to_script:.2f}x")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {"servers": results, "ratio": ratio, "ratio_to_script": to_script}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
