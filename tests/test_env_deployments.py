"""Deployments running in the environments they declare (issue 13), end to end: a real ``tiffin serve``, the CLI as
an Azure user runs it, real uv builds from PyPI (into an envs folder of the module's own) on pyenv's interpreters.

The models are made by the tests, each with the interpreter of the environment it is served in (built first
with :func:`tiffin.environments.runtime.prepare` from the same conda file, so the deployment finds it built):
a scikit-learn 1.2.2 tree on Python 3.10 and a current one on 3.12 behind one endpoint (neither pickle loads
under the other's scikit-learn); MLflow models logged with xgboost 1.7.6 (Python 3.10) and 1.4.2 (Python 3.8),
served with no environment given. Builds use uv's default cache, so after a first run on a machine they are a
matter of links (seconds); one server, one ``TIFFIN_HOME`` and one envs folder serve the whole module. What each
step took is printed at the end of the module's run.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from tiffin.environments.builder import MARKER, envs_dir
from tiffin.environments.conda import translate
from tiffin.environments.runtime import PreparedEnvironment, prepare, runtime_key
from tiffin.environments.sources import environment_of, mlflow_environment
from tiffin.specs import OnlineDeployment, load_spec
from tiffin.testing import command_lines, serve_tiffin

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "env_fixtures"
FAST_PROBES = [
    "readiness_probe.initial_delay=1",
    "readiness_probe.period=1",
    "liveness_probe.initial_delay=1",
    "liveness_probe.period=1",
]
PROBE_ARGS = [arg for probe in FAST_PROBES for arg in ("--set", probe)]
TIMINGS: dict[str, float] = {}
"""What each step took (seconds), printed once the module is done: the issue asks for them measured."""


@pytest.fixture(scope="module", autouse=True)
def report_timings(request: pytest.FixtureRequest):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not TIMINGS:
        return
    with capture.global_and_fixture_disabled():  # a fixture's teardown output is captured otherwise
        reporter.write_line("")
        reporter.write_line("test_env_deployments timings (s):")
        for step, seconds in TIMINGS.items():
            reporter.write_line(f"  {step:<62} {seconds:7.2f}")


class timed:
    """``with timed("step"):`` records the block's wall time in :data:`TIMINGS`."""

    def __init__(self, step: str) -> None:
        self.step = step

    def __enter__(self) -> timed:
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.started
        TIMINGS[self.step] = self.seconds


# --- one server, one home, the fixtures' folders copied where the models are written ---------------------------


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("env-deployments") / "work"
    shutil.copytree(FIXTURES, root)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """``tiffin serve`` with environments of its own: every run builds them (from uv's warm cache), so what is
    checked and timed is a real build, not a folder a previous run left in the shared TIFFIN_ENVS_DIR (conftest);
    this process builds into the same folder (the tests' ``prepare`` calls)."""
    root = tmp_path_factory.mktemp("env-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIFFIN_ENVS_DIR", str(root / "envs"))
        with serve_tiffin(root / "home") as running:
            yield running
    # Stopping the server stopped every replica it started, on whichever interpreter.
    time.sleep(0.5)
    assert replica_commands(running.home) == []


def cli(server, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "tiffin.cli", *args], capture_output=True, text=True, env=server.env, timeout=timeout
    )
    if check:
        assert done.returncode == 0, f"tiffin {' '.join(args)} -> {done.returncode}\n{done.stderr}\n{done.stdout}"
    return done


def built_for(deployment_yml: Path, home: Path, kind: str = "script") -> PreparedEnvironment:
    """The environment the deployment in ``deployment_yml`` declares, read as the supervisor reads it and built now
    into ``home`` (so the deployment reuses it)."""
    loaded = load_spec(deployment_yml, OnlineDeployment)
    spec = environment_of(loaded.spec, kind=kind, owner=f"deployment '{loaded.spec.name}'")
    assert spec is not None, f"{deployment_yml} declares no environment"
    return prepare(spec, home, log=io.StringIO())


