"""`tiffin environment build|prune|list-built` (issue 13): environments built on the server ahead of deployments,
and those nothing uses removed. A real `tiffin serve`, the CLI as a user runs it, real uv builds from PyPI (small:
Python 3.12 with six and/or packaging, uv's default cache), real deployments in the store.

The first tests need no server: what a file given to ``build -f`` is, and the body sent for each form.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
import yaml

from tiffin.cli.environments import build_request, file_kind
from tiffin.environments.builder import MARKER
from tiffin.environments.conda import translate
from tiffin.environments.runtime import runtime_key
from tiffin.environments.usage import live_environments
from tiffin.errors import SpecError

TIFFIN = [sys.executable, "-m", "tiffin.cli"]
ONLINE_SCHEMA = "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json"
BATCH_SCHEMA = "https://azuremlschemas.azureedge.net/latest/batchDeployment.schema.json"
ENV_SCHEMA = "https://azuremlschemas.azureedge.net/latest/environment.schema.json"


def conda(packages: list[str], python: str = "3.12") -> str:
    pip = "".join(f"      - {p}\n" for p in packages)
    return f"channels: [conda-forge]\ndependencies:\n  - python={python}\n  - pip\n  - pip:\n{pip}"


def write_project(root: Path) -> Path:
    """A scoring script, a model, conda files and deployment/environment YAMLs naming them (relatively)."""
    (root / "code").mkdir(parents=True, exist_ok=True)
    (root / "code" / "score.py").write_text("def init():\n    pass\n\n\ndef run(raw):\n    return raw\n")
    (root / "model").mkdir(exist_ok=True)
    (root / "model" / "weights.json").write_text("{}")
    (root / "six.yml").write_text(conda(["six==1.16.0"]))
    (root / "packaging.yml").write_text(conda(["packaging"]))
    (root / "both.yml").write_text(conda(["six==1.16.0", "packaging"]))
    (root / "gone.yml").write_text(conda(["six==1.16.0"]))
    for name, conda_file in (("blue", "six.yml"), ("lost", "gone.yml")):
        (root / f"{name}.yml").write_text(
            f"$schema: {ONLINE_SCHEMA}\nname: {name}\nendpoint_name: envs\nmodel:\n  path: model/\n"
            "code_configuration:\n  code: code/\n  scoring_script: score.py\n"
            f"environment:\n  conda_file: {conda_file}\ninstance_count: 1\n"
        )
    (root / "batch.yml").write_text(
        f"$schema: {BATCH_SCHEMA}\nname: nightly\nendpoint_name: benvs\nmodel:\n  path: model/\n"
        "code_configuration:\n  code: code/\n  scoring_script: score.py\n"
        "environment:\n  conda_file: packaging.yml\nmini_batch_size: 2\n"
    )
    (root / "env.yml").write_text(f"$schema: {ENV_SCHEMA}\nname: six-env\nconda_file: six.yml\n")
    return root


# --- no server: what the file is, what is sent ------------------------------------------------------------------


def test_file_kind_from_schema_or_fields(tmp_path):
    assert file_kind({"$schema": ONLINE_SCHEMA}, None, "f") == "online"
    assert file_kind({"$schema": BATCH_SCHEMA}, None, "f") == "batch"
    assert file_kind({"$schema": ENV_SCHEMA, "name": "e"}, None, "f") == "environment"
    assert file_kind({"name": "b", "model": "m", "code_configuration": {}}, None, "f") == "online"
    assert file_kind({"name": "b", "model": "m", "mini_batch_size": 3}, None, "f") == "batch"
    assert file_kind({"name": "e", "conda_file": "c.yml"}, None, "f") == "environment"
    assert file_kind({"name": "c", "dependencies": ["python=3.12"]}, None, "f") == "conda"
    with pytest.raises(SpecError, match=r"\$schema.*online endpoint"):
        file_kind(
            {"$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json"}, None, "f"
        )
    with pytest.raises(SpecError, match="neither a deployment"):
        file_kind({"name": "x"}, None, "f")


def test_build_request_for_each_form(tmp_path, monkeypatch):
    root = write_project(tmp_path / "project")
    monkeypatch.chdir(tmp_path)
    body, what = build_request(root / "blue.yml", None, None, None, ["instance_count=2"])
    assert body["kind"] == "online" and what == "online deployment 'blue'"
    # The file's relative paths resolve against its folder, as `create -f` resolves them.
    assert body["deployment"]["environment"]["conda_file"] == str(root / "six.yml")
    assert body["deployment"]["instance_count"] == 2
    body, _ = build_request(root / "batch.yml", None, None, None, None)
    assert body["kind"] == "batch" and body["deployment"]["environment"]["conda_file"] == str(root / "packaging.yml")
    body, what = build_request(root / "env.yml", None, None, None, None)
    assert body == {"environment": {"name": "six-env", "conda_file": str(root / "six.yml")}}
    assert what == "environment 'six-env'"
    body, _ = build_request(Path("project/six.yml"), None, None, None, None)
    assert body == {"environment": {"conda_file": str(root / "six.yml")}}
    assert build_request(None, "six-env", "3", None, None)[0] == {"environment": "azureml:six-env:3"}
    assert build_request(None, "six-env", None, "latest", None)[0] == {"environment": "azureml:six-env@latest"}
    for args, hint in (
        ((root / "six.yml", None, None, None, ["name=x"]), "--set"),
        ((root / "six.yml", "six-env", None, None, None), "with --file, or a registered"),
        ((None, None, None, None, None), "with --file, or a registered"),
        ((None, "six-env", None, None, None), "--version V or --label latest"),
        ((None, "six-env", None, "newest", None), "'latest'"),
        ((root / "env.yml", None, "1", None, None), "go with --name"),
    ):
        with pytest.raises(typer.BadParameter, match=hint):
            build_request(*args)


def test_live_environments_are_found_by_their_processes(tmp_path):
    envs = tmp_path / "envs"
    (envs / "k1").mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "60"], env={**os.environ, "VIRTUAL_ENV": str(envs / "k1")})
    try:
        deadline = time.monotonic() + 10
        while sleeper.pid not in live_environments(envs).get("k1", []):
            assert time.monotonic() < deadline, live_environments(envs)
            time.sleep(0.05)
        assert "k2" not in live_environments(envs)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sleeper.pid not in live_environments(envs).get("k1", [])


# --- a real server ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[object]:
    from tiffin.testing import serve_tiffin

    # Its own $TIFFIN_HOME/envs, not the folder the other tests share (conftest's TIFFIN_ENVS_DIR): prune removes
    # what this server's store does not use, which would be the others' environments there.
    with serve_tiffin(env={"TIFFIN_ENVS_DIR": ""}) as running:
        yield running


def envs(server) -> Path:
    return server.home / "envs"


@pytest.fixture(scope="module")
def project(server, tmp_path_factory) -> Path:
    return write_project(tmp_path_factory.mktemp("env-cli") / "project")


def tiffin(server, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TIFFIN, *args], capture_output=True, text=True, timeout=600, env=server.env, cwd=cwd)


def ok(done: subprocess.CompletedProcess[str]) -> dict:
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def api(server, method: str, route: str, token: str | None = "admin", **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.admin_token}"} if token == "admin" else {}
    if token not in (None, "admin"):
        headers = {"Authorization": f"Bearer {token}"}
    return httpx.request(method, f"{server.url}/api{route}", headers=headers, timeout=600, **kwargs)


@pytest.mark.parametrize("token", [None, "wrong"])
def test_every_route_needs_the_admin_token(server, token):
    for method, route, body in (
        ("POST", "/environments/-/build", {"environment": {"conda_file": {"dependencies": ["python=3.12"]}}}),
        ("POST", "/environments/-/prune", {}),
        ("GET", "/environments/-/built", None),
    ):
        response = api(server, method, route, token=token, json=body)
        assert response.status_code == 401, (route, response.text)
        assert "admin token" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 422, "'environment'"),
        ({"environment": {}, "deployment": {"name": "x"}}, 422, "exactly one"),
        ({"environment": 5}, 422, "'environment'"),
        ({"environment": "python-3.12"}, 422, "no environment reference"),
        ({"environment": "azureml:no-such-env:1"}, 422, "tiffin environment list"),
        ({"environment": {"conda_file": "relative.yml"}}, 422, "'environment.conda_file'"),
        ({"environment": {"conda_file": "/no/such/conda.yml"}}, 422, "does not exist"),
        ({"environment": {"condafile": "/x.yml"}}, 422, "condafile"),
        ({"environment": {}, "kind": "batch"}, 422, "'kind'"),
        ({"deployment": {"name": "x"}, "kind": "sideways"}, 422, "'kind'"),
        ({"deployment": {"model": "m"}}, 422, "'deployment.name'"),
        ({"deployment": {"name": "x", "model": "m"}}, 422, "code_configuration"),
        ({"environment": {}, "force": True}, 422, "'force'"),
        ({"environment": {"build": {"path": "/tmp"}}}, 422, "container engine"),
    ],
)
def test_bad_builds_are_refused_naming_the_field(server, body, status, field):
    response = api(server, "POST", "/environments/-/build", json=body)
    assert response.status_code == status, response.text
    assert field in response.json()["message"], response.json()


def test_bad_prunes_are_refused_naming_the_field(server):
    for body, field in (({"dry_run": "yes"}, "'dry_run'"), ({"force": True}, "'force'")):
        response = api(server, "POST", "/environments/-/prune", json=body)
        assert response.status_code == 422 and field in response.json()["message"], response.text


def test_nothing_to_build_for_tiffins_own_environment(server, project):
    response = api(server, "POST", "/environments/-/build", json={"environment": {}})
    assert response.status_code == 200, response.text
    assert response.json()["key"] is None and "tiffin's own environment" in response.json()["notes"][0]


def test_build_from_a_conda_file_then_reused_as_a_deployment_and_a_registered_environment(server, project):
    started = time.monotonic()
    done = tiffin(server, "environment", "build", "-f", str(project / "six.yml"))
    first = ok(done)
    print(f"first build: {time.monotonic() - started:.1f} s (uv cache warm or not)")
    # Progress: the announcement, then uv's own output as it came, then the result.
    assert "building environment of conda file" in done.stderr
    assert "six==1.16.0" in done.stderr and "[tiffin] built environment" in done.stderr, done.stderr
    assert first["reused"] is False and first["python"].startswith("3.12.")
    assert first["requirements"] == ["six==1.16.0"] and first["skipped"] == ["pip"]
    path = Path(first["path"])
    assert path == envs(server) / first["key"] and (path / MARKER).is_file()
    assert Path(first["log"]).read_text().count("six==1.16.0") >= 1
    six = subprocess.run([first["interpreter"], "-c", "import six, uvicorn; print(six.__version__)"], text=True,
                         capture_output=True, check=True)  # fmt: skip
    assert six.stdout.strip() == "1.16.0"
    # The deployment that names the same conda file resolves to the same environment: found built.
    again = ok(tiffin(server, "environment", "build", "-f", str(project / "blue.yml"), "-q"))
    assert (again["key"], again["reused"]) == (first["key"], True)
    # A registered environment, referenced by name and version, as the server inlines it for a deployment.
    ok(tiffin(server, "environment", "create", "-f", str(project / "env.yml")))
    registered = ok(tiffin(server, "environment", "build", "-n", "six-env", "-l", "latest"))
    assert (registered["key"], registered["reused"]) == (first["key"], True)
    # --set on the registered environment: another conda file, another environment.
    # (a relative path given with --set is the current directory's)
    changed = tiffin(server, "environment", "build", "-n", "six-env", "-v", "1", "--set", "conda_file=both.yml", "-q",
                     cwd=project)  # fmt: skip
    assert ok(changed)["key"] != first["key"] and ok(changed)["requirements"] == ["six==1.16.0", "packaging"]
    listed = ok(tiffin(server, "environment", "list-built"))
    assert {first["key"], ok(changed)["key"]} <= {item["key"] for item in listed}
    assert all(item["size_bytes"] > 0 and item["python"].startswith("3.12.") for item in listed)


def test_json_answer_without_streaming_and_the_sdk(server, project):
    spec = {"conda_file": str(project / "six.yml")}
    response = api(server, "POST", "/environments/-/build", json={"environment": spec})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    assert response.json()["reused"] is True
    lines: list[str] = []
    with server.client() as client:
        built = client.environments.build(spec, on_output=lines.append)
        assert built["key"] == response.json()["key"]
        assert any("reusing environment" in line for line in lines), lines


def test_a_quiet_build_sends_a_line_every_heartbeat(monkeypatch):
    from tiffin.api import environments as routes

    monkeypatch.setattr(routes, "HEARTBEAT_S", 0.05)

    async def stream() -> list[dict]:
        events = routes._BuildEvents(asyncio.get_running_loop())
        task = asyncio.create_task(_collect(routes._ndjson(events)))
        await asyncio.sleep(0.3)  # uv says nothing for a while
        events.write("Resolved 1 package in 5ms\nInstalled")
        events.write(" 1 package\n")
        events.send("result", {"key": "k"})
        return await task

    out = asyncio.run(stream())
    assert out[0] == {"waiting": 0} and len([e for e in out if "waiting" in e]) >= 3
    assert [e["log"] for e in out if "log" in e] == ["Resolved 1 package in 5ms", "Installed 1 package"]
    assert out[-1] == {"result": {"key": "k"}}


async def _collect(chunks) -> list[dict]:
    return [json.loads(chunk) async for chunk in chunks]


def test_a_build_waits_without_blocking_the_server_and_streams_as_it_goes(server, tmp_path):
    (tmp_path / "held.yml").write_text(conda(["six==1.16.0"], python="3.13"))
    key = runtime_key(translate(yaml.safe_load((tmp_path / "held.yml").read_text()), source="test"))
    locks = envs(server) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    result: dict = {}

    def build() -> None:
        with server.client() as client:
            result.update(client.environments.build({"conda_file": str(tmp_path / "held.yml")}, on_output=lines.append))

    # Holding the key's lock (as another server building it would) makes the server's build wait for it.
    with open(locks / f"{key}.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        thread = threading.Thread(target=build)
        thread.start()
        deadline = time.monotonic() + 60
        while not any("being built by another" in line for line in lines):
            assert time.monotonic() < deadline and thread.is_alive(), lines
            time.sleep(0.05)
        # Streamed before the build ended; and the server answers meanwhile.
        for route in ("/health", "/environments/-/built"):
            started = time.monotonic()
            assert api(server, "GET", route).status_code == 200
            assert time.monotonic() - started < 2
        assert result == {}
    thread.join(300)
    assert result["key"] == key and result["reused"] is False and result["python"].startswith("3.13.")
    assert any(line.startswith("[tiffin] built environment") for line in lines), lines


def test_a_failed_build_says_what_uv_said(server, project, tmp_path):
    (tmp_path / "bad.yml").write_text(conda(["tiffin-no-such-package-h13==0.0.1"]))
    started = time.monotonic()
    done = tiffin(server, "environment", "build", "-f", str(tmp_path / "bad.yml"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "tiffin-no-such-package-h13" in done.stderr.split("ERROR")[-1], done.stderr
    assert time.monotonic() - started < 120
    with server.client() as client, pytest.raises(SpecError, match="tiffin-no-such-package-h13"):
        client.environments.build({"conda_file": str(tmp_path / "bad.yml")})
    leftovers = [p.name for p in envs(server).iterdir() if p.name.startswith(".build-")]
    assert leftovers == []


def test_prune_removes_what_nothing_uses_and_keeps_what_deployments_use(server, project):
    used_online = ok(tiffin(server, "environment", "build", "-f", str(project / "blue.yml"), "-q"))["key"]
    used_batch = ok(tiffin(server, "environment", "build", "-f", str(project / "batch.yml"), "-q"))["key"]
    unused = ok(tiffin(server, "environment", "build", "-f", str(project / "both.yml"), "-q"))["key"]
    assert len({used_online, used_batch, unused}) == 3
    ok(tiffin(server, "online-endpoint", "create", "-n", "envs"))
    ok(tiffin(server, "online-deployment", "create", "-f", str(project / "blue.yml"), "--no-wait"))
    ok(tiffin(server, "online-deployment", "create", "-f", str(project / "lost.yml"), "--no-wait"))
    ok(tiffin(server, "batch-endpoint", "create", "-n", "benvs"))
    ok(tiffin(server, "batch-deployment", "create", "-f", str(project / "batch.yml")))
    (project / "gone.yml").unlink()  # deployment 'lost' can no longer resolve its environment
    preview = ok(tiffin(server, "environment", "prune", "--dry-run"))
    assert preview["dry_run"] is True and unused in [item["key"] for item in preview["removed"]]
    kept = {item["key"]: item["used_by"] for item in preview["kept"]}
    assert "online deployment 'envs/blue'" in kept[used_online]
    assert "batch deployment 'benvs/nightly'" in kept[used_batch]
    assert [item["user"] for item in preview["unresolved"]] == ["online deployment 'envs/lost'"]
    assert "gone.yml" in preview["unresolved"][0]["message"]
    assert (envs(server) / unused).is_dir()  # a dry run removes nothing
    # Without --yes and without a terminal to ask on, nothing is removed.
    refused = subprocess.run([*TIFFIN, "environment", "prune"], capture_output=True, text=True, timeout=120,
                             env=server.env, stdin=subprocess.DEVNULL)  # fmt: skip
    assert refused.returncode == 1 and "--yes" in refused.stderr and (envs(server) / unused).is_dir()
    stale_copy = server.home / "runtime" / "0123456789abcdef"  # tiffin's runtime as an older version left it
    (stale_copy / "tiffin").mkdir(parents=True)
    done = ok(tiffin(server, "environment", "prune", "--yes"))
    assert done["runtime_copies_removed"] == [stale_copy.name] and not stale_copy.exists()
    assert [p.name for p in (server.home / "runtime").iterdir()] != []  # the server's own copy stays
    removed = [item["key"] for item in done["removed"]]
    assert unused in removed and used_online not in removed and used_batch not in removed
    assert done["freed_bytes"] == sum(item["size_bytes"] for item in done["removed"]) > 0
    assert not (envs(server) / unused).exists()
    assert not (envs(server) / ".logs" / f"{unused}.log").exists()
    assert (envs(server) / used_online / MARKER).is_file()
    assert (envs(server) / used_batch / MARKER).is_file()
    assert ok(tiffin(server, "environment", "prune", "--yes"))["removed"] == []
    # Once nothing uses it, it goes too.
    deleted = tiffin(server, "batch-deployment", "delete", "-n", "nightly", "-e", "benvs", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    again = ok(tiffin(server, "environment", "prune", "--yes"))
    assert [item["key"] for item in again["removed"]] == [used_batch]


def test_a_shared_folder_is_pruned_only_when_asked(tmp_path):
    from tiffin.testing import serve_tiffin

    shared = tmp_path / "shared-envs"
    (tmp_path / "six.yml").write_text(conda(["six==1.16.0"]))
    with serve_tiffin(tmp_path / "home", env={"TIFFIN_ENVS_DIR": str(shared)}) as other:
        key = ok(tiffin(other, "environment", "build", "-f", str(tmp_path / "six.yml"), "-q"))["key"]
        assert (shared / key / MARKER).is_file()
        refused = tiffin(other, "environment", "prune", "--yes")
        assert refused.returncode == 1 and "TIFFIN_ENVS_DIR" in refused.stderr and "--shared" in refused.stderr
        assert (shared / key).is_dir()
        preview = ok(tiffin(other, "environment", "prune", "--dry-run"))
        assert preview["shared"] is True and preview["envs_dir"] == str(shared)
        assert [item["key"] for item in preview["removed"]] == [key]
        done = ok(tiffin(other, "environment", "prune", "--shared", "--yes"))
        assert [item["key"] for item in done["removed"]] == [key] and not (shared / key).exists()
