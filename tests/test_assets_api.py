"""The asset and compute routes of the control plane (issue 12), in-process over a real SQLite store: versions as
Azure keeps them, files copied into the content store, BentoML's model store, refusals that name the fix."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from tiffin.api import create_api, openapi_document
from tiffin.store import Store
from tiffin.testing import free_port, serve_command

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

TIFFIN = [sys.executable, "-m", "tiffin.cli"]
TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Api:
    def __init__(self, client: TestClient, store: Store, home: Path, work: Path) -> None:
        self.client, self.store, self.home, self.work = client, store, home, work

    def __getattr__(self, method: str) -> Any:
        call = getattr(self.client, method)
        return lambda url, **kw: call("/api" + url, headers={**AUTH, **kw.pop("headers", {})}, **kw)

    def model_folder(self, name: str = "model", content: bytes = b"weights") -> Path:
        folder = self.work / f"src-{len(list(self.work.iterdir()))}" / name
        folder.mkdir(parents=True)
        (folder / "model.pkl").write_bytes(content)
        return folder


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.setenv("BENTOML_DO_NOT_TRACK", "True")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    store = Store.open(home=home)
    app = create_api(store, admin_token=TOKEN, public_url="http://127.0.0.1:7700", home=home)
    with TestClient(Starlette(routes=[Mount("/api", app)])) as client:
        yield Api(client, store, home, work)
    store.close()


def message(response: Any) -> str:
    return response.json()["message"]


def test_every_route_needs_the_admin_token(api: Api) -> None:
    for path in ("/models", "/environments/e/versions", "/data/d/labels/latest", "/computes"):
        response = api.client.get("/api" + path)
        assert response.status_code == 401, path


def test_register_show_list_as_az_prints_them(api: Api) -> None:
    source = api.model_folder()
    created = api.post("/models/m/versions", json={"path": str(source), "description": "first"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["version"] == "1" and body["name"] == "m" and body["type"] == "custom_model"
    assert body["id"].endswith("/workspaces/tiffin/models/m/versions/1")
    assert set(body["creation_context"]) >= {"created_at", "last_modified_at"}
    stored = Path(body["path"])
    assert stored.name == "model" and stored.is_relative_to(api.home / "assets" / "blobs")
    assert api.post("/models/m/versions", json={"path": str(api.model_folder(content=b"2"))}).json()["version"] == "2"
    assert [a["version"] for a in api.get("/models/m/versions").json()] == ["2", "1"]
    assert [(a["name"], a["version"]) for a in api.get("/models").json()] == [("m", "2")]
    assert api.get("/models/m/labels/latest").json()["version"] == "2"
    assert api.get("/models/m/versions/1").json()["description"] == "first"


def test_put_same_content_is_200_other_content_409(api: Api) -> None:
    source = api.model_folder()
    first = api.put("/models/m/versions/3", json={"name": "m", "version": 3, "path": str(source)})
    assert first.status_code == 201, first.text
    again = api.put("/models/m/versions/3", json={"path": str(api.model_folder())})  # same content elsewhere
    assert again.status_code == 200, again.text
    assert again.json()["path"] == first.json()["path"]
    other = api.put("/models/m/versions/3", json={"path": str(api.model_folder(content=b"new"))})
    assert other.status_code == 409
    assert "register a new version" in message(other) and "--version N" in message(other)
    mismatch = api.put("/models/m/versions/3", json={"version": "4", "path": str(source)})
    assert mismatch.status_code == 422 and "version" in message(mismatch)


def test_the_stored_copy_outlives_the_source(api: Api) -> None:
    source = api.model_folder()
    stored = Path(api.post("/models/m/versions", json={"path": str(source)}).json()["path"])
    (source / "model.pkl").unlink()
    source.rmdir()
    assert (stored / "model.pkl").read_bytes() == b"weights"


def test_archive_hides_from_list_and_latest(api: Api) -> None:
    for content in (b"1", b"2"):
        api.post("/models/m/versions", json={"path": str(api.model_folder(content=content))})
    assert api.patch("/models/m/versions/2", json={"archived": True}).json()["archived"] is True
    assert [a["version"] for a in api.get("/models/m/versions").json()] == ["1"]
    listed = api.get("/models/m/versions", params={"include_archived": "true"}).json()
    assert [(a["version"], a.get("archived", False)) for a in listed] == [("2", True), ("1", False)]
    assert api.get("/models/m/labels/latest").json()["version"] == "1"
    assert api.get("/models/m/versions/2").status_code == 200
    api.patch("/models/m/versions/1", json={"archived": True})
    latest = api.get("/models/m/labels/latest")
    assert latest.status_code == 404 and "tiffin model restore --name m --version 2" in message(latest)
    bad = api.get("/models/m/versions", params={"include_archived": "maybe"})
    assert bad.status_code == 400


def test_update_only_what_may_change(api: Api) -> None:
    api.post("/models/m/versions", json={"path": str(api.model_folder())})
    updated = api.patch("/models/m/versions/1", json={"description": "d", "tags": {"a": "b"}, "stage": "Production"})
    assert updated.status_code == 200 and updated.json()["tags"] == {"a": "b"}
    refused = api.patch("/models/m/versions/1", json={"path": "/elsewhere"})
    assert refused.status_code == 409 and "register a new version" in message(refused)


def test_delete_in_use_is_refused_then_allowed(api: Api) -> None:
    api.post("/models/m/versions", json={"path": str(api.model_folder())})
    api.store.create_endpoint("online", "ep", {})
    api.store.put_deployment("ep", "blue", "online", {"model": "azureml:m:1"})
    refused = api.delete("/models/m/versions/1")
    assert refused.status_code == 409 and "ep/blue" in message(refused)
    api.store.delete_deployment("ep", "blue")
    stored = Path(api.get("/models/m/versions/1").json()["path"])
    assert api.delete("/models/m/versions/1").status_code == 204
    assert not stored.exists()  # the content went with the last version holding it
    assert api.get("/models/m/versions/1").status_code == 404


def test_refusals_name_the_fix(api: Api) -> None:
    relative = api.post("/models/m/versions", json={"path": "model"})
    assert relative.status_code == 422 and "absolute path" in message(relative)
    missing = api.post("/models/m/versions", json={"path": str(api.work / "nope")})
    assert missing.status_code == 422 and "does not exist" in message(missing)
    root = api.post("/data/d/versions", json={"path": "/"})
    assert root.status_code == 422 and "root" in message(root)
    inside = api.post("/models/m/versions", json={"path": str(api.home)})
    assert inside.status_code == 422 and "TIFFIN_HOME" in message(inside)
    unknown = api.post("/models/m/versions", json={"path": "/x", "pth": 1})
    assert unknown.status_code == 422 and "did you mean 'path'" in message(unknown)
    assert api.get("/models/nope/versions/1").status_code == 404
    assert "tiffin model list" in message(api.get("/models/nope/labels/latest"))
    not_a_file = api.post("/data/d/versions", json={"type": "uri_file", "path": str(api.model_folder())})
    assert not_a_file.status_code == 422 and "uri_folder" in message(not_a_file)


def test_data_assets_local_and_remote(api: Api) -> None:
    folder = api.model_folder("rows")
    local = api.post("/data/rows/versions", json={"type": "uri_folder", "path": str(folder)})
    assert local.status_code == 201 and Path(local.json()["path"]).is_dir()
    remote = api.post("/data/web/versions", json={"type": "uri_file", "path": "https://example.org/iris.csv"})
    assert remote.status_code == 201 and remote.json()["path"] == "https://example.org/iris.csv"
    assert sorted(a["name"] for a in api.get("/data").json()) == ["rows", "web"]


def test_environment_conda_file_is_kept_as_its_content(api: Api) -> None:
    conda = api.work / "conda.yml"
    conda.write_text("name: e\ndependencies:\n  - python=3.11\n  - pip:\n    - scikit-learn\n")
    created = api.post("/environments/e/versions", json={"image": "python:3.11", "conda_file": str(conda)})
    assert created.status_code == 201, created.text
    assert created.json()["conda_file"]["dependencies"][0] == "python=3.11"
    context = api.work / "docker"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM python:3.11\n")
    built = api.post("/environments/b/versions", json={"build": {"path": str(context)}})
    assert built.status_code == 201, built.text
    assert (Path(built.json()["build"]["path"]) / "Dockerfile").is_file()


def test_model_download_is_a_tar_of_its_files(api: Api) -> None:
    api.post("/models/m/versions", json={"path": str(api.model_folder())})
    response = api.get("/models/m/versions/1/download")
    assert response.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as tar:
        assert tar.extractfile("model/model.pkl").read() == b"weights"  # type: ignore[union-attr]
    assert not list((api.home / "assets" / "scratch").iterdir())


def test_models_are_in_bentomls_model_store(api: Api, tmp_path: Path) -> None:
    import bentoml
    from bentoml._internal.models.model import ModelStore
    from bentoml.exceptions import NotFound

    api.put("/models/My_Model/versions/1", json={"path": str(api.model_folder()), "type": "mlflow_model"})
    store = ModelStore(str(tmp_path / "bentoml" / "models"))
    model = bentoml.models.get("my_model:1", _model_store=store)
    assert (Path(model.path) / "model" / "model.pkl").read_bytes() == b"weights"
    assert model.info.metadata["type"] == "mlflow_model"
    stored = Path(api.get("/models/My_Model/versions/1").json()["path"])
    assert (Path(model.path) / "model" / "model.pkl").stat().st_ino == (stored / "model.pkl").stat().st_ino
    api.delete("/models/My_Model/versions/1")
    with pytest.raises(NotFound):
        bentoml.models.get("my_model:1", _model_store=store)


def test_computes(api: Api) -> None:
    body = {"type": "amlcompute", "size": "Standard_DS3_v2", "min_instances": 0, "max_instances": 2}
    created = api.put("/computes/cpu-cluster", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["id"].endswith("/computes/cpu-cluster")
    assert api.put("/computes/cpu-cluster", json={**created.json(), "max_instances": 3}).status_code == 200
    assert api.patch("/computes/cpu-cluster", json={"max_instances": 4}).json()["max_instances"] == 4
    refused = api.patch("/computes/cpu-cluster", json={"min_instances": 9})
    assert refused.status_code == 422 and "max_instances" in message(refused)
    assert [c["name"] for c in api.get("/computes").json()] == ["cpu-cluster"]
    assert api.delete("/computes/cpu-cluster").status_code == 204
    assert "tiffin compute list" in message(api.get("/computes/cpu-cluster"))


def test_openapi_lists_the_asset_routes(api: Api) -> None:
    document = openapi_document()
    for kinds in ("models", "environments", "data"):
        assert f"/{kinds}/{{name}}/versions/{{version}}" in document["paths"]
    assert "/computes/{name}" in document["paths"]
    put = document["paths"]["/data/{name}/versions/{version}"]["put"]
    assert put["operationId"] == "put_data_version" and {"200", "201"} <= set(put["responses"])
    listing = document["paths"]["/models"]["get"]["parameters"][0]
    assert listing["name"] == "include_archived" and listing["schema"]["type"] == "boolean"
    assert api.get("/openapi.json").json()["paths"].keys() == document["paths"].keys()


@pytest.mark.slow
def test_tiffin_build_packs_the_registered_model(api: Api, tmp_path: Path) -> None:
    # A deployment naming model: azureml:NAME:V builds into a Bento that carries BentoML's copy of the model,
    # and `bentoml models list` shows the registered model.
    plain = Path(__file__).parent / "deployments" / "plain"
    registered = api.put("/models/plain-model/versions/1", json={"path": str(plain / "model")})
    assert registered.status_code == 201, registered.text
    spec = (plain / "deployment.yml").read_text().replace("model:\n  path: model/\n", "model: azureml:plain-model:1\n")
    (tmp_path / "deployment.yml").write_text(spec.replace("code: code/", f"code: {plain / 'code'}"))
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    bentoml_cli = str(Path(sys.executable).parent / "bentoml")
    listed = subprocess.run([bentoml_cli, "models", "list", "-o", "json"], capture_output=True, text=True, env=env)
    assert "plain-model:1" in {m["tag"] for m in json.loads(listed.stdout)}, listed.stdout + listed.stderr
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiffin.cli",
            "build",
            "-f",
            str(tmp_path / "deployment.yml"),
            "--version",
            "v1",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    tag = json.loads(built.stdout)["tag"]
    port = free_port()
    command = [bentoml_cli, "serve", tag, "--port", str(port), "--host", "127.0.0.1"]
    with serve_command(command, f"http://127.0.0.1:{port}/", env=env, cwd=tmp_path) as server:
        scored = httpx.post(server.url + "/score", json={"data": [[1, 2], [3, 4]]}, timeout=30)
        assert scored.status_code == 200, scored.text
        assert scored.json() == {"sums": [6, 14], "raw_type": "str"}
    missing = subprocess.run(
        [*TIFFIN, "build", "-f", str(tmp_path / "deployment.yml")],
        capture_output=True,
        text=True,
        env={**env, "BENTOML_HOME": str(tmp_path / "other")},
        timeout=120,
    )
    assert missing.returncode == 1 and "tiffin model create" in missing.stderr
