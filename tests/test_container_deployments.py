"""Image deployments (Azure's custom containers) on a real container engine: built from an ``environment.build``
context, served through an endpoint with keys and a traffic split beside a scoring-script deployment, the container's
output in get-logs, and no container left after delete, after ``tiffin serve`` stops, or after it is SIGKILLed and
started again. Skipped, with the reason, where no engine can be had (``container_engine`` in containers_fixture.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tiffin.containers.engine import ENGINE_ENV, HOME_LABEL, ContainerEngineError, Engine, home_digest
from tiffin.containers.run import SUPERVISOR_LABEL, byoc_image, remove_leftovers
from tiffin.errors import RunnerLoadError, TiffinError
from tiffin.runners.byoc import ByocRunner, ByocRunnerConfig
from tiffin.specs import OnlineDeployment, load_spec
from tiffin.testing import serve_tiffin

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent / "deployments"
FAST_READINESS = ["readiness_probe.initial_delay=1", "readiness_probe.period=1"]

SERVER = textwrap.dedent(
    """
    import json, os, signal, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if os.environ.get("IGNORE_SIGTERM") == "1":  # a server slow to stop: only SIGKILL ends it
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    MODEL_DIR = os.environ["AZUREML_MODEL_DIR"]
    WEIGHT = open(os.path.join(MODEL_DIR, "model", "weight.txt")).read().strip()
    print(f"byoc server up, model {WEIGHT} in {MODEL_DIR}", flush=True)

    class Handler(BaseHTTPRequestHandler):
        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.reply(200 if self.path in ("/live", "/ready") else 404, {"path": self.path})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/predict":
                self.reply(404, {"path": self.path})
                return
            print(f"scored {len(body['data'])} rows", flush=True)
            self.reply(200, {"weight": WEIGHT, "sum": sum(sum(row) for row in body["data"]), "model_dir": MODEL_DIR})
            if os.environ.get("EXIT_AFTER_SCORE") == "1":  # a server that crashes
                os._exit(3)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
    """
)


def byoc_deployment(
    tmp_path: Path, base_image: str, name: str = "own", mount: str | None = None, **env: str
) -> dict[str, Any]:
    """Azure's custom-container form: a build context, inference_config routes on port 8080, a model folder."""
    context = tmp_path / "context"
    context.mkdir(exist_ok=True)
    (context / "server.py").write_text(SERVER)
    (context / "Dockerfile").write_text(
        f'FROM {base_image}\nCOPY server.py /opt/server.py\nCMD ["python3", "/opt/server.py"]\n'
    )
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "model" / "weight.txt").write_text("42\n")
    spec = {
        "$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json",
        "name": name,
        "endpoint_name": "byoc",
        "model": {"name": "weights", "version": "3", "path": "model"},
        "environment": {
            "build": {"path": "context", "dockerfile_path": "Dockerfile"},
            "inference_config": {
                "liveness_route": {"path": "/live", "port": 8080},
                "readiness_route": {"path": "/ready", "port": 8080},
                "scoring_route": {"path": "/predict", "port": 8080},
            },
        },
        "environment_variables": env,
        "instance_count": 1,
        "readiness_probe": {"initial_delay": 1, "period": 1},
    }
    if mount:
        spec["model_mount_path"] = mount
    file = tmp_path / f"{name}.yml"
    file.write_text(yaml.safe_dump(spec))
    loaded = load_spec(file, OnlineDeployment)
    assert loaded.ignored == []  # the image, its build and its routes are all honoured
    return loaded.spec.to_yaml_dict()


def plain_deployment(name: str) -> dict[str, Any]:
    path = HERE / "plain" / "deployment.yml"
    return load_spec(path, OnlineDeployment, overrides=[f"name={name}", *FAST_READINESS]).spec.to_yaml_dict()


def cli(running: Any, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tiffin.cli", *args], capture_output=True, text=True, env=running.env, timeout=300
    )
    assert done.returncode == 0, f"tiffin {' '.join(args)} -> {done.returncode}\n{done.stderr}"


def containers_of(engine: Engine, home: Path) -> list[str]:
    return engine.containers({HOME_LABEL: home_digest(home)})


