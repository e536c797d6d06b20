"""Batch endpoints: the pure planning rules, input resolution and row writing; then real jobs end to end.

The integration tests run a real ``tiffin serve`` on a free loopback port (one per module where tests do not
interfere, each test on an endpoint of its own), real worker processes, a real MLflow model and a real Ray
cluster, and talk to them as users do: the CLI in subprocesses, the SDK, or plain HTTP. The scoring script
is ``tests/batch_scripts/driver.py``, an unmodified-contract Azure batch driver whose behaviour (slow,
failing, hanging...) the deployment's ``settings.environment_variables`` choose.

Every wait polls with a deadline; nothing is asserted from a sleep.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tiffin.batch.inputs import datastore_path, resolve_input
from tiffin.batch.planner import MiniBatch, Progress, after_failure, over_threshold, plan
from tiffin.errors import ScoringError, SpecError
from tiffin.runners.batch import ScriptBatchScorer, write_rows
from tiffin.specs import with_job_settings
from tiffin.testing import command_lines, free_port, serve_tiffin, stop_process_group

SCRIPTS = Path(__file__).parent / "batch_scripts"
FACTOR = int((SCRIPTS / "model" / "factor.txt").read_text())
ENDED = ("Completed", "Failed", "Canceled")
slow = pytest.mark.slow


# --- helpers ---------------------------------------------------------------------------------------


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy (returned); fail saying ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def cli(server: Any, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``tiffin ARGS`` as a user runs it, against ``server``."""
    done = subprocess.run(
        [sys.executable, "-m", "tiffin.cli", *args], capture_output=True, text=True, env=server.env, timeout=timeout
    )
    if check:
        assert done.returncode == 0, f"tiffin {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def cli_json(server: Any, *args: str) -> Any:
    """The one JSON document ``tiffin ARGS -o json`` prints."""
    return json.loads(cli(server, *args, "-o", "json").stdout)


def deployment_spec(
    name: str,
    endpoint: str,
    *,
    env: dict[str, str] | None = None,
    code: str = str(SCRIPTS),
    model: str = str(SCRIPTS / "model"),
    **settings: Any,
) -> dict[str, Any]:
    """A batch deployment of ``driver.py`` in Azure's ``settings:`` shape."""
    retry = {"max_retries": settings.pop("max_retries", 1), "timeout": settings.pop("timeout", 60)}
    return {
        "$schema": "https://azuremlschemas.azureedge.net/latest/batchDeployment.schema.json",
        "name": name,
        "endpoint_name": endpoint,
        "type": "model",
        "model": {"path": model},
        "code_configuration": {"code": code, "scoring_script": "driver.py"},
        "compute": "azureml:batch-cluster",
        "resources": {"instance_count": settings.pop("instance_count", 1)},
        "settings": {
            "mini_batch_size": 2,
            "max_concurrency_per_instance": 1,
            "output_action": "append_row",
            "retry_settings": retry,
            "error_threshold": -1,
            "logging_level": "info",
            **settings,
            "environment_variables": dict(env or {}),
        },
    }


def create(server: Any, endpoint: str, *deployments: dict[str, Any], auth_mode: str = "aad_token") -> None:
    """Create a batch endpoint and deployments through the SDK (the first deployment becomes the default)."""
    with server.client() as client:
        client.batch_endpoints.create({"name": endpoint, "auth_mode": auth_mode})
        for spec in deployments:
            client.batch_deployments.create_or_update(spec)


def text_inputs(folder: Path, names: list[str]) -> dict[str, list[str]]:
    """Text files named ``names``, each of a different word count; the driver's expected row per file."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for n, name in enumerate(names):
        words = [f"word{name.split('.')[0]}{k}" for k in range(n + 1)]
        (folder / name).write_text(" ".join(words) + "\n")
        expected[name] = [name, str(len(words)), words[0].upper()]
    return expected


def csv_inputs(folder: Path, count: int, rows: int = 5) -> dict[str, list[str]]:
    """``count`` CSV files with columns x,y; the driver's expected row per file."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for n in range(count):
        name = f"data-{n:02d}.csv"
        xs = [n * 10 + k for k in range(rows + n)]
        (folder / name).write_text("x,y\n" + "".join(f"{x},{x * 2}\n" for x in xs))
        expected[name] = [name, str(len(xs)), repr(float(FACTOR * sum(xs)))]
    return expected


def read_rows(path: Path) -> list[list[str]]:
    """The output file's rows as Azure's append_row writes them, each value as text: a list element per line
    (its Python literal), or a DataFrame's rows with values separated by spaces."""
    rows: list[list[str]] = []
    for line in path.read_text().splitlines():
        if line.startswith(("[", "(")):
            rows.append([str(value) for value in ast.literal_eval(line)])
        else:
            rows.extend(csv.reader([line], delimiter=" "))
    return rows


def by_file(rows: list[list[str]]) -> dict[str, list[str]]:
    """Rows keyed by their first column, failing if any input file got more than one row."""
    counts = Counter(row[0] for row in rows)
    assert all(n == 1 for n in counts.values()), f"files with several rows: {counts}"
    return {row[0]: row for row in rows}


def finish(client: Any, job: str, timeout: float = 90) -> dict[str, Any]:
    """Wait until the job ended; the final job."""
    return client.jobs.stream(job, interval=0.2, timeout=timeout)


def output_rows(server: Any, job: str, tmp_path: Path) -> list[list[str]]:
    """The job's output file, downloaded through the SDK."""
    with server.client() as client:
        target = client.jobs.download(job, tmp_path / f"download-{job}")
    return read_rows(target)


def job_log(server: Any, job: str) -> str:
    with server.client() as client:
        return client.jobs.read_log(job)[0]


def worker_pids(home: Path, job: str) -> set[int]:
    """The job's live worker processes as tiffin names them: ``$TIFFIN_HOME/jobs/JOB/workers/SLOT.pid``."""
    folder = home / "jobs" / job / "workers"
    pids = {int(p.read_text()) for p in folder.glob("*.pid")} if folder.is_dir() else set()
    return {pid for pid in pids if pid_alive(pid)}


