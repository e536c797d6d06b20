"""Batch jobs in the environment their deployment declares (issue 13): workers on that environment's interpreter.

Real everything: a real ``tiffin serve``, real uv builds into its ``envs/`` (the default uv cache, so a second
run is quick), pyenv's interpreters, packages from PyPI. Each scoring script or model reports, in its output
rows, the Python and library versions it ran with, which proves where it ran: tiffin's own Python is 3.11 with
pandas 2.x and numpy 2.x, the environments below are other Pythons with pandas 1.x and numpy 1.x.
"""

from __future__ import annotations

import ast
import contextlib
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tiffin.environments.builder import envs_dir
from tiffin.testing import serve_tiffin

ENDED = ("Completed", "Failed", "Canceled")
slow = pytest.mark.slow

# Scores each file with the versions it runs with; the model folder's listing shows AZUREML_MODEL_DIR was staged.
PROBE = """
import os
import sys
import time


def init():
    global MODEL
    MODEL = os.environ["AZUREML_MODEL_DIR"]
    if os.environ.get("PROBE_INIT_FAIL"):
        import pandas

        raise RuntimeError(f"init failed on purpose under pandas {pandas.__version__}")


def run(mini_batch):
    import numpy
    import pandas

    busy = os.environ.get("PROBE_BUSY_DIR")
    if busy:  # the cancel test: say who is inside run(), then stay there
        open(os.path.join(busy, str(os.getpid())), "w").close()
        time.sleep(600)
    rows = [[os.path.basename(path), sys.version.split()[0], pandas.__version__, numpy.__version__, sys.prefix,
             os.getsid(0) == os.getpid(), sorted(os.listdir(MODEL)), os.environ.get("PROBE_VAR")]
            for path in mini_batch]
    if os.environ.get("PROBE_FRAME"):  # Azure's DataFrame rows, written with this environment's pandas
        return pandas.DataFrame([row[:4] for row in rows], columns=["file", "python", "pandas", "numpy"])
    return rows
"""

# An MLflow model that needs no pickle (a loader module in its code folder), so any MLflow of its environment
# loads it; its own python_env.yaml and requirements.txt, as MLflow writes them, name that environment.
LOADER = """
import sys

import pandas as pd


class _Model:
    def predict(self, data):
        return pd.DataFrame({"prediction": data["x"] * 2, "python": sys.version.split()[0],
                             "pandas": pd.__version__})


def _load_pyfunc(path):
    return _Model()
"""

MLMODEL = """\
flavors:
  python_function:
    loader_module: probe_model
    code: code
    env:
      conda: conda.yaml
      virtualenv: python_env.yaml
    python_version: 3.9.18
"""

PYTHON_ENV = """\
python: 3.9.18
build_dependencies:
- pip==23.0.1
- setuptools==65.5.0
- wheel==0.38.4
dependencies:
- -r requirements.txt
"""

REQUIREMENTS = "mlflow-skinny==2.9.2\npandas==1.5.3\nnumpy==1.24.4\n"

# Python 3.10 with pandas 1.5 and numpy 1.26: neither is tiffin's (3.11, pandas 2.x, numpy 2.x).
CONDA_310 = {
    "name": "old-pandas",
    "channels": ["conda-forge"],
    "dependencies": ["python=3.10", "pip", "pandas=1.5.3", "numpy=1.26.4", {"pip": ["tzdata"]}],
}

# The oldest Python the runtime supports, with a pandas older than to_csv(lineterminator=) (1.5).
CONDA_38 = {"dependencies": ["python=3.8", "pandas=1.3.5", "numpy=1.21.6"]}


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with serve_tiffin(tmp_path_factory.mktemp("batch-env") / "home") as running:
        yield running
        with running.client() as client:
            for job in client.jobs.list():
                if job["status"] not in ENDED:
                    with contextlib.suppress(Exception):
                        client.jobs.cancel(job["name"])