def eventually_none(engine: Engine, home: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while containers_of(engine, home) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert containers_of(engine, home) == []


def test_build_context_behind_keys_and_a_split_then_deleted(tmp_path, container_engine, base_image):
    home = tmp_path / "home"
    with serve_tiffin(home, timeout=120) as running:
        client = running.client()
        client.online_endpoints.create_or_update({"name": "byoc", "auth_mode": "key"})
        client.online_deployments.create_or_update(plain_deployment("blue"), "byoc")
        client.online_deployments.create_or_update(byoc_deployment(tmp_path, base_image), "byoc", timeout=300)
        client.online_endpoints.set_traffic("byoc", {"blue": 50, "own": 50})
        key = client.online_endpoints.get_keys("byoc")["primaryKey"]
        url = f"{running.url}/endpoints/byoc/score"

        (container,) = containers_of(container_engine, home)
        labels = container_engine.inspect(container)["Config"]["Labels"]  # type: ignore[index]
        assert labels["ai.tiffin.supervisor"] == str(running.process.pid)  # whose it is: kept while that one runs
        ports = container_engine.inspect(container)["NetworkSettings"]["Ports"]["8080/tcp"]  # type: ignore[index]
        assert [binding["HostIp"] for binding in ports] == ["127.0.0.1"]  # loopback only

        assert httpx.post(url, json={"data": [[1]]}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        seen: Counter[str] = Counter()
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
            for _ in range(200):
                r = http.post(url, json={"data": [[1, 2, 3]]})
                assert r.status_code == 200, r.text
                seen[r.headers["azureml-model-deployment"]] += 1
            own = http.post(url, json={"data": [[1, 2, 3]]}, headers={"azureml-model-deployment": "own"})
        assert seen["blue"] > 50 and seen["own"] > 50, seen
        assert own.json() == {"weight": "42", "sum": 6, "model_dir": "/var/azureml-app/azureml-models/weights/3"}

        # `containerize prune` leaves a running server's replica containers alone (deleting them is its job).
        pruned = subprocess.run(
            [sys.executable, "-m", "tiffin.cli", "containerize", "prune", "-o", "json"],
            capture_output=True, text=True, env=running.env, timeout=120,
        )  # fmt: skip
        assert pruned.returncode == 0, pruned.stderr
        assert json.loads(pruned.stdout)["kept_serving"] == [container], pruned.stdout
        assert containers_of(container_engine, home) == [container]

        logs = client.online_deployments.get_logs("own", "byoc", lines=1000, container="inference-server")
        assert "byoc server up, model 42" in logs and "scored 1 rows" in logs, logs
        prepared = client.online_deployments.get_logs("own", "byoc", container="storage-initializer")
        assert "[tiffin] image: tiffin/byoc:" in prepared, prepared  # built (or found) before the replica started

        client.online_endpoints.set_traffic("byoc", {"blue": 100, "own": 0})
        client.online_deployments.delete("own", "byoc")
        eventually_none(container_engine, home)
        assert httpx.post(url, json={"data": [[1]]}, headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_local_endpoint_then_no_container_left_after_the_server_stops(tmp_path, container_engine, base_image):
    home = tmp_path / "home"
    byoc_deployment(tmp_path, base_image, mount="/var/model-mount")
    with serve_tiffin(home, timeout=120) as running:
        # As Azure's local endpoints (which Azure runs on Docker): `--local`, no key, the deployment takes all traffic.
        cli(running, "online-endpoint", "create", "--local", "-n", "byoc")
        cli(running, "online-deployment", "create", "--local", "-f", str(tmp_path / "own.yml"))
        r = httpx.post(f"{running.url}/endpoints/byoc/score", json={"data": [[4, 5]]}, timeout=30)
        assert r.status_code == 200 and r.json()["sum"] == 9, r.text
        assert r.json()["model_dir"] == "/var/model-mount/weights/3"  # model_mount_path/NAME/VERSION, as on Azure
        assert len(containers_of(container_engine, home)) == 1
    eventually_none(container_engine, home, timeout=5)  # SIGTERM: the server removed it before it exited


def test_sigkill_then_restart_removes_the_leftover(tmp_path, container_engine, base_image):
    home = tmp_path / "home"
    # A server that ignores SIGTERM keeps its container alive after the replica goes with the killed server.
    with serve_tiffin(home, timeout=120) as running:
        client = running.client()
        client.online_endpoints.create_or_update({"name": "byoc", "auth_mode": "key"})
        spec = byoc_deployment(tmp_path, base_image, IGNORE_SIGTERM="1")
        client.online_deployments.create_or_update(spec, "byoc", all_traffic=True, timeout=300)
        (left,) = containers_of(container_engine, home)
        running.process.send_signal(signal.SIGKILL)
        running.process.wait(10)
        time.sleep(2)
        assert containers_of(container_engine, home) == [left], "the container should outlive the killed server"
    with serve_tiffin(home, timeout=120) as running:
        client = running.client()
        deadline = time.monotonic() + 60
        while left in containers_of(container_engine, home) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert left not in containers_of(container_engine, home)
        # The deployment is still in the store: the restarted server runs it again, in a new container.
        key = client.online_endpoints.get_keys("byoc")["primaryKey"]
        url, headers = f"{running.url}/endpoints/byoc/score", {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 120
        while (r := httpx.post(url, json={"data": [[2]]}, headers=headers, timeout=30)).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.5)
        assert json.loads(r.text)["sum"] == 2
        assert containers_of(container_engine, home) != [left]
    eventually_none(container_engine, home, timeout=15)


def test_no_engine_keeps_the_clear_error(monkeypatch):
    monkeypatch.setenv(ENGINE_ENV, "none")
    runner = ByocRunner(ByocRunnerConfig(image="myregistry/my-model:1", container_port=8080))
    with pytest.raises(RunnerLoadError, match=r"needs a container engine.*environment\.command"):
        runner.load()


def test_an_image_not_in_the_engine_is_never_pulled(container_engine):
    with pytest.raises(ContainerEngineError, match=r"never pulls images: run `docker pull tiffin/absent:1`"):
        byoc_image(container_engine, image="tiffin/absent:1", context=None)


def test_a_build_context_is_built_once_per_digest(tmp_path, container_engine, base_image):
    byoc_deployment(tmp_path, base_image)
    first = byoc_image(container_engine, image=None, context=tmp_path / "context")
    created = container_engine.inspect(first)["Created"]
    assert byoc_image(container_engine, image=None, context=tmp_path / "context") == first
    assert container_engine.inspect(first)["Created"] == created  # not built again
    (tmp_path / "context" / "server.py").write_text(SERVER + "\n# changed\n")
    assert byoc_image(container_engine, image=None, context=tmp_path / "context") != first


def test_without_an_engine_the_deployment_fails_at_once_saying_so(tmp_path):
    with serve_tiffin(tmp_path / "home", env={ENGINE_ENV: "none"}, timeout=120) as running:
        client = running.client()
        client.online_endpoints.create_or_update({"name": "byoc", "auth_mode": "key"})
        started = time.monotonic()
        with pytest.raises(TiffinError, match=r"needs a container engine .* give environment\.command"):
            spec = byoc_deployment(tmp_path, "tiffin/base:never-built")
            client.online_deployments.create_or_update(spec, "byoc", timeout=60)
        assert time.monotonic() - started < 30  # failed when prepared, not after replicas failed to start


def test_leftovers_are_the_containers_of_a_server_that_is_gone(tmp_path, container_engine, base_image):
    home = tmp_path / "home"
    ended = subprocess.Popen(["true"])
    ended.wait()
    labels = {HOME_LABEL: home_digest(home)}
    running = container_engine.start(
        base_image, labels={**labels, SUPERVISOR_LABEL: str(os.getpid())}, args=["sleep", "60"]
    )
    left = container_engine.start(base_image, labels={**labels, SUPERVISOR_LABEL: str(ended.pid)}, args=["sleep", "60"])
    try:
        assert remove_leftovers(home, container_engine) == [left]
        assert containers_of(container_engine, home) == [running]  # its server (this process) still runs
    finally:
        container_engine.run(["rm", "--force", running, left], check=False)


def test_a_container_that_exits_is_replaced_at_once(tmp_path, container_engine, base_image):
    home = tmp_path / "home"
    with serve_tiffin(home, timeout=120) as running:
        client = running.client()
        client.online_endpoints.create_or_update({"name": "byoc", "auth_mode": "key"})
        spec = byoc_deployment(tmp_path, base_image, EXIT_AFTER_SCORE="1")
        client.online_deployments.create_or_update(spec, "byoc", all_traffic=True, timeout=300)
        (first,) = containers_of(container_engine, home)
        key = client.online_endpoints.get_keys("byoc")["primaryKey"]
        r = httpx.post(
            f"{running.url}/endpoints/byoc/score", json={"data": [[1]]}, headers={"Authorization": f"Bearer {key}"}
        )
        assert r.status_code == 200, r.text
        # Not after the liveness failure threshold (Azure: 10 s + 30 x 10 s): the replica ends with its container.
        started = time.monotonic()
        while containers_of(container_engine, home) in ([first], []) and time.monotonic() - started < 30:
            time.sleep(0.3)
        (second,) = containers_of(container_engine, home)
        assert second != first
        events = [e["name"] for e in client.online_deployments.get_events("own", "byoc")]
        assert "ReplicaFailed" in events, events