def pids_in(folder: Path) -> set[int]:
    """The pids the scoring script wrote (``BATCH_PID_DIR``: every worker that ran init(); ``BATCH_BUSY_DIR``)."""
    return {int(p.name) for p in folder.iterdir()} if folder.exists() else set()


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One ``tiffin serve`` for the tests whose endpoints do not interfere (default max 1 job per deployment)."""
    with serve_tiffin(tmp_path_factory.mktemp("batch-serve") / "home") as running:
        yield running


@pytest.fixture
def batch_server(server: Any) -> Iterator[Any]:
    """The shared server; jobs a test leaves unfinished are canceled after it, so they cannot slow the next."""
    yield server
    with server.client() as client:
        for job in client.jobs.list():
            if job["status"] not in ENDED:
                with contextlib.suppress(Exception):
                    client.jobs.cancel(job["name"])


# --- 1. pure rules: planner, inputs, rows ------------------------------------------------------------


def test_plan_sorts_files_and_cuts_mini_batches_of_the_size() -> None:
    files = ["/in/e.csv", "/in/a.csv", "/in/c.csv", "/in/b.csv", "/in/d.csv"]
    assert plan(files, 2) == [
        MiniBatch(0, ("/in/a.csv", "/in/b.csv")),
        MiniBatch(1, ("/in/c.csv", "/in/d.csv")),
        MiniBatch(2, ("/in/e.csv",)),
    ]
    assert plan(reversed(files), 2) == plan(files, 2), "the plan must not depend on listing order"
    assert plan(files, 1) == [MiniBatch(i, (f,)) for i, f in enumerate(sorted(files))]
    assert plan(files, 5) == [MiniBatch(0, tuple(sorted(files)))]
    assert plan(files, 100) == [MiniBatch(0, tuple(sorted(files)))]
    assert plan(iter(files), 3) == [MiniBatch(0, tuple(sorted(files)[:3])), MiniBatch(1, tuple(sorted(files)[3:]))]


def test_plan_of_nothing_is_no_mini_batch() -> None:
    assert plan([], 3) == []
    assert plan([], 1) == []


@pytest.mark.parametrize("size", [0, -1, -10])
def test_plan_refuses_a_size_below_one(size: int) -> None:
    with pytest.raises(ValueError, match="mini_batch_size"):
        plan(["a"], size)


def test_after_failure_allows_max_retries_more_attempts() -> None:
    assert after_failure(1, 0) == "give_up"
    assert [after_failure(n, 1) for n in (1, 2)] == ["retry", "give_up"]
    assert [after_failure(n, 3) for n in (1, 2, 3, 4, 5)] == ["retry", "retry", "retry", "give_up", "give_up"]


def test_over_threshold_minus_one_ignores_every_failure() -> None:
    assert not any(over_threshold(n, -1) for n in (0, 1, 10, 10_000))


@pytest.mark.parametrize(("threshold", "tolerated"), [(0, 0), (1, 1), (5, 5)])
def test_over_threshold_tolerates_up_to_n(threshold: int, tolerated: int) -> None:
    assert not over_threshold(0, threshold)
    assert not over_threshold(tolerated, threshold)
    assert over_threshold(tolerated + 1, threshold)
    assert over_threshold(tolerated + 100, threshold)


def test_job_settings_override_the_deployment_for_one_job() -> None:
    spec = {"settings": {"mini_batch_size": 10, "retry_settings": {"max_retries": 3, "timeout": 30},
                         "environment_variables": {"A": "1"}}, "resources": {"instance_count": 1}}  # fmt: skip
    changed = with_job_settings(spec, {
        "mini_batch_size": 20, "compute.instance_count": 5, "settings.output_file_name": "mine.csv",
        "retry_settings.max_retries": 1, "environment_variables": {"B": "2"},
    })  # fmt: skip
    assert changed == {
        "settings": {"mini_batch_size": 20, "output_file_name": "mine.csv",
                     "retry_settings": {"max_retries": 1, "timeout": 30},
                     "environment_variables": {"A": "1", "B": "2"}},
        "resources": {"instance_count": 5},
    }  # fmt: skip
    assert spec["settings"]["mini_batch_size"] == 10, "the deployment's own spec is left as it was"
    assert with_job_settings(spec, {"resources.instance_count": 2})["resources"] == {"instance_count": 2}


@pytest.mark.parametrize(
    ("key", "message"),
    [("model", "cannot be set for one job"), ("mini_batch_size.x", "has no field 'x'"), ("code", "mini_batch_size")],
)
def test_job_settings_refuse_what_a_job_cannot_change(key: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        with_job_settings({}, {key: 1})
    assert info.value.field == key


def test_progress_of_counts_mini_batches_items_and_rows() -> None:
    progress = Progress.of(
        [("done", 3, 0, 3), ("done", 3, 1, 2), ("failed", 2, 2, None), ("running", 3, 0, None), ("pending", 1, 0, None)]
    )
    assert progress == Progress(total=5, done=2, failed=1, items=12, failed_items=3, rows=5)
    assert progress.as_dict() == {
        "mini_batches_total": 5,
        "mini_batches_completed": 2,
        "mini_batches_failed": 1,
        "items_total": 12,
        "items_failed": 3,
        "rows_scored": 5,
    }
    assert Progress.of([]) == Progress(0, 0, 0, 0, 0, 0)


@pytest.fixture
def input_tree(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.csv", "a.csv", "c.txt", ".hidden", ".DS_Store"):
        (folder / name).write_text("x\n1\n")
    (folder / "sub" / "d.csv").write_text("x\n1\n")
    return folder


def test_resolve_input_folder_lists_its_own_visible_files(input_tree: Path) -> None:
    expected = [str(input_tree / n) for n in ("a.csv", "b.csv", "c.txt")]
    assert resolve_input(str(input_tree)) == expected
    assert resolve_input(str(input_tree), "uri_folder") == expected
    assert resolve_input("inputs", base=input_tree.parent) == expected, "relative to base"


def test_resolve_input_file_and_glob(input_tree: Path) -> None:
    assert resolve_input(str(input_tree / "a.csv")) == [str(input_tree / "a.csv")]
    assert resolve_input(str(input_tree / "a.csv"), "uri_file") == [str(input_tree / "a.csv")]
    assert resolve_input(str(input_tree / "*.csv")) == [str(input_tree / "a.csv"), str(input_tree / "b.csv")]
    assert resolve_input(str(input_tree / "**" / "*.csv")) == [
        str(input_tree / n) for n in ("a.csv", "b.csv", "sub/d.csv")
    ]
    assert resolve_input("inputs/?.txt", base=input_tree.parent) == [str(input_tree / "c.txt")]


@pytest.mark.parametrize(
    ("path", "input_type", "message"),
    [
        ("missing", None, "does not exist"),
        ("*.parquet", None, "matches no file"),
        (".", "uri_file", "is a folder"),
        ("a.csv", "uri_folder", "is a file"),
        ("a.csv", "uri_table", "must be one of"),
        ("azureml:my-data:1", None, "remote or registered"),
        ("https://example.com/data/", None, "remote or registered"),
    ],
)
def test_resolve_input_errors_say_what_is_wrong(input_tree: Path, path: str, input_type: str, message: str) -> None:
    full = path if ":" in path else str(input_tree / path)
    with pytest.raises(SpecError, match=message):
        resolve_input(full, input_type)


def test_datastore_uris_name_folders_of_tiffins_home(tmp_path: Path) -> None:
    uri = "azureml://datastores/workspaceblobstore/paths/mnist-batch/out"
    assert datastore_path(uri, tmp_path) == tmp_path / "datastores" / "workspaceblobstore" / "mnist-batch" / "out"
    assert datastore_path("azureml://datastores/ds/paths/", tmp_path) == tmp_path / "datastores" / "ds"
    assert datastore_path("azureml://datastores/ds/paths", tmp_path) == tmp_path / "datastores" / "ds"
    for other in ("/data/in", "https://example.com/x", "azureml:heart-dataset@latest", "azureml://jobs/x/outputs"):
        assert datastore_path(other, tmp_path) is None
    with pytest.raises(SpecError, match="climbs out") as info:
        datastore_path("azureml://datastores/ds/paths/a/../../b", tmp_path, field="output_path")
    assert info.value.field == "output_path"


def test_write_rows_writes_each_list_element_as_its_str_on_a_line() -> None:
    # Azure's append_row writes str(element) per line: a list row is its Python literal (Azure's docs read the
    # file back with ast.literal_eval).
    rows = [["a.csv", 1, 2.5], ("b.csv", "x,y", None)]
    assert write_rows(rows) == (b"['a.csv', 1, 2.5]\n('b.csv', 'x,y', None)\n", 2)
    assert write_rows([1, "two", 4.5]) == (b"1\ntwo\n4.5\n", 3)
    assert write_rows([{"file": "a", "score": 1}]) == (b"{'file': 'a', 'score': 1}\n", 1)
    assert write_rows([]) == (b"", 0)


def test_write_rows_dataframe_separated_by_spaces_without_header_or_index() -> None:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"file": ["a.csv", "b c.csv"], "score": [0.5, 1.5]}, index=[10, 20])
    assert write_rows(frame) == (b'a.csv 0.5\n"b c.csv" 1.5\n', 2)
    # Read back as Azure's notebooks read a DataFrame's rows.
    back = pd.read_csv(io.BytesIO(write_rows(frame)[0]), header=None, names=["file", "score"], sep=" ")
    assert back.to_dict("list") == {"file": ["a.csv", "b c.csv"], "score": [0.5, 1.5]}
    assert write_rows(np.array([0.5, 1.5])) == (b"0.5\n1.5\n", 2)


def test_write_rows_numpy_rows_are_written_as_their_str() -> None:
    import numpy as np

    # run() returning model.predict_proba(...) (a 2-D array): each row is one element, written as str() does.
    assert write_rows(np.array([[1, 2], [3, 4]])) == (b"[1 2]\n[3 4]\n", 2)


@pytest.mark.parametrize("value", [None, 42, "a,b", b"bytes", {"a": 1}, 3.5, object()])
def test_write_rows_refuses_what_is_not_rows(value: Any) -> None:
    with pytest.raises(ScoringError, match="return a list or a pandas DataFrame"):
        write_rows(value)


def test_script_scorer_counts_missing_rows_as_failed_inputs(tmp_path: Path) -> None:
    (tmp_path / "score.py").write_text(
        "def init():\n    pass\n\n"
        "def run(mini_batch):\n"
        "    if 'none' in mini_batch[0]:\n        return None\n"
        "    return [[p, 1] for p in mini_batch if 'skip' not in p]\n"
    )
    scorer = ScriptBatchScorer(tmp_path, "score.py")
    scorer.load()
    output = scorer.score(["/x/a", "/x/skip-b", "/x/c"])
    assert (output.csv, output.rows, output.failed_items) == (b"['/x/a', 1]\n['/x/c', 1]\n", 2, 1)
    with pytest.raises(ScoringError, match="returned None"):
        scorer.score(["/x/none"])


# --- 2. an Azure batch driver through the CLI ------------------------------------------------------


@slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["csv", "text"])
def test_cli_batch_driver_over_a_folder(batch_server: Any, tmp_path: Path, kind: str) -> None:
    server = batch_server
    endpoint = f"driver-{kind}"
    # The user's project, Azure-style: YAML next to code/ and model/, relative paths.
    project = tmp_path / "project"
    shutil.copytree(SCRIPTS, project / "code", ignore=shutil.ignore_patterns("model", "__pycache__"))
    shutil.copytree(SCRIPTS / "model", project / "model")
    (project / "endpoint.yml").write_text(
        yaml.safe_dump(
            {
                "$schema": "https://azuremlschemas.azureedge.net/latest/batchEndpoint.schema.json",
                "name": endpoint,
                "description": f"scores {kind} files",
                "tags": {"kind": kind},
            }
        )
    )
    spec = deployment_spec(
        "main", endpoint, code="code", model="model", mini_batch_size=3, max_concurrency_per_instance=2,
        env={"BATCH_RETURN": "dataframe"} if kind == "csv" else {},
        **({"output_file_name": "scores.csv"} if kind == "text" else {}),
    )  # fmt: skip
    (project / "deployment.yml").write_text(yaml.safe_dump(spec))
    inputs = tmp_path / "inputs"
    if kind == "csv":
        expected = csv_inputs(inputs, 7)
    else:
        expected = text_inputs(inputs, ["alpha.txt", "beta.txt", "gamma.txt", "delta.txt", "epsilon.txt"])
    (inputs / ".hidden.csv").write_text("x,y\n1,1\n")  # neither hidden files...
    (inputs / "nested").mkdir()
    (inputs / "nested" / "deeper.csv").write_text("x,y\n1,1\n")  # ...nor sub-folders are inputs

    shown = cli_json(server, "batch-endpoint", "create", "-f", str(project / "endpoint.yml"))
    assert shown["name"] == endpoint
    assert shown["scoring_uri"] == f"{server.url}/api/batch-endpoints/{endpoint}/jobs"
    created = cli_json(server, "batch-deployment", "create", "-f", str(project / "deployment.yml"))
    assert created["provisioning_state"] == "Succeeded"
    assert cli_json(server, "batch-endpoint", "show", "-n", endpoint)["defaults"]["deployment_name"] == "main"

    job = cli_json(server, "batch-endpoint", "invoke", "--name", endpoint, "--input", str(inputs))
    name = job["name"]
    assert job["status"] in ("Queued", "Running")
    assert job["deployment_name"] == "main"

    streamed = cli(server, "job", "stream", "-n", name, check=False, timeout=120)
    assert streamed.returncode == 0, streamed.stdout + streamed.stderr
    assert "Completed" in streamed.stderr

    shown = cli_json(server, "job", "show", "-n", name)
    assert shown["status"] == "Completed"
    batches = -(-len(expected) // 3)
    assert shown["progress"] == {
        "mini_batches_total": batches,
        "mini_batches_completed": batches,
        "mini_batches_failed": 0,
        "items_total": len(expected),
        "items_failed": 0,
        "rows_scored": len(expected),
    }
    assert shown["errors"] == []
    output_file = "scores.csv" if kind == "text" else "predictions.csv"
    assert Path(shown["outputs"]["score"]["path"]).name == output_file

    target = tmp_path / "downloaded"
    cli(server, "job", "download", "-n", name, "--download-path", str(target))
    assert sorted(p.name for p in target.iterdir()) == [output_file]
    rows = read_rows(target / output_file)
    assert len(rows) == len(expected)
    assert by_file(rows) == {name_: [*row, ""] for name_, row in expected.items()}
    assert [row[0] for row in rows] == sorted(expected), "rows come in the planned order"


# --- 3. MLflow model without a script --------------------------------------------------------------

_MLFLOW = r"""
import json, sys
from pathlib import Path
import mlflow, pandas as pd
from mlflow.models import infer_signature
from sklearn.linear_model import Ridge
root, inputs = Path(sys.argv[1]), Path(sys.argv[2])
train = pd.concat([pd.read_csv(p) for p in sorted(inputs.glob("*.csv"))], ignore_index=True)
target = 2.0 * train["a"] - train["b"] + 0.5 * train["c"]
model = Ridge(alpha=0.1).fit(train, target)
mlflow.sklearn.save_model(model, str(root / "model"), signature=infer_signature(train, model.predict(train)))
loaded = mlflow.pyfunc.load_model(str(root / "model"))
print(json.dumps({p.name: [float(v) for v in loaded.predict(pd.read_csv(p))] for p in sorted(inputs.glob("*.csv"))}))
"""


@slow
@pytest.mark.timeout(300)
def test_mlflow_model_without_script_scores_every_row(batch_server: Any, tmp_path: Path) -> None:
    import numpy as np

    server = batch_server
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    rng = np.random.default_rng(7)
    sizes = {"part-a.csv": 300, "part-b.csv": 250, "part-c.csv": 320}
    for name, size in sizes.items():
        values = rng.normal(size=(size, 3))
        (inputs / name).write_text("a,b,c\n" + "".join(f"{a!r},{b!r},{c!r}\n" for a, b, c in values.tolist()))
    done = subprocess.run(
        [sys.executable, "-c", _MLFLOW, str(tmp_path), str(inputs)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = json.loads(done.stdout.strip().splitlines()[-1])

    spec = {
        "name": "ridge",
        "endpoint_name": "mlflow-batch",
        "type": "model",
        "model": {"path": str(tmp_path / "model"), "type": "mlflow_model"},
        "resources": {"instance_count": 1},
        "settings": {"mini_batch_size": 2, "max_concurrency_per_instance": 2, "retry_settings": {"max_retries": 0}},
    }
    create(server, "mlflow-batch", spec)
    with server.client() as client:
        job = client.batch_endpoints.invoke("mlflow-batch", inputs)
        final = finish(client, job["name"], timeout=180)
    assert final["status"] == "Completed", (final, job_log(server, job["name"]))
    assert final["progress"]["items_total"] == 3
    assert final["progress"]["rows_scored"] == sum(sizes.values())
    import pandas as pd

    with server.client() as client:
        target = client.jobs.download(job["name"], tmp_path / "dl")
    # Read as Azure's heart-classifier-mlflow notebook reads it: row (in its file), prediction, file.
    score = pd.read_csv(target, names=["row", "prediction", "file"])
    assert len(score) == sum(sizes.values()), "one output row per input row"
    assert Counter(score["file"]) == sizes
    for name, predictions in expected.items():
        rows = score[score["file"] == name]
        assert rows["row"].tolist() == list(range(sizes[name])), name
        assert rows["prediction"].tolist() == pytest.approx(predictions, rel=1e-9, abs=1e-12), name


# --- 4-7. failures, retries, timeouts, summary_only ------------------------------------------------


@slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("threshold", [-1, 0])
def test_error_threshold(batch_server: Any, tmp_path: Path, threshold: int) -> None:
    server = batch_server
    endpoint = "threshold-any" if threshold < 0 else "threshold-zero"
    expected = text_inputs(tmp_path / "in", ["good-1.txt", "good-2.txt", "bad-1.txt", "good-3.txt"])
    create(
        server,
        endpoint,
        deployment_spec("main", endpoint, env={"BATCH_FAIL_BAD": "1"}, mini_batch_size=1, max_retries=0,
                        error_threshold=threshold),
    )  # fmt: skip
    job = cli_json(server, "batch-endpoint", "invoke", "-n", endpoint, "--input", str(tmp_path / "in"))
    streamed = cli(server, "job", "stream", "-n", job["name"], check=False)
    shown = cli_json(server, "job", "show", "-n", job["name"])
    if threshold < 0:
        assert streamed.returncode == 0, streamed.stderr
        assert shown["status"] == "Completed"
        progress = shown["progress"]
        assert (progress["mini_batches_total"], progress["mini_batches_completed"]) == (4, 3)
        assert (progress["mini_batches_failed"], progress["items_failed"], progress["rows_scored"]) == (1, 1, 3)
        assert [e["items"] for e in shown["errors"]] == [[str((tmp_path / "in" / "bad-1.txt").resolve())]]
        assert "cannot score" in shown["errors"][0]["error"]
        rows = output_rows(server, job["name"], tmp_path)
        assert by_file(rows) == {n: [*r, ""] for n, r in expected.items() if "bad" not in n}
    else:
        assert streamed.returncode == 1, streamed.stdout + streamed.stderr
        assert "Failed" in streamed.stderr
        assert shown["status"] == "Failed"
        assert "error_threshold" in shown["error"]
        assert shown["progress"]["mini_batches_failed"] == 1
        download = cli(server, "job", "download", "-n", job["name"], "-p", str(tmp_path / "dl"), check=False)
        assert download.returncode == 1
        assert "Failed" in download.stderr


@slow
@pytest.mark.timeout(180)
def test_a_mini_batch_failing_once_is_retried(batch_server: Any, tmp_path: Path) -> None:
    server = batch_server
    markers = tmp_path / "markers"
    markers.mkdir()
    expected = text_inputs(tmp_path / "in", ["one.txt", "two.txt", "three.txt", "four.txt"])
    env = {"BATCH_MARKERS": str(markers), "BATCH_FIRST_ATTEMPT": "raise"}
    create(server, "retry-once", deployment_spec("main", "retry-once", env=env, mini_batch_size=2, max_retries=1))
    with server.client() as client:
        job = client.batch_endpoints.invoke("retry-once", tmp_path / "in")
        final = finish(client, job["name"])
    log = job_log(server, job["name"])
    assert final["status"] == "Completed", log
    assert len(list(markers.iterdir())) == 2, "each of the two mini-batches failed its first attempt"
    assert log.count("retrying") == 2, log
    assert "fails on purpose" in log
    assert final["progress"]["mini_batches_failed"] == 0
    assert final["errors"] == []
    assert by_file(output_rows(server, job["name"], tmp_path)) == {n: [*r, ""] for n, r in expected.items()}


@slow
@pytest.mark.timeout(180)
def test_a_mini_batch_over_its_timeout_is_killed_and_retried(batch_server: Any, tmp_path: Path) -> None:
    server = batch_server
    markers, pids = tmp_path / "markers", tmp_path / "pids"
    markers.mkdir()
    pids.mkdir()
    expected = text_inputs(tmp_path / "in", ["slow-a.txt", "slow-b.txt", "slow-c.txt"])
    env = {"BATCH_MARKERS": str(markers), "BATCH_FIRST_ATTEMPT": "hang", "BATCH_PID_DIR": str(pids)}
    spec = deployment_spec(
        "main", "timeouts", env=env, mini_batch_size=2, max_concurrency_per_instance=2, max_retries=1, timeout=4
    )
    create(server, "timeouts", spec)
    started = time.monotonic()
    with server.client() as client:
        job = client.batch_endpoints.invoke("timeouts", tmp_path / "in")
        final = finish(client, job["name"], timeout=120)
    log = job_log(server, job["name"])
    assert final["status"] == "Completed", log
    assert time.monotonic() - started < 100, "the hanging attempts (600 s) were not cut short"
    assert log.count("timed out after 4s") == 2, log
    assert by_file(output_rows(server, job["name"], tmp_path)) == {n: [*r, ""] for n, r in expected.items()}
    assert len(pids_in(pids)) == 4, "two workers, and one fresh worker (init() again) per killed one"
    wait_for(lambda: not any(map(pid_alive, pids_in(pids))), 15, "the job's workers (the hung ones too) to be gone")


@slow
@pytest.mark.timeout(240)
def test_invoke_changes_settings_for_one_job_and_writes_into_output_path(batch_server: Any, tmp_path: Path) -> None:
    server = batch_server
    expected = text_inputs(tmp_path / "in", [f"o{i}.txt" for i in range(6)])
    create(server, "per-job", deployment_spec("main", "per-job", mini_batch_size=2))
    out = tmp_path / "results" / "run1"  # created by the job
    # As Azure's docs invoke with other settings for one job.
    job = cli_json(
        server, "batch-endpoint", "invoke", "--name", "per-job", "--input", str(tmp_path / "in"),
        "--mini-batch-size", "4", "--instance-count", "2", "--output-path", str(out),
        "--set", "output_file_name=mypredictions.csv", "--set", "max_concurrency_per_instance=1",
        "--set", "retry_settings.max_retries=0",
    )  # fmt: skip
    assert job["outputs"] == {"score": {"type": "uri_folder", "path": str(out)}}, "where the output will be"
    with server.client() as client:
        final = finish(client, job["name"])
    assert final["status"] == "Completed", final
    assert final["progress"]["mini_batches_total"] == 2, "6 files in mini-batches of 4, not of the deployment's 2"
    assert final["outputs"]["score"]["path"] == str(out / "mypredictions.csv")
    assert sorted(p.name for p in out.iterdir()) == ["mypredictions.csv"], "no temporary file left beside it"
    assert by_file(read_rows(out / "mypredictions.csv")) == {n: [*r, ""] for n, r in expected.items()}
    assert by_file(output_rows(server, job["name"], tmp_path)) == {n: [*r, ""] for n, r in expected.items()}

    # The deployment itself is unchanged: the next job runs on its own settings, into its own folder.
    plain = cli_json(server, "batch-endpoint", "invoke", "--name", "per-job", "--input", str(tmp_path / "in"))
    with server.client() as client:
        final = finish(client, plain["name"])
    assert final["progress"]["mini_batches_total"] == 3
    assert Path(final["outputs"]["score"]["path"]).name == "predictions.csv"
    assert not Path(final["outputs"]["score"]["path"]).is_relative_to(out)
    shown = cli_json(server, "batch-deployment", "show", "-n", "main", "-e", "per-job")
    assert shown["settings"]["mini_batch_size"] == 2 and shown["resources"]["instance_count"] == 1

    # Azure's datastore URIs, as its mnist script writes them, stand for folders of tiffin's home.
    store = server.home / "datastores" / "workspaceblobstore"
    shutil.copytree(tmp_path / "in", store / "mnist" / "sample")
    job = cli_json(
        server, "batch-endpoint", "invoke", "--name", "per-job",
        "--input", "azureml://datastores/workspaceblobstore/paths/mnist/sample",
        "--output-path", "azureml://datastores/workspaceblobstore/paths/per-job",
        "--set", "output_file_name=predictions_7.csv",
    )  # fmt: skip
    assert job["inputs"]["input_type"] == "uri_folder" and job["inputs"]["input_files"] == len(expected)
    with server.client() as client:
        final = finish(client, job["name"])
    assert final["outputs"]["score"]["path"] == str(store / "per-job" / "predictions_7.csv")
    assert by_file(read_rows(store / "per-job" / "predictions_7.csv")) == {n: [*r, ""] for n, r in expected.items()}

    for flags, field in (
        (["--set", "mini_batch_size=0"], "mini_batch_size"),
        (["--mini-batch-size", "0"], "--mini-batch-size"),
        (["--set", "model=elsewhere"], "model"),
        (["--set", "error_threshold=lots"], "error_threshold"),
        (["--output-path", str(tmp_path / "in" / "o1.txt")], "output_path"),
    ):
        bad = cli(server, "batch-endpoint", "invoke", "-n", "per-job", "-i", str(tmp_path / "in"), *flags, check=False)
        assert bad.returncode != 0 and field in bad.stderr, (flags, bad.stderr)
        assert "Traceback" not in bad.stderr


@slow
@pytest.mark.timeout(180)
def test_summary_only_writes_no_output(batch_server: Any, tmp_path: Path) -> None:
    server = batch_server
    text_inputs(tmp_path / "in", ["s1.txt", "s2.txt", "s3.txt", "s4.txt", "s5.txt"])
    create(server, "summary", deployment_spec("main", "summary", output_action="summary_only", mini_batch_size=2))
    job = cli_json(server, "batch-endpoint", "invoke", "-n", "summary", "--input", str(tmp_path / "in"))
    cli(server, "job", "stream", "-n", job["name"])
    shown = cli_json(server, "job", "show", "-n", job["name"])
    assert shown["status"] == "Completed"
    assert shown["outputs"] == {}
    progress = shown["progress"]
    assert (progress["mini_batches_total"], progress["mini_batches_completed"], progress["mini_batches_failed"]) == (
        3,
        3,
        0,
    )
    assert (progress["items_total"], progress["items_failed"]) == (5, 0)
    folder = server.home / "jobs" / job["name"]
    assert not [p for p in folder.rglob("*.csv")], "summary_only writes neither parts nor an output file"
    target = tmp_path / "dl"
    download = cli(server, "job", "download", "-n", job["name"], "--download-path", str(target), check=False)
    assert download.returncode == 1, download.stdout + download.stderr
    assert "summary_only" in download.stderr
    assert "Traceback" not in download.stderr
    assert not target.exists() or not list(target.iterdir())


@slow
@pytest.mark.timeout(120)
def test_an_empty_folder_completes_at_once_with_an_empty_output(batch_server: Any, tmp_path: Path) -> None:
    server = batch_server
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".hidden").write_text("not data")
    create(server, "empty-input", deployment_spec("main", "empty-input"))
    with server.client() as client:
        job = client.batch_endpoints.invoke("empty-input", tmp_path / "empty")
        assert job["inputs"]["input_files"] == 0
        final = finish(client, job["name"])
    assert final["status"] == "Completed", final
    assert final["progress"]["mini_batches_total"] == 0 and final["progress"]["items_total"] == 0
    assert output_rows(server, job["name"], tmp_path) == []


@slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["raise", "exit"])
def test_init_failing_fails_the_job_with_the_reason(batch_server: Any, tmp_path: Path, how: str) -> None:
    """init() raising, or ending its process (os._exit(3)): the job fails, saying why, instead of running forever."""
    server = batch_server
    endpoint = f"init-{how}s"
    text_inputs(tmp_path / "in", ["i1.txt", "i2.txt"])
    create(server, endpoint, deployment_spec("main", endpoint, env={"BATCH_INIT_FAIL": how}))
    job = cli_json(server, "batch-endpoint", "invoke", "-n", endpoint, "--input", str(tmp_path / "in"))
    streamed = cli(server, "job", "stream", "-n", job["name"], check=False, timeout=60)
    assert streamed.returncode == 1, streamed.stdout + streamed.stderr
    shown = cli_json(server, "job", "show", "-n", job["name"])
    assert shown["status"] == "Failed"
    reason = "corrupt (on purpose)" if how == "raise" else "exited with code 3"
    assert reason in shown["error"], shown["error"]
    assert reason in streamed.stderr


# --- 8-10. queueing, cancel, a killed worker -------------------------------------------------------


@slow
@pytest.mark.timeout(180)
def test_jobs_of_one_deployment_run_one_at_a_time_in_order(batch_server: Any, tmp_path: Path) -> None:
    server = batch_server
    text_inputs(tmp_path / "in", ["q.txt"])
    create(server, "queue", deployment_spec("main", "queue", env={"BATCH_SLEEP": "1.5"}))
    with server.client() as client:
        names = [client.batch_endpoints.invoke("queue", tmp_path / "in")["name"] for _ in range(3)]
        seen: list[dict[str, str]] = []

        def all_ended() -> bool:
            snapshot = {j["name"]: j["status"] for j in client.batch_endpoints.list_jobs("queue")}
            seen.append(snapshot)
            assert sum(s == "Running" for s in snapshot.values()) <= 1, f"two jobs ran at once: {snapshot}"
            return all(s in ENDED for s in snapshot.values())

        wait_for(all_ended, 120, "the three jobs to end", interval=0.05)
        jobs = [client.jobs.get(n) for n in names]
    assert [j["status"] for j in jobs] == ["Completed"] * 3
    assert any(s[names[0]] == "Running" and s[names[2]] == "Queued" for s in seen), "the third job waited"
    starts = [j["start_time"] for j in jobs]
    ends = [j["end_time"] for j in jobs]
    assert starts == sorted(starts), f"jobs started out of order: {starts}"
    assert ends[0] <= starts[1] and ends[1] <= starts[2], f"jobs overlapped: {list(zip(starts, ends, strict=True))}"


@slow
@pytest.mark.timeout(180)
def test_cancel_a_running_job_and_a_queued_one(batch_server: Any, tmp_path: Path) -> None:
    server = batch_server
    side_log, pids, busy = tmp_path / "scored.txt", tmp_path / "pids", tmp_path / "busy"
    pids.mkdir()
    busy.mkdir()
    for prefix in ("a", "b", "c"):
        text_inputs(tmp_path / prefix, [f"{prefix}-1.txt", f"{prefix}-2.txt"])
    env = {"BATCH_SIDE_LOG": str(side_log), "BATCH_PID_DIR": str(pids), "BATCH_BUSY_DIR": str(busy)}
    spec = deployment_spec("main", "cancel", env=env, mini_batch_size=1)
    create(server, "cancel", spec)
    # A sleeps ten minutes per mini-batch (a literal input); B waits behind it (one job at a time).
    running = cli_json(server, "batch-endpoint", "invoke", "-n", "cancel", "-i", str(tmp_path / "a"),
                       "--set", "inputs.sleep=600")["name"]  # fmt: skip
    queued = cli_json(server, "batch-endpoint", "invoke", "-n", "cancel", "-i", str(tmp_path / "b"))["name"]
    with server.client() as client:
        wait_for(lambda: client.jobs.get(running)["status"] == "Running", 30, "job A to run")
        wait_for(lambda: pids_in(busy), 60, "job A's worker to be inside run()")
        workers = pids_in(pids)
        assert client.jobs.get(queued)["status"] == "Queued"

        cli(server, "job", "cancel", "-n", queued)
        assert client.jobs.get(queued)["status"] == "Canceled"
        cli(server, "job", "cancel", "-n", running)
        wait_for(lambda: client.jobs.get(running)["status"] == "Canceled", 5, "job A to be Canceled")
        wait_for(lambda: not any(map(pid_alive, workers)), 5, "job A's worker processes to stop")
        streamed = cli(server, "job", "stream", "-n", running, check=False)
        assert streamed.returncode == 1 and "Canceled" in streamed.stderr, streamed.stderr
        assert "canceled" in job_log(server, running)

        # The queue moves on past the canceled job: C runs and completes; B never ran.
        after = cli_json(server, "batch-endpoint", "invoke", "-n", "cancel", "-i", str(tmp_path / "c"))["name"]
        assert finish(client, after)["status"] == "Completed"
        b = client.jobs.get(queued)
        a = client.jobs.get(running)
    assert b["status"] == "Canceled" and b["start_time"] is None, b
    assert not b["progress"].get("mini_batches_completed"), b
    assert a["status"] == "Canceled" and a["end_time"] is not None
    scored = side_log.read_text().split()
    assert "c-1.txt" in scored and "c-2.txt" in scored
    assert not [w for w in scored if w.startswith(("a-", "b-"))], scored
    again = cli(server, "job", "cancel", "-n", after, check=False)
    assert again.returncode == 1 and "already ended" in again.stderr, again.stderr


@slow
@pytest.mark.timeout(180)
def test_a_killed_worker_does_not_lose_or_repeat_rows(batch_server: Any, tmp_path: Path) -> None:
    server = batch_server
    busy, pids = tmp_path / "busy", tmp_path / "pids"
    busy.mkdir()
    pids.mkdir()
    expected = text_inputs(tmp_path / "in", [f"k{n}.txt" for n in range(6)])
    env = {"BATCH_SLEEP": "2", "BATCH_BUSY_DIR": str(busy), "BATCH_PID_DIR": str(pids)}
    spec = deployment_spec("main", "worker-kill", env=env, mini_batch_size=1, max_concurrency_per_instance=2)
    create(server, "worker-kill", spec)
    with server.client() as client:
        job = client.batch_endpoints.invoke("worker-kill", tmp_path / "in")["name"]
        pid = wait_for(lambda: next(iter(pids_in(busy)), None), 60, "a worker busy with a mini-batch")
        assert pid in pids_in(pids), "the busy process is one of the job's workers"
        os.kill(pid, signal.SIGKILL)
        final = finish(client, job)
    assert not pid_alive(pid)
    assert len(pids_in(pids)) == 3, "a fresh worker (init() again) took the killed one's place"
    log = job_log(server, job)
    assert final["status"] == "Completed", log
    assert "killed by SIGKILL" in log and "retrying" in log, log
    assert final["progress"]["mini_batches_completed"] == 6
    assert final["progress"]["mini_batches_failed"] == 0
    assert by_file(output_rows(server, job, tmp_path)) == {n: [*r, ""] for n, r in expected.items()}


@slow
@pytest.mark.timeout(120)
def test_worker_processes_are_found_by_their_job_name(batch_server: Any, tmp_path: Path) -> None:
    """Operators find a job's workers in ``$TIFFIN_HOME/jobs/JOB/workers/*.pid`` (docs/batch.md)."""
    server = batch_server
    busy, pids = tmp_path / "busy", tmp_path / "pids"
    busy.mkdir()
    pids.mkdir()
    text_inputs(tmp_path / "in", ["p1.txt", "p2.txt", "p3.txt"])
    env = {"BATCH_SLEEP": "600", "BATCH_BUSY_DIR": str(busy), "BATCH_PID_DIR": str(pids)}
    create(
        server, "pgrep", deployment_spec("main", "pgrep", env=env, mini_batch_size=1, max_concurrency_per_instance=2)
    )
    with server.client() as client:
        job = client.batch_endpoints.invoke("pgrep", tmp_path / "in")["name"]
        try:
            wait_for(lambda: len(pids_in(busy)) == 2, 60, "both workers to be inside run()")
            assert worker_pids(server.home, job) == pids_in(pids)
        finally:
            client.jobs.cancel(job)
        wait_for(lambda: not any(map(pid_alive, pids_in(pids))), 10, "the canceled job's workers to stop")


