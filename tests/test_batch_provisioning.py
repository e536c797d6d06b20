"""A batch deployment that runs in an environment is provisioned when it is created (issue 14, batch first row): its
environment is built and spare workers started before it is ``Succeeded``, as ``az ml batch-deployment create``
waits for Azure to provision it; the first job takes those spares. A build that fails makes it ``Failed`` with uv's
message, and a CLI or SDK create says so.

Real everything: a real ``tiffin serve`` with an ``envs/`` folder of its own (so each build here is a real one, from
uv's cache), real uv. The test holds the build's lock (the builder's own, per environment key) to keep a build from
ending while it looks at the deployment, which is how "not before the build ends" is shown without a race.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tiffin.errors import TiffinError
from tiffin.testing import command_lines, serve_tiffin

slow = pytest.mark.slow

# Each output row: the input's name and the pid of the worker that scored it.
SCRIPT = """
import os


def init():
    pass


def run(mini_batch):
    return [f"{os.path.basename(path)} {os.getpid()}" for path in mini_batch]
"""

# A small environment: another Python than tiffin's own, one package besides tiffin's runtime.
CONDA = {"dependencies": ["python=3.12", "pip", {"pip": ["tzdata"]}]}
MISSING = "tiffin-no-such-package-i14"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("batch-provisioning")
    # Its own envs/ (not the run's shared one): every environment here is built while the test watches.
    with serve_tiffin(root / "home", env={"TIFFIN_ENVS_DIR": str(root / "envs")}) as running:
        running.envs = root / "envs"
        yield running


def envs(server: Any) -> Path:
    return server.envs


def spec_of(tmp_path: Path, endpoint: str, conda: dict[str, Any]) -> dict[str, Any]:
    code, model = tmp_path / "code", tmp_path / "model"
    code.mkdir(exist_ok=True)
    model.mkdir(exist_ok=True)
    (code / "score.py").write_text(SCRIPT)
    (model / "weights.txt").write_text("1\n")
    return {
        "name": "main",
        "endpoint_name": endpoint,
        "type": "model",
        "model": {"path": str(model)},
        "code_configuration": {"code": str(code), "scoring_script": "score.py"},
        "environment": {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04", "conda_file": conda},
        "resources": {"instance_count": 1},
        "settings": {"mini_batch_size": 1, "max_concurrency_per_instance": 2, "output_action": "append_row",
                     "retry_settings": {"max_retries": 0, "timeout": 120}},
    }  # fmt: skip


def cli(server: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tiffin.cli", *args], capture_output=True, text=True, env=server.env, timeout=600
    )


@contextlib.contextmanager
def build_held(server: Any, spec: dict[str, Any]) -> Iterator[None]:
    """Hold the builder's lock of ``spec``'s environment: a build of it waits until the block ends."""
    from tiffin.environments.runtime import runtime_key
    from tiffin.environments.sources import environment_of
    from tiffin.specs import BatchDeployment, parse_spec

    deployment = parse_spec(spec, BatchDeployment, "test").spec
    environment = environment_of(deployment, kind="script", owner="test")
    assert environment is not None
    locks = envs(server) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{runtime_key(environment)}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def built(server: Any) -> list[Path]:
    return [p for p in envs(server).glob("*/tiffin-env.json") if not p.parent.name.startswith(".")]


def spare_pids(server: Any) -> set[int]:
    """Spare workers on an interpreter of this server's environments."""
    root = str(envs(server))
    return {pid for pid, line in command_lines() if "tiffin.batch.worker_main" in line and "--spare" in line
            and line.startswith(root)}  # fmt: skip


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)
    return value


@slow
@pytest.mark.timeout(600)
def test_create_is_succeeded_once_built_and_the_first_job_takes_its_spares(server: Any, tmp_path: Path) -> None:
    spec = spec_of(tmp_path, "prov-ok", CONDA)
    file = tmp_path / "deployment.yml"
    file.write_text(yaml.safe_dump(spec))
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        (inputs / name).write_text(name)
    with server.client() as client:
        client.batch_endpoints.create({"name": "prov-ok"})
        with build_held(server, spec):
            # --no-wait answers at once, while the build cannot have ended.
            done = cli(server, "batch-deployment", "create", "-f", str(file), "--no-wait", "-o", "json")
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["provisioning_state"] == "Creating"
            time.sleep(1.5)
            assert client.batch_deployments.get("main", "prov-ok")["provisioning_state"] == "Creating"
            assert not built(server) and not spare_pids(server)
            # A job invoked now waits for that build (the deployment's), rather than building it a second time.
            job = client.batch_endpoints.invoke("prov-ok", str(inputs))
        ready = client.batch_deployments.wait("main", "prov-ok", timeout=300)
        assert ready["provisioning_state"] == "Succeeded"
        final = client.jobs.stream(job["name"], interval=0.2, timeout=300)
        log = client.jobs.read_log(job["name"])[0]
        assert final["status"] == "Completed", (final, log)
        assert len(built(server)) == 1
        # The job waited for the deployment's build rather than building it (uv's output is not in its log), then
        # took the spare workers provisioning started, one per worker.
        assert "Installed " not in log and "Resolved " not in log, log
        assert "took 2 spare worker(s)" in log, log
        rows = client.jobs.download(job["name"], tmp_path / "first").read_text().split()
        assert sorted(rows[0::2]) == ["a.txt", "b.txt", "c.txt", "d.txt"], rows
        # Its environment log (beside the replicas' logs) has the build.
        environment_log = server.home / "logs" / "prov-ok" / "main" / "environment.log"
        assert "environment of batch deployment 'main'" in environment_log.read_text()

        # An update is Updating until provisioned again (built already: at once), then Succeeded.
        updated = client.batch_deployments.create_or_update({**spec, "description": "again"}, wait=False)
        assert updated["provisioning_state"] == "Updating", updated
        assert client.batch_deployments.wait("main", "prov-ok", timeout=120)["provisioning_state"] == "Succeeded"


