"""Deployments packaged as OCI images and run on a real container engine (issue 16, item 1).

The engine tests build real images (on tiffin's base image, see tests/containers_fixture.py), run them with the
port published on loopback, and compare the container's answers with the lean replica's on the host; they skip,
with the reason, where no engine can be started.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tiffin.containers.engine import ENGINE_ENV, MANAGED_LABEL, ContainerEngineError, Engine, detect
from tiffin.containers.image import APP_DIR, CONTAINER_PORT, build_image, write_image_context
from tiffin.testing import free_port, serve_deployment

pytestmark = pytest.mark.usefixtures("quickstart_models")  # examples/quickstart's models, trained once

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart" / "blue-deployment.yml"
SAMPLE = json.loads((REPO / "examples" / "quickstart" / "sample-request.json").read_text())
TEST_LABEL = "ai.tiffin.test"


# --- without an engine ---------------------------------------------------------------------------------------


def test_engine_none_is_refused_with_what_to_do() -> None:
    with pytest.raises(ContainerEngineError, match="unset it"):
        detect({ENGINE_ENV: "none"})
    assert detect({ENGINE_ENV: "none"}, require=False) is None
    with pytest.raises(ContainerEngineError, match="docker, podman, none"):
        detect({ENGINE_ENV: "kubernetes"})


def test_no_engine_answering_says_how_to_get_one(tmp_path: Path) -> None:
    # A podman-only detection with no podman on PATH: nothing answers.
    with pytest.raises(ContainerEngineError, match=r"install docker\.io and start dockerd"):
        detect({ENGINE_ENV: "podman", "PATH": str(tmp_path)})


def test_image_context_has_the_environment_runtime_and_a_plan_inside_the_image(tmp_path: Path) -> None:
    info = write_image_context(QUICKSTART, tmp_path / "ctx")
    ctx = tmp_path / "ctx"
    requirements = (ctx / "requirements.txt").read_text().splitlines()
    # The conda file's pip translation (conda's own packages dropped), then tiffin's runtime requirements.
    assert "scikit-learn" in requirements and "azureml-defaults" in requirements
    assert any(line.startswith("uvicorn") for line in requirements)
    assert info["python"] == "3.11" and info["notes"] == []
    plan = json.loads((ctx / "app" / "plan.json").read_text())
    assert plan["kind"] == "script"
    assert plan["runner"]["code_dir"] == f"{APP_DIR}/code"
    assert plan["runner"]["model_dir"] == f"{APP_DIR}/model"
    assert (ctx / "app" / "model" / "model" / "sklearn_regression_model.pkl").is_file()
    assert (ctx / "app" / "code" / "score.py").is_file()
    assert (ctx / "runtime" / "tiffin" / "replica" / "run.py").is_file()
    assert str(tmp_path) not in (ctx / "app" / "plan.json").read_text()


def test_bento_carries_the_environment_of_the_deployment(tmp_path: Path) -> None:
    from tiffin.replica.bento import write_build_context

    write_build_context(QUICKSTART, tmp_path / "bento")
    bentofile = yaml.safe_load((tmp_path / "bento" / "bentofile.yaml").read_text())
    packages = bentofile["python"]["packages"]
    assert "scikit-learn" in packages and "inference-schema[numpy-support]" in packages
    assert bentofile["docker"] == {"python_version": "3.11"}
    # tiffin itself travels as a wheel of this checkout (or the release, outside a checkout).
    assert bentofile["python"].get("wheels") or any(p.startswith("tiffin==") for p in packages)


# --- with a real engine --------------------------------------------------------------------------------------


class Container:
    def __init__(self, engine: Engine, cid: str, url: str) -> None:
        self.engine, self.id, self.url = engine, cid, url


def _wait_ready(container: Container, timeout: float = 60.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if httpx.get(container.url + "/", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        if not container.engine.inspect(container.id)["State"]["Running"]:  # type: ignore[index]
            break  # exited: its log says why
        time.sleep(0.1)
    logs = container.engine.logs(container.id)
    raise AssertionError(f"the container did not answer (waited up to {timeout} s):\n{logs}")


@pytest.fixture
def run_image(container_engine: Engine) -> Iterator:
    started: list[str] = []

    def run(image: str) -> Container:
        port = free_port()
        cid = container_engine.start(image, labels={TEST_LABEL: "1"}, publish={CONTAINER_PORT: port})
        started.append(cid)
        container = Container(container_engine, cid, f"http://127.0.0.1:{port}")
        _wait_ready(container)
        return container

    yield run
    for cid in started:
        container_engine.run(["rm", "--force", cid], check=False)
    assert container_engine.containers({TEST_LABEL: "1"}) == []


def _check_contract_and_stop(container: Container, host_url: str, payload: object) -> None:
    engine = container.engine
    inside = httpx.post(container.url + "/score", json=payload, timeout=30)
    on_host = httpx.post(host_url + "/score", json=payload, timeout=30)
    assert inside.status_code == on_host.status_code == 200, inside.text
    assert inside.json() == on_host.json()
    assert httpx.get(container.url + "/").text == httpx.get(host_url + "/").text
    assert httpx.get(container.url + "/swagger.json").json()["swagger"] == "2.0"
    assert httpx.get(container.url + "/v2/health/ready").status_code == 200
    # Not root inside, and nothing but the one port published, on loopback only.
    uid = engine.run(["exec", container.id, "id", "-u"]).stdout.decode().strip()
    assert uid == "1000"
    ports = engine.inspect(container.id)["NetworkSettings"]["Ports"]  # type: ignore[index]
    assert ports == {f"{CONTAINER_PORT}/tcp": [{"HostIp": "127.0.0.1", "HostPort": container.url.rsplit(":", 1)[1]}]}
    # SIGTERM stops it cleanly within a few seconds (the grace before SIGKILL is 10 s).
    started = time.monotonic()
    code = engine.stop(container.id, grace=10)
    assert time.monotonic() - started < 5, engine.logs(container.id)
    assert code == 0
    assert engine.containers({MANAGED_LABEL: "true", TEST_LABEL: "1"}) == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quickstart_image_answers_as_the_lean_replica_on_the_host(
    base_image: str, run_image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIFFIN_HOME", str(tmp_path / "home"))
    # Through the CLI, as a user runs it: the JSON result names the image.
    done = subprocess.run(
        [sys.executable, "-m", "tiffin.cli", "containerize", "-f", str(QUICKSTART), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    built = json.loads(done.stdout)
    assert built["base"] == base_image and built["tag"].startswith("tiffin-my-endpoint-blue:")
    assert built["tags"] == [built["tag"], "tiffin-my-endpoint-blue:latest"]  # export kubernetes' names
    container = run_image(built["tag"])
    with serve_deployment(QUICKSTART) as host:
        _check_contract_and_stop(container, host.url, SAMPLE)


LOG_MLFLOW_MODEL = textwrap.dedent(
    """
    import sys
    import mlflow, mlflow.sklearn, sklearn
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], [3.0, 2.0, 10.0])
    # Requirements given, not inferred (inferring loads the model again in a subprocess).
    # skops: MLflow 3 saves scikit-learn models in its format (MLflow infers it as a requirement too).
    pins = ["mlflow-skinny==" + mlflow.__version__, "scikit-learn==" + sklearn.__version__, "pandas", "skops"]
    mlflow.sklearn.save_model(model, sys.argv[1], pip_requirements=pins)
    """
)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_mlflow_image_answers_as_the_lean_replica_on_the_host(
    base_image: str, run_image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIFFIN_HOME", str(tmp_path / "home"))
    model = tmp_path / "mlflow-model"
    subprocess.run([sys.executable, "-c", LOG_MLFLOW_MODEL, str(model)], check=True, timeout=300)
    deployment = tmp_path / "deployment.yml"
    deployment.write_text(
        "name: ml\nendpoint_name: ep\nmodel:\n  path: mlflow-model\n  type: mlflow_model\ninstance_count: 1\n"
    )
    built = build_image(deployment)
    assert any(line.startswith("mlflow-skinny==") for line in built["requirements"])
    container = run_image(built["tag"])
    payload = {"input_data": {"columns": [0, 1], "data": [[1.0, 2.0], [3.0, 0.5]]}}
    with serve_deployment(deployment) as host:
        _check_contract_and_stop(container, host.url, payload)


PLAIN = Path(__file__).parent / "deployments" / "plain" / "deployment.yml"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_package_builds_the_image_of_a_deployment_tiffin_serve_has(base_image: str, run_image) -> None:
    from tiffin.testing import serve_tiffin

    with serve_tiffin() as server:

        def cli(*args: str) -> str:
            done = subprocess.run(
                [sys.executable, "-m", "tiffin.cli", *args],
                capture_output=True,
                text=True,
                env=server.env,
                timeout=900,
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        cli("online-endpoint", "create", "--name", "tests")
        cli("online-deployment", "create", "-f", str(PLAIN), "--all-traffic")
        built = json.loads(cli("online-deployment", "package", "-n", "plain", "-e", "tests", "-o", "json"))
        assert built["tag"].startswith("tiffin-tests-plain:")
        container = run_image(built["tag"])
        payload = {"data": [[1, 2], [3, 4]]}
        inside = httpx.post(container.url + "/score", json=payload, timeout=30)
        assert inside.status_code == 200, inside.text
        assert inside.json() == {"sums": [6, 14], "raw_type": "str"}
        # What this home's tiffin made goes with one command: the running container, then the image.
        pruned = json.loads(cli("containerize", "prune", "--images", "-o", "json"))
        assert container.id in pruned["containers"] and len(pruned["images"]) == 1
        assert not container.engine.image_exists(built["tag"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bentoml_serve_in_the_image_answers_as_the_lean_replica(
    base_image: str, run_image, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The documented option: the same app behind `bentoml serve` (BentoML and tiffin's dependencies in the image).
    monkeypatch.setenv("TIFFIN_HOME", str(tmp_path / "home"))
    built = build_image(QUICKSTART, server="bentoml")
    assert built["server"] == "bentoml"
    container = run_image(built["tag"])
    assert httpx.get(container.url + "/livez").status_code == 200  # BentoML's own probe: it is BentoML serving
    with serve_deployment(QUICKSTART) as host:
        _check_contract_and_stop(container, host.url, SAMPLE)


def test_an_environment_on_another_python_is_built_on_the_base_python_with_a_note(tmp_path: Path) -> None:
    source = Path(__file__).parent / "deployments" / "plain"
    (tmp_path / "env.yml").write_text("dependencies:\n  - python=3.10\n  - pip\n  - pip:\n    - six\n")
    deployment = tmp_path / "deployment.yml"
    deployment.write_text(
        f"name: py310\nendpoint_name: ep\nmodel:\n  path: {source / 'model'}\ncode_configuration:\n"
        f"  code: {source / 'code'}\n  scoring_script: score.py\nenvironment:\n  conda_file: env.yml\n"
    )
    info = write_image_context(deployment, tmp_path / "ctx")
    assert "six" in info["requirements"]
    assert any("Python 3.10" in note and "3.11" in note for note in info["notes"]), info["notes"]


def test_a_server_of_its_own_cannot_be_packaged(tmp_path: Path) -> None:
    from tiffin.errors import SpecError

    deployment = tmp_path / "deployment.yml"
    deployment.write_text(
        "name: own\nendpoint_name: ep\nenvironment:\n  image: example/server:1\n"
        "  inference_config:\n    liveness_route: {port: 8080, path: /}\n    readiness_route: {port: 8080, path: /}\n"
        "    scoring_route: {port: 8080, path: /score}\n  command: [python, -m, http.server, '8080']\n"
    )
    with pytest.raises(SpecError, match="cannot be packaged"):
        write_image_context(deployment, tmp_path / "ctx")