@slow
@pytest.mark.timeout(120)
def test_logging_level_decides_what_the_scoring_code_logs_to_the_job_log(batch_server: Any, tmp_path: Path) -> None:
    server = batch_server
    text_inputs(tmp_path / "in", ["l1.txt"])
    logs = {}
    for level in ("info", "warning"):
        create(server, f"log-{level}", deployment_spec("main", f"log-{level}", logging_level=level))
        with server.client() as client:
            job = client.batch_endpoints.invoke(f"log-{level}", tmp_path / "in")["name"]
            assert finish(client, job)["status"] == "Completed"
        logs[level] = job_log(server, job)
    assert "INFO driver: scoring 1 file(s)" in logs["info"]
    assert "scoring 1 file(s)" not in logs["warning"]


# --- 11. the control plane restarts mid-job --------------------------------------------------------


@slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_a_restarted_server_resumes_the_job_without_redoing_done_mini_batches(tmp_path: Path, how: str) -> None:
    from tiffin.store import Store
    from tiffin.store.engine import default_url

    home = tmp_path / "home"
    side_log, pids = tmp_path / "scored.txt", tmp_path / "pids"
    pids.mkdir()
    expected = text_inputs(tmp_path / "in", [f"r{n:02d}.txt" for n in range(12)])
    env = {"BATCH_SLEEP": "0.6", "BATCH_SIDE_LOG": str(side_log), "BATCH_PID_DIR": str(pids)}
    spec = deployment_spec("main", "restart", env=env, mini_batch_size=1)
    with serve_tiffin(home) as first:
        create(first, "restart", spec)
        with first.client() as client:
            job = client.batch_endpoints.invoke("restart", tmp_path / "in")["name"]
            wait_for(
                lambda: client.jobs.get(job)["progress"].get("mini_batches_completed", 0) >= 3, 60, "3 mini-batches"
            )
        workers = pids_in(pids)
        assert workers
        if how == "SIGKILL":  # a crash: nothing of tiffin serve gets to run
            os.killpg(first.process.pid, signal.SIGKILL)
            first.process.wait(10)
        else:  # a stop: tiffin serve stops the job's workers and leaves the job Running
            stop_process_group(first.process, timeout=30)
        store = Store(default_url(home))
        try:
            assert store.get_job(job).status == "Running"
            done_before = [b for b in store.mini_batches(job) if b.status == "done"]
        finally:
            store.close()
        assert len(done_before) >= 3
        # Workers must not outlive the server that started them.
        wait_for(lambda: not any(map(pid_alive, workers)), 10, "the killed server's workers to exit")

    with serve_tiffin(home) as second:
        with second.client() as client:
            final = finish(client, job, timeout=120)
        log = job_log(second, job)
        assert final["status"] == "Completed", log
        assert "resuming" in log, log
        rows = output_rows(second, job, tmp_path)
    assert by_file(rows) == {n: [*r, ""] for n, r in expected.items()}
    scored = Counter(line.split()[1] for line in side_log.read_text().splitlines())
    assert set(scored) == set(expected)
    for batch in done_before:
        for item in batch.items:
            assert scored[Path(item).name] == 1, f"{item} was done before the restart and scored again"
    assert sum(scored.values()) <= len(expected) + 1, f"more than the in-flight mini-batch was redone: {scored}"