@slow
@pytest.mark.timeout(300)
def test_a_build_that_fails_makes_the_deployment_failed_with_uvs_message(server: Any, tmp_path: Path) -> None:
    spec = spec_of(tmp_path, "prov-bad", {"dependencies": ["python=3.12", {"pip": [f"{MISSING}==1.0"]}]})
    file = tmp_path / "deployment.yml"
    file.write_text(yaml.safe_dump(spec))
    with server.client() as client:
        client.batch_endpoints.create({"name": "prov-bad"})
    done = cli(server, "batch-deployment", "create", "-f", str(file))
    assert done.returncode != 0, done.stdout
    assert MISSING in done.stderr and "not found" in done.stderr.lower(), done.stderr
    with server.client() as client:
        shown = client.batch_deployments.get("main", "prov-bad")
        assert shown["provisioning_state"] == "Failed", shown
        assert MISSING in shown["reason"] and "environment of batch deployment 'main'" in shown["reason"], shown
        with pytest.raises(TiffinError) as raised:
            client.batch_deployments.create_or_update(spec)
        assert MISSING in str(raised.value) and "failed" in str(raised.value), raised.value


def test_a_deployment_without_environment_is_succeeded_at_once(server: Any, tmp_path: Path) -> None:
    spec = spec_of(tmp_path, "prov-none", CONDA)
    del spec["environment"]
    with server.client() as client:
        client.batch_endpoints.create({"name": "prov-none"})
        stored = client.batch_deployments.create_or_update(spec, wait=False)
    assert stored["provisioning_state"] == "Succeeded", stored


# A scikit-learn model saved by MLflow, then stripped of its environment files: it runs on tiffin's own Python.
_SKLEARN = """
import sys
import mlflow.sklearn
from sklearn.linear_model import Ridge
model = Ridge().fit([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], [1.0, 2.0, 3.0])
mlflow.sklearn.save_model(model, sys.argv[1])
"""


@slow
@pytest.mark.timeout(300)
def test_mlflow_model_on_tiffins_python_gets_forked_spares_warmed_by_its_create(server: Any, tmp_path: Path) -> None:
    model = tmp_path / "model"
    done = subprocess.run([sys.executable, "-c", _SKLEARN, str(model)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    for name in ("conda.yaml", "python_env.yaml", "requirements.txt"):
        (model / name).unlink(missing_ok=True)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a.csv", "b.csv", "c.csv"):
        (inputs / name).write_text("a,b\n0,1\n1,0\n")
    spec = {
        "name": "main", "endpoint_name": "prov-mlflow", "type": "model",
        "model": {"path": str(model), "type": "mlflow_model"},
        "resources": {"instance_count": 1},
        "settings": {"mini_batch_size": 1, "max_concurrency_per_instance": 2, "retry_settings": {"max_retries": 0}},
    }  # fmt: skip
    before = built(server)
    with server.client() as client:
        client.batch_endpoints.create({"name": "prov-mlflow"})
        stored = client.batch_deployments.create_or_update(spec, wait=False)
        assert stored["provisioning_state"] == "Creating", "its spares are not warm yet"
        assert client.batch_deployments.wait("main", "prov-mlflow", timeout=120)["provisioning_state"] == "Succeeded"
        assert built(server) == before, "no environment is built for it"
        job = client.batch_endpoints.invoke("prov-mlflow", str(inputs))
        final = client.jobs.stream(job["name"], interval=0.2, timeout=120)
        log = client.jobs.read_log(job["name"])[0]
        assert final["status"] == "Completed", (final, log)
        assert final["progress"]["rows_scored"] == 6, final
        assert "took 2 spare worker(s)" in log, log