def run_in(env: PreparedEnvironment | Path, *argv: str, timeout: float = 300) -> dict:
    """Run a script with an environment's interpreter (or any ``python``); its last stdout line, as JSON."""
    python = env.python if isinstance(env, PreparedEnvironment) else env
    done = subprocess.run([str(python), *argv], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{python} {argv} -> {done.returncode}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def replica_commands(home: Path) -> list[str]:
    """The command lines of the replicas the server started (they name their plan, which is under ``home``)."""
    return [cmdline for _, cmdline in command_lines() if "tiffin.replica.run" in cmdline and str(home) in cmdline]


def environment_log(server, endpoint: str, deployment: str) -> str:
    path = server.home / "logs" / endpoint / deployment / "environment.log"
    return path.read_text(encoding="utf-8") if path.exists() else ""


@pytest.fixture(scope="module")
def endpoint(server, work) -> dict[str, object]:
    cli(server, "online-endpoint", "create", "-f", str(work / "sklearn" / "endpoint.yml"))
    key = cli(server, "online-endpoint", "get-credentials", "-n", "envs", "-o", "tsv", "--query", "primaryKey")
    return {"url": f"{server.url}/endpoints/envs/score", "key": key.stdout.strip()}


def post(endpoint, body: dict, deployment: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {endpoint['key']}"}
    if deployment:
        headers["azureml-model-deployment"] = deployment
    return httpx.post(endpoint["url"], json=body, headers=headers, timeout=60)


# --- a. two deployments, two scikit-learns, one endpoint ------------------------------------------------------


@pytest.fixture(scope="module")
def sklearn_models(server, work) -> dict[str, dict]:
    """Each sklearn deployment's environment built, and its model pickled by that environment's interpreter."""
    folder = work / "sklearn"
    (folder / "model-old").mkdir()
    (folder / "model-new").mkdir()
    out = {}
    for which, scale in (("old", 1), ("new", 2)):
        with timed(f"a. build env sk-{which} (test side, prepare)"):
            env = built_for(folder / f"{which}-deployment.yml", server.home)
        with timed(f"a. train + pickle sk-{which} in its env"):
            versions = run_in(env, str(folder / "train.py"), str(folder / f"model-{which}" / "model.pkl"), str(scale))
        out[which] = {"env": env, "scale": scale, **versions}
    assert out["old"]["sklearn"] == "1.2.2" and out["old"]["python"].startswith("3.10.")
    assert out["new"]["python"].startswith("3.12.")
    assert tuple(int(p) for p in out["new"]["sklearn"].split(".")[:2]) >= (1, 6)
    return out


@pytest.fixture(scope="module")
def sklearn_pair(server, work, endpoint, sklearn_models) -> dict[str, dict]:
    for which in ("old", "new"):
        with timed(f"a. online-deployment create sk-{which} (env already built)"):
            created = cli(
                server,
                "online-deployment",
                "create",
                "-f",
                str(work / "sklearn" / f"{which}-deployment.yml"),
                *PROBE_ARGS,
            )
        sklearn_models[which]["created"] = json.loads(created.stdout)
        sklearn_models[which]["create_stderr"] = created.stderr
    cli(server, "online-endpoint", "update", "-n", "envs", "--traffic", "sk-old=50 sk-new=50")
    return sklearn_models


def test_each_deployment_answers_from_its_own_scikit_learn_and_python(server, endpoint, sklearn_pair):
    x = {"data": [[1.0], [3.0]]}
    for which, name in (("old", "sk-old"), ("new", "sk-new")):
        model = sklearn_pair[which]
        assert model["created"]["provisioning_state"] == "Succeeded"
        r = post(endpoint, x, deployment=name)
        assert r.status_code == 200, r.text
        assert r.headers["azureml-model-deployment"] == name
        answer = r.json()
        assert answer["predictions"] == [20.0 * model["scale"], 40.0 * model["scale"]]
        # The replica runs on the environment's interpreter with the environment's scikit-learn, the very ones
        # the model was pickled with.
        assert (answer["sklearn"], answer["python"]) == (model["sklearn"], model["python"])
    commands = replica_commands(server.home)
    for which, name in (("old", "sk-old"), ("new", "sk-new")):
        assert any(str(sklearn_pair[which]["env"].python) in c for c in commands), commands
        # The environment the test built and pickled with is the one the deployment found: not built twice.
        assert f"reusing environment {sklearn_pair[which]['env'].key[:12]}" in environment_log(server, "envs", name)
    # The split sends requests to both; each answers as itself.
    seen: Counter[str] = Counter()
    for _ in range(60):
        r = post(endpoint, x)
        assert r.status_code == 200, r.text
        name = r.headers["azureml-model-deployment"]
        seen[name] += 1
        expected = sklearn_pair["old" if name == "sk-old" else "new"]
        assert r.json()["sklearn"] == expected["sklearn"]
    assert set(seen) == {"sk-old", "sk-new"}, seen


def test_cli_invoke_pins_a_deployment(server, work, sklearn_pair):
    request = work / "request.json"
    request.write_text(json.dumps({"data": [[0.0]]}))
    for name, which in (("sk-old", "old"), ("sk-new", "new")):
        done = cli(
            server, "online-endpoint", "invoke", "-n", "envs", "--request-file", str(request), "--deployment-name", name
        )
        answer = json.loads(done.stdout)
        assert answer["predictions"] == [10.0 * sklearn_pair[which]["scale"]]
        assert answer["sklearn"] == sklearn_pair[which]["sklearn"]


def test_neither_pickle_loads_under_the_other_scikit_learn(work, sklearn_models):
    """Why the environments matter, measured: a 1.2.2 tree does not load under tiffin's own scikit-learn (nor a
    current one under 1.2.2): the tree's node array changed layout in 1.3."""
    load = "import joblib, sys; joblib.load(sys.argv[1])"
    for python, model in (
        (sys.executable, work / "sklearn" / "model-old" / "model.pkl"),
        (str(sklearn_models["old"]["env"].python), work / "sklearn" / "model-new" / "model.pkl"),
    ):
        done = subprocess.run([python, "-c", load, str(model)], capture_output=True, text=True, timeout=120)
        assert done.returncode != 0, f"{model} loaded under {python}"
        assert "incompatible dtype" in done.stderr, done.stderr
    # Under the environment it was pickled in, it loads (the deployment above serves it).
    done = subprocess.run(
        [str(sklearn_models["old"]["env"].python), "-c", load, str(work / "sklearn" / "model-old" / "model.pkl")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_create_shows_the_environment_step_as_it_goes(sklearn_pair):
    """``online-deployment create`` prints the environment log's lines while it waits (stderr), as Azure's
    create shows its image build."""
    for which in ("old", "new"):
        shown = sklearn_pair[which]["create_stderr"]
        assert f"reusing environment {sklearn_pair[which]['env'].key[:12]}" in shown, shown
        assert "scikit-learn" in shown, shown


# --- e. show no longer calls the conda file ignored -------------------------------------------------------------


def test_show_does_not_report_the_conda_file_as_ignored(server, sklearn_pair):
    created_stderr = sklearn_pair["old"]["create_stderr"]
    ignored = [line for line in created_stderr.splitlines() if "ignored locally" in line]
    assert ignored and "environment.image" in ignored[0], created_stderr
    assert "conda_file" not in "".join(ignored), created_stderr
    done = cli(server, "online-deployment", "show", "-n", "sk-old", "-e", "envs")
    shown = json.loads(done.stdout)
    assert shown["provisioning_state"] == "Succeeded"
    assert shown["environment"]["conda_file"]  # kept, as Azure shows it
    assert "conda_file" not in "".join(line for line in done.stderr.splitlines() if "ignored" in line), done.stderr
    assert "environment.conda_file" not in json.dumps(shown.get("ignored", [])), shown.get("ignored")


def test_validate_lists_the_image_but_not_the_conda_file_as_ignored(server, work):
    done = cli(server, "validate", "-f", str(work / "sklearn" / "old-deployment.yml"), "-o", "json")
    ignored = json.loads(done.stdout)["ignored"]
    assert "environment.conda_file" not in ignored, ignored
    assert "environment.image" in ignored, ignored


# --- b. an MLflow model logged with an old xgboost, served with no environment given -----------------------------


XGBOOST_CASES = {
    # name: (conda file of the logging environment, Python, xgboost, mlflow)
    "xgb-1-7": ("conda-log.yml", "3.10", "1.7.6", "2.17.2"),
    # Azure's older MLflow samples: xgboost 1.4.2 and scikit-learn 1.1.2 on Python 3.8, here with mlflow 1.x (which
    # writes an unpinned 'mlflow' into requirements.txt, so the served environment resolves a newer one).
    "xgb-1-4": ("conda-log-py38.yml", "3.8", "1.4.2", "1.30.1"),
}


@pytest.fixture(scope="module", params=sorted(XGBOOST_CASES))
def xgboost_model(request: pytest.FixtureRequest, server, work) -> dict:
    """An MLflow model logged in an environment with an old xgboost, in a folder of its own with the deployment
    YAML (``model: {type: mlflow_model, path: model/}``, no environment)."""
    name = request.param
    conda_file, python, xgboost, mlflow = XGBOOST_CASES[name]
    folder = work / name
    shutil.copytree(work / "xgboost", folder)
    conda = yaml.safe_load((folder / conda_file).read_text())
    with timed(f"b. {name}: build the logging env (mlflow {mlflow}, xgboost {xgboost}, py{python})"):
        env = prepare(translate(conda, source=conda_file), server.home, log=io.StringIO())
    with timed(f"b. {name}: log the MLflow model in that env"):
        logged = run_in(env, str(folder / "log_model.py"), str(folder / "model"))
    assert (logged["xgboost"], logged["mlflow"]) == (xgboost, mlflow)
    assert logged["python"].startswith(python + ".")
    assert (folder / "model" / "python_env.yaml").is_file() and (folder / "model" / "requirements.txt").is_file()
    return {**logged, "name": name, "folder": folder, "minor": python}


def test_mlflow_model_with_old_xgboost_is_served_in_its_own_environment(server, endpoint, xgboost_model):
    name, folder = xgboost_model["name"], xgboost_model["folder"]
    with timed(f"b. {name}: online-deployment create (builds the model's env)"):
        done = cli(server, "online-deployment", "create", "-f", str(folder / "deployment.yml"), "-n", name, *PROBE_ARGS)
    assert json.loads(done.stdout)["provisioning_state"] == "Succeeded"
    # The environment is the model's own python_env.yaml (with its requirements.txt), built for this deployment.
    spec = mlflow_environment(folder / "model", owner=f"deployment '{name}'")
    assert spec is not None and "python_env.yaml" in spec.source
    key = runtime_key(spec)
    marker = json.loads((envs_dir(server.home) / key / MARKER).read_text())
    pinned = [line for line in (folder / "model" / "requirements.txt").read_text().split() if "==" in line]
    assert f"xgboost=={xgboost_model['xgboost']}" in pinned
    assert set(pinned) <= set(marker["freeze"]), (pinned, marker["freeze"])
    assert marker["interpreter"]["version"].startswith(xgboost_model["minor"] + ".")
    logs = cli(server, "online-deployment", "get-logs", "-n", name, "-e", "envs", "--lines", "400").stdout
    assert "python_env.yaml" in logs and f"xgboost=={xgboost_model['xgboost']}" in logs, logs
    assert any(f"{key}/bin/python" in c for c in replica_commands(server.home)), replica_commands(server.home)
    rows = xgboost_model["rows"]
    for body in (
        {"dataframe_records": rows},
        {"input_data": {"columns": ["a", "b"], "data": [[row["a"], row["b"]] for row in rows]}},  # Azure's shape
    ):
        r = post(endpoint, body, deployment=name)
        assert r.status_code == 200, r.text
        assert r.json()["predictions"] == pytest.approx(xgboost_model["expected"], rel=1e-6)


# --- c. a build that cannot succeed fails the deployment fast, with uv's words ------------------------------------


def test_a_missing_package_fails_the_deployment_fast_with_uvs_message(server, work, endpoint):
    folder = work / "broken"
    with timed("c. online-deployment create broken (fails)") as took:
        done = cli(
            server,
            "online-deployment",
            "create",
            "-f",
            str(folder / "deployment.yml"),
            *PROBE_ARGS,
            check=False,
            timeout=120,
        )
    assert done.returncode == 1, done.stdout
    assert took.seconds < 30, f"failed after {took.seconds:.1f} s"
    assert "tiffin-no-such-pkg-xyz" in done.stderr, done.stderr
    shown = json.loads(cli(server, "online-deployment", "show", "-n", "broken", "-e", "envs").stdout)
    assert shown["provisioning_state"] == "Failed"
    reason = shown["reason"]
    assert "tiffin-no-such-pkg-xyz" in reason and "environment" in reason, reason
    # uv's own words: the package is not found, so no solution.
    assert "not found" in reason or "No solution found" in reason, reason
    logs = cli(server, "online-deployment", "get-logs", "-n", "broken", "-e", "envs", "--lines", "200").stdout
    assert "tiffin-no-such-pkg-xyz" in logs and "Using CPython 3.12" in logs, logs
    assert not any("/broken/" in c for c in replica_commands(server.home))
    cli(server, "online-deployment", "delete", "-n", "broken", "-e", "envs", "--yes")


# --- d. two deployments with one environment build it once -------------------------------------------------------


def test_two_deployments_with_one_environment_build_it_once(server, work, endpoint):
    folder = work / "shared"
    spec = environment_of(load_spec(folder / "deployment.yml", OnlineDeployment).spec, kind="script", owner="x")
    assert spec is not None
    key = runtime_key(spec)
    assert not (envs_dir(server.home) / key).exists()
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def create(name: str) -> None:
        results[name] = cli(
            server,
            "online-deployment",
            "create",
            "-f",
            str(folder / "deployment.yml"),
            "-n",
            name,
            *PROBE_ARGS,
            check=False,
        )

    with timed("d. two concurrent creates sharing one new env (py3.11, six)"):
        threads = [threading.Thread(target=create, args=(name,)) for name in ("shared-a", "shared-b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
    for name, done in results.items():
        assert done.returncode == 0, f"{name}: {done.stderr}"
    envs = [child for child in envs_dir(server.home).iterdir() if not child.name.startswith(".")]
    six = [e for e in envs if "six==1.16.0" in json.loads((e / MARKER).read_text())["spec"]["requirements"]]
    assert [e.name for e in six] == [key]
    logs = {name: environment_log(server, "envs", name) for name in ("shared-a", "shared-b")}
    built = [name for name, text in logs.items() if f"building environment {key[:12]}" in text]
    assert len(built) == 1, logs
    other = logs["shared-b" if built == ["shared-a"] else "shared-a"]
    assert f"reusing environment {key[:12]}" in other or "being built by another deployment" in other, other
    for name in ("shared-a", "shared-b"):
        r = post(endpoint, {}, deployment=name)
        assert r.status_code == 200, r.text
        assert r.json()["six"] == "1.16.0" and r.json()["python"].startswith("3.11.")
    # A third one, created once the environment exists, only reuses it.
    with timed("d. create a third deployment reusing the built env") as third:
        cli(server, "online-deployment", "create", "-f", str(folder / "deployment.yml"), "-n", "shared-c", *PROBE_ARGS)
    assert f"reusing environment {key[:12]}" in environment_log(server, "envs", "shared-c")
    assert third.seconds < 30