# --- 12. Ray ---------------------------------------------------------------------------------------


@pytest.fixture
def ray_head() -> Iterator[str]:
    """A local Ray head (2 CPUs) in a process group of its own; its address.

    Stopped through its own ``ray start --block`` process, then anything of it left, by pid: not with
    ``ray stop --force``, which would kill every Ray process of the machine, other sessions' too.
    """
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"Ray is not installed (pip install 'tiffin[ray]'): {exc}")
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip(f"the ray command is not next to {sys.executable}")
    port = free_port()
    # A short path of its own: Ray puts Unix sockets under it (107 characters at most).
    temp = Path(tempfile.mkdtemp(prefix="tiffin-ray-"))
    log = temp / "ray-start.log"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    command = [
        str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
        "--disable-usage-stats", f"--ray-client-server-port={free_port()}", f"--temp-dir={temp / 'r'}",
        f"--dashboard-port={free_port()}",
    ]  # fmt: skip
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=temp
        )
    try:
        wait_for(lambda: "Ray runtime started" in log.read_text() or process.poll() is not None, 90, "ray start", 0.2)
        assert process.poll() is None, log.read_text()
        yield f"127.0.0.1:{port}"
    finally:
        # SIGTERM to `ray start` alone: it drains the node and stops its processes (a whole-group SIGTERM
        # stops the GCS first, and the drain then waits 30 s for it).
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        # Whatever Ray daemonized outside the group still names our temp dir or port: stop those, by pid.
        marks = (str(temp), f"127.0.0.1:{port}", f"--gcs_server_port={port}")
        for pid, cmdline in command_lines():
            if pid != os.getpid() and any(m in cmdline for m in marks):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