def probe_deployment(tmp_path: Path, endpoint: str, conda: dict[str, Any], **env: str) -> dict[str, Any]:
    """A batch deployment of :data:`PROBE` whose environment is the inline conda file ``conda``."""
    code, model = tmp_path / "code", tmp_path / "model"
    code.mkdir(exist_ok=True)
    model.mkdir(exist_ok=True)
    (code / "probe.py").write_text(PROBE)
    (model / "weights.txt").write_text("3\n")
    return {
        "name": "main",
        "endpoint_name": endpoint,
        "type": "model",
        "model": {"path": str(model)},
        "code_configuration": {"code": str(code), "scoring_script": "probe.py"},
        "environment": {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04", "conda_file": conda},
        "resources": {"instance_count": 1},
        "settings": {
            "mini_batch_size": 1,
            "max_concurrency_per_instance": 2,
            "output_action": "append_row",
            "retry_settings": {"max_retries": 0, "timeout": 300},
            "environment_variables": env,
        },
    }


def create(server: Any, spec: dict[str, Any], *, wait: bool = True) -> None:
    with server.client() as client:
        client.batch_endpoints.create({"name": spec["endpoint_name"]})
        client.batch_deployments.create_or_update(spec, wait=wait)


def run_job(
    server: Any, spec: dict[str, Any], inputs: Path, timeout: float = 600, *, wait: bool = True
) -> tuple[dict[str, Any], str]:
    """Create the endpoint and deployment, invoke it on ``inputs``, wait for the end: (job, its log)."""
    create(server, spec, wait=wait)
    with server.client() as client:
        job = client.batch_endpoints.invoke(spec["endpoint_name"], inputs)
        final = client.jobs.stream(job["name"], interval=0.2, timeout=timeout)
        return final, client.jobs.read_log(job["name"])[0]


def output_lines(server: Any, job: str, tmp_path: Path) -> list[str]:
    with server.client() as client:
        target = client.jobs.download(job, tmp_path / f"download-{job}")
    return target.read_text().splitlines()


def text_files(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(f"{name}\n")
    return folder


@slow
@pytest.mark.timeout(900)
def test_a_job_runs_in_its_deployments_conda_environment(server: Any, tmp_path: Path) -> None:
    assert sys.version_info[:2] != (3, 10), "the environment must be another Python than tiffin's"
    spec = probe_deployment(tmp_path, "env-conda", CONDA_310, PROBE_VAR="from-the-deployment")
    final, log = run_job(server, spec, text_files(tmp_path / "in", ["a.txt", "b.txt", "c.txt"]))
    assert final["status"] == "Completed", (final, log)
    rows = [ast.literal_eval(line) for line in output_lines(server, final["name"], tmp_path)]
    assert sorted(row[0] for row in rows) == ["a.txt", "b.txt", "c.txt"]
    envs = envs_dir(server.home).resolve()  # TIFFIN_ENVS_DIR when the run shares one
    for name, python, pandas, numpy, prefix, own_session, model, variable in rows:
        assert python.startswith("3.10."), (name, python)
        assert (pandas, numpy) == ("1.5.3", "1.26.4"), name
        assert Path(prefix).resolve().parent == envs, f"{name} ran in {prefix}, not an environment under {envs}"
        assert own_session, f"{name}'s worker is not in a session of its own (its kill would miss its children)"
        assert model == ["model"], "AZUREML_MODEL_DIR holds the model folder, as Azure lays it out"
        assert variable == "from-the-deployment"
    # The job log says where the environment came from and what was skipped, then uv's output.
    assert "[tiffin] from conda_file of the environment of batch deployment 'main'" in log, log
    assert "[tiffin]   pandas==1.5.3" in log, log  # conda's =1.5.3, as pip reads it (==1.5.3.*)
    assert "[tiffin] skipped pip" in log, log
    assert "on Python 3.10 in environment" in log, log


@slow
@pytest.mark.timeout(900)
def test_python_38_environment_writes_dataframe_rows_with_its_old_pandas(server: Any, tmp_path: Path) -> None:
    spec = probe_deployment(tmp_path, "env-py38", CONDA_38, PROBE_FRAME="1")
    final, log = run_job(server, spec, text_files(tmp_path / "in", ["x.txt", "y.txt"]))
    assert final["status"] == "Completed", (final, log)
    rows = sorted(line.split(" ") for line in output_lines(server, final["name"], tmp_path))
    assert [row[0] for row in rows] == ["x.txt", "y.txt"]
    for row in rows:
        assert row[1].startswith("3.8.") and row[2:] == ["1.3.5", "1.21.6"], row


@slow
@pytest.mark.timeout(900)
def test_mlflow_model_without_environment_runs_in_its_own_requirements(server: Any, tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "code").mkdir(parents=True)
    (model / "code" / "probe_model.py").write_text(textwrap.dedent(LOADER))
    (model / "MLmodel").write_text(MLMODEL)
    (model / "python_env.yaml").write_text(PYTHON_ENV)
    (model / "requirements.txt").write_text(REQUIREMENTS)
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "one.csv").write_text("x\n1\n2\n3\n")
    (inputs / "two.csv").write_text("x\n10\n")
    spec = {
        "name": "main",
        "endpoint_name": "env-mlflow",
        "type": "model",
        "model": {"path": str(model), "type": "mlflow_model"},
        "resources": {"instance_count": 1},
        "settings": {"mini_batch_size": 1, "max_concurrency_per_instance": 1, "retry_settings": {"max_retries": 0}},
    }
    final, log = run_job(server, spec, inputs)
    assert final["status"] == "Completed", (final, log)
    rows = sorted(line.split(",") for line in output_lines(server, final["name"], tmp_path))
    # Azure's columns (row, prediction, file) around the model's own (python, pandas).
    assert [(r[0], r[1], r[4]) for r in rows] == [
        ("0", "2", "one.csv"), ("0", "20", "two.csv"), ("1", "4", "one.csv"), ("2", "6", "one.csv"),
    ]  # fmt: skip
    assert {(r[2][:4], r[3]) for r in rows} == {("3.9.", "1.5.3")}, rows
    assert "python_env.yaml (the MLflow model of batch deployment 'main')" in log, log


@slow
@pytest.mark.timeout(120)
def test_a_conda_file_asking_for_a_missing_package_fails_the_job_within_30s(server: Any, tmp_path: Path) -> None:
    missing = "tiffin-no-such-package-h13"
    conda = {"dependencies": ["python=3.12", {"pip": [f"{missing}==1.0"]}]}
    spec = probe_deployment(tmp_path, "env-missing", conda)
    started = time.monotonic()
    # Not waiting for the create, which fails the same way (tests/test_batch_provisioning.py): the job, invoked
    # while the deployment's build runs, then builds again and fails with uv's message.
    final, log = run_job(server, spec, text_files(tmp_path / "in", ["a.txt"]), timeout=60, wait=False)
    elapsed = time.monotonic() - started
    assert final["status"] == "Failed", (final, log)
    assert elapsed < 30, f"the job failed after {elapsed:.1f}s"
    assert missing in final["error"] and "environment of batch deployment 'main'" in final["error"], final["error"]
    assert "not found" in final["error"].lower(), final["error"]  # uv's own words
    assert missing in log


@slow
@pytest.mark.timeout(900)
def test_canceling_a_job_stops_its_environment_workers(server: Any, tmp_path: Path) -> None:
    """Workers on an environment's interpreter are found by their pid files and stop with their job."""
    busy = tmp_path / "busy"
    busy.mkdir()
    create(server, probe_deployment(tmp_path, "env-cancel", CONDA_310, PROBE_BUSY_DIR=str(busy)))
    with server.client() as client:
        job = client.batch_endpoints.invoke("env-cancel", text_files(tmp_path / "in", ["p.txt", "q.txt", "r.txt"]))
        wait_for(lambda: len(list(busy.iterdir())) == 2, 600, "both workers to be inside run()")
        inside = {int(p.name) for p in busy.iterdir()}
        folder = server.home / "jobs" / job["name"] / "workers"
        assert {int(p.read_text()) for p in folder.glob("*.pid")} == inside
        envs = envs_dir(server.home).resolve()  # TIFFIN_ENVS_DIR when the run shares one
        for pid in inside:  # ENV/bin/python -m tiffin.batch.worker_main --fd N
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert Path(argv[0].decode()).parents[2].resolve() == envs, argv
            assert b"tiffin.batch.worker_main" in argv, argv
        client.jobs.cancel(job["name"])
        wait_for(lambda: client.jobs.get(job["name"])["status"] == "Canceled", 10, "the job to be Canceled")
        wait_for(lambda: not any(map(pid_alive, inside)), 10, "its workers to stop")


@slow
@pytest.mark.timeout(900)
def test_init_failing_in_an_environment_fails_the_job_with_its_reason(server: Any, tmp_path: Path) -> None:
    """What a worker on an environment's interpreter says (over its socket) reaches the job, as from a forked one."""
    spec = probe_deployment(tmp_path, "env-init", CONDA_310, PROBE_INIT_FAIL="1")
    final, log = run_job(server, spec, text_files(tmp_path / "in", ["a.txt"]))
    assert final["status"] == "Failed", (final, log)
    assert "init failed on purpose under pandas 1.5.3" in final["error"], final["error"]
    assert "Traceback" in log, "the scoring code's traceback is in the job log"