@slow
@pytest.mark.timeout(240)
def test_mini_batches_run_on_ray_actors(ray_head: str, tmp_path: Path) -> None:
    expected = csv_inputs(tmp_path / "in", 5)
    side_log = tmp_path / "scored.txt"
    spec = deployment_spec("main", "on-ray", env={"BATCH_SIDE_LOG": str(side_log)}, mini_batch_size=2,
                           max_concurrency_per_instance=2)  # fmt: skip
    with serve_tiffin(tmp_path / "home", env={"TIFFIN_RAY_ADDRESS": ray_head, "RAY_USAGE_STATS_ENABLED": "0"}) as s:
        create(s, "on-ray", spec)
        with s.client() as client:
            job = client.batch_endpoints.invoke("on-ray", tmp_path / "in")["name"]
            final = finish(client, job, timeout=180)
        log = job_log(s, job)
        assert final["status"] == "Completed", f"{log}\n{s.log()[-3000:]}"
        assert f"on the Ray cluster at {ray_head}" in log
        rows = output_rows(s, job, tmp_path)
    assert by_file(rows) == {n: [*r, ""] for n, r in expected.items()}
    # The actors ran in Ray's worker processes (children of Ray's raylet), not in tiffin serve or its workers.
    pids = {int(line.split()[0]) for line in side_log.read_text().splitlines()}
    assert s.process.pid not in pids
    for pid in pids:
        with contextlib.suppress(OSError):  # an actor that is gone already
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            command = Path(f"/proc/{parent}/cmdline").read_bytes()
            assert b"raylet" in command, command


# --- 13. REST invoke with the endpoint's own key ---------------------------------------------------


@slow
@pytest.mark.timeout(180)
def test_rest_invoke_with_the_endpoint_key(batch_server: Any, tmp_path: Path) -> None:
    server = batch_server
    # A key reads datastores (and TIFFIN_INPUT_ROOTS), not any server path: see tests/test_batch_security.py.
    folder = server.home / "datastores" / "rest" / "in"
    expected = text_inputs(folder, ["r1.txt", "r2.txt", "r3.txt"])
    source = "azureml://datastores/rest/paths/in"
    create(server, "rest-key", deployment_spec("main", "rest-key"), auth_mode="key")
    keys = cli_json(server, "batch-endpoint", "get-credentials", "-n", "rest-key")
    url = f"{server.url}/api/batch-endpoints/rest-key/jobs"
    with httpx.Client(timeout=30) as http:

        def post(key: str | None, body: Any = None, content: bytes | None = None) -> httpx.Response:
            headers = {"Content-Type": "application/json"}
            if key is not None:
                headers["Authorization"] = f"Bearer {key}"
            data = content if content is not None else json.dumps(body).encode()
            return http.post(url, headers=headers, content=data)

        answer = post(keys["primaryKey"], {"input": source})
        assert answer.status_code == 201, answer.text
        job = answer.json()
        assert job["name"] and job["status"] in ("Queued", "Running") and job["deployment_name"] == "main"
        assert post(keys["secondaryKey"], {"input": str(folder / "r1.txt")}).status_code == 201

        for key in ("not-the-key", None, server.admin_token + "x"):
            refused = post(key, {"input": source})
            assert refused.status_code == 401, refused.text
            assert refused.json()["message"]
        bad_bodies: list[tuple[dict[str, Any], int | None]] = [
            ({}, None),
            ({"input": ""}, None),
            ({"input": str(tmp_path / "nowhere")}, None),
            ({"input": str(folder / "*.parquet")}, None),
            ({"input": source, "input_type": "uri_file"}, None),
            ({"input": source, "input_type": "mltable"}, None),
            ({"input": source, "deployment_name": "absent"}, 404),
            ({"input": source, "unknown_field": 1}, None),
            ({"input": 42}, None),
            ({"input": source, "inputs": {"x": [1, 2]}}, None),
            ({"input": source, "settings": [1]}, 422),
            ({"input": source, "settings": {"mini_batch_size": 0}}, 422),
            ({"input": source, "settings": {"mini_batch_size": "many"}}, 422),
            ({"input": source, "settings": {"model": "elsewhere"}}, 422),
            ({"input": source, "settings": {"retry_settings.retries": 2}}, 422),
            ({"input": source, "settings": {"output_action": "print"}}, 422),
            ({"input": source, "output_path": "https://example.com/container/out"}, 422),
            ({"input": source, "output_path": "azureml://datastores/ds/paths/../../x"}, 422),
            ({"input": "azureml://datastores/workspaceblobstore/paths/absent"}, 422),
            ({"input": source, "output_path": str(folder / "r1.txt")}, 422),
            ({"input": source, "output_path": 7}, 422),
        ]
        for body, status in bad_bodies:
            answer = post(keys["primaryKey"], body)
            assert 400 <= answer.status_code < 500, (body, answer.status_code, answer.text)
            assert status is None or answer.status_code == status, (body, answer.text)
            assert answer.json()["message"], body
        for raw in (b"", b"not json", b"[1, 2]"):
            answer = post(keys["primaryKey"], content=raw)
            assert 400 <= answer.status_code < 500 and answer.json()["message"], (raw, answer.text)
        # The key starts and reads this endpoint's jobs only: not another endpoint's, not the control plane.
        key_header = {"Authorization": f"Bearer {keys['primaryKey']}"}
        assert job["name"] in {listed["name"] for listed in http.get(url, headers=key_header).json()}
        assert http.get(f"{server.url}/api/batch-endpoints", headers=key_header).status_code == 401
        create(server, "rest-empty", auth_mode="key")
        with server.client() as client:
            empty_key = client.batch_endpoints.get_keys("rest-empty")["primaryKey"]
        other = http.post(
            f"{server.url}/api/batch-endpoints/rest-empty/jobs",
            headers={"Authorization": f"Bearer {keys['primaryKey']}"},
            json={"input": source},
        )
        assert other.status_code == 401, other.text
        no_deployment = http.post(
            f"{server.url}/api/batch-endpoints/rest-empty/jobs",
            headers={"Authorization": f"Bearer {empty_key}"},
            json={"input": source},
        )
        assert no_deployment.status_code == 409, no_deployment.text
        assert "no default deployment" in no_deployment.json()["message"]
    with server.client() as client:
        final = finish(client, job["name"])
    assert final["status"] == "Completed"
    assert by_file(output_rows(server, job["name"], tmp_path)) == {n: [*r, ""] for n, r in expected.items()}


# --- 14. the SDK, and which deployment a job runs on -----------------------------------------------


@slow
@pytest.mark.timeout(240)
def test_sdk_round_trip_and_default_deployment_switch(batch_server: Any, tmp_path: Path) -> None:
    server = batch_server
    expected = csv_inputs(tmp_path / "in", 3)
    files = {}
    for color in ("blue", "green", "red"):
        files[color] = tmp_path / f"{color}.yml"
        files[color].write_text(yaml.safe_dump(deployment_spec(color, "colors", env={"BATCH_LABEL": color})))

    def run(client: Any, deployment: str | None = None) -> tuple[dict[str, Any], list[list[str]]]:
        job = client.batch_endpoints.invoke("colors", tmp_path / "in", deployment_name=deployment)
        out = io.StringIO()
        final = client.jobs.stream(job["name"], out=out, interval=0.2, timeout=90)
        assert final["status"] == "Completed", out.getvalue()
        assert "completed" in out.getvalue(), "stream follows the job log"
        target = client.jobs.download(job["name"], tmp_path / "dl" / job["name"])
        assert target.name == "predictions.csv"
        return final, read_rows(target)

    with server.client() as client:
        client.batch_endpoints.create({"name": "colors", "description": "which deployment runs"})
        cli(server, "batch-deployment", "create", "-f", str(files["blue"]))
        cli(server, "batch-deployment", "create", "-f", str(files["green"]))
        assert client.batch_endpoints.get("colors")["defaults"]["deployment_name"] == "blue", "the first is default"

        def check(job: dict[str, Any], rows: list[list[str]], color: str) -> None:
            assert job["deployment_name"] == color
            assert by_file(rows) == {n: [*r, color] for n, r in expected.items()}

        check(*run(client), "blue")
        check(*run(client, "green"), "green")

        cli(server, "batch-endpoint", "update", "-n", "colors", "--set", "defaults.deployment_name=green")
        assert client.batch_endpoints.get("colors")["defaults"]["deployment_name"] == "green"
        check(*run(client), "green")

        targeted = cli_json(
            server, "batch-endpoint", "invoke", "--name", "colors", "--input", str(tmp_path / "in"),
            "--deployment-name", "blue",
        )  # fmt: skip
        assert targeted["deployment_name"] == "blue"
        assert client.jobs.stream(targeted["name"], timeout=90)["status"] == "Completed"
        check(client.jobs.get(targeted["name"]), output_rows(server, targeted["name"], tmp_path), "blue")

        cli(server, "batch-deployment", "create", "-f", str(files["red"]), "--set-default")
        assert client.batch_endpoints.get("colors")["defaults"]["deployment_name"] == "red"
        check(*run(client), "red")

        missing = cli(server, "batch-endpoint", "update", "-n", "colors", "--set", "defaults.deployment_name=nope",
                      check=False)  # fmt: skip
        assert missing.returncode == 1 and "nope" in missing.stderr, missing.stderr
        jobs = client.batch_endpoints.list_jobs("colors")
        assert [j["deployment_name"] for j in jobs] == ["blue", "green", "green", "blue", "red"]

        # A deployment's own jobs, as Azure's heart-classifier script lists them.
        blue_jobs = [j["name"] for j in jobs if j["deployment_name"] == "blue"]
        listed = cli(server, "batch-deployment", "list-jobs", "--name", "blue", "--endpoint-name", "colors",
                     "--query", "[].name")  # fmt: skip
        assert json.loads(listed.stdout) == blue_jobs
        assert [j["name"] for j in client.batch_deployments.list_jobs("green", "colors")] == [
            j["name"] for j in jobs if j["deployment_name"] == "green"
        ]
        unknown = cli(server, "batch-deployment", "list-jobs", "-n", "nope", "-e", "colors", check=False)
        assert unknown.returncode != 0 and "nope" in unknown.stderr, unknown.stderr

        web = cli(server, "job", "show", "-n", blue_jobs[0], "--web", "--query", "status", "-o", "tsv")
        assert web.stdout.strip() == "Completed" and f"{server.url}/studio/#/batch" in web.stderr, web.stderr
