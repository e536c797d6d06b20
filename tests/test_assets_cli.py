"""`tiffin model|environment|data|compute` and the SDK's asset groups, as a user of `az ml` runs them.

The first tests need no server: how a YAML file, --set and flags become the spec that is sent (relative
paths against the file's folder for the file and --set, against the current directory for flags), and the
refusals made before anything is sent. The others run the commands against a real `tiffin serve`.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from tiffin.cli.assets import load_asset, parse_tags
from tiffin.specs import Compute, DataAsset, EnvironmentAsset, ModelAsset

TIFFIN = [sys.executable, "-m", "tiffin.cli"]


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TIFFIN, *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


# --- no server: what is sent --------------------------------------------------------------------


@pytest.fixture()
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A YAML folder and another folder the command runs in."""
    folder, elsewhere = tmp_path / "cli" / "assets", tmp_path / "work"
    folder.mkdir(parents=True)
    elsewhere.mkdir()
    (folder / "model.yml").write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/model.schema.json\n"
        "name: local-file-example\npath: mlflow-model/model.pkl\ndescription: Model created from local file.\n"
    )
    monkeypatch.chdir(elsewhere)
    return folder, elsewhere


def test_yaml_and_set_paths_resolve_against_the_file_folder(layout):
    folder, _ = layout
    spec = load_asset(ModelAsset, folder / "model.yml", ["version=3"]).spec
    assert spec.path == str(folder / "mlflow-model" / "model.pkl")
    assert spec.version == "3"  # --set version=$N gives a number; versions are strings
    spec = load_asset(ModelAsset, folder / "model.yml", ["path=other"]).spec
    assert spec.path == str(folder / "other")


def test_flag_paths_resolve_against_the_current_directory(layout):
    folder, elsewhere = layout
    spec = load_asset(ModelAsset, folder / "model.yml", [], paths={"path": "models/m"}).spec
    assert spec.path == str(elsewhere / "models" / "m")
    spec = load_asset(DataAsset, None, [], flags={"name": "d"}, paths={"path": "../data"}).spec
    assert spec.path == str(elsewhere.parent / "data")
    # Without a file, --set values are the current directory's too.
    spec = load_asset(DataAsset, None, ["path=rows.csv", "type=uri_file"], flags={"name": "d"}).spec
    assert spec.path == str(elsewhere / "rows.csv") and spec.type == "uri_file"


def test_remote_paths_are_kept(layout):
    for uri in ("https://example.org/iris.csv", "azureml://datastores/workspaceblobstore/paths/iris/"):
        spec = load_asset(DataAsset, None, [], flags={"name": "iris"}, paths={"path": uri}).spec
        assert spec.path == uri


def test_flags_override_the_file_and_tags_add_to_its_tags(layout):
    folder, _ = layout
    (folder / "tagged.yml").write_text("name: m\npath: m\ntags: {team: a}\n")
    spec = load_asset(
        ModelAsset, folder / "tagged.yml", [], flags={"name": "yes", "version": "1", "tags": {"stage": "dev"}}
    ).spec
    assert spec.name == "yes" and spec.version == "1"  # JSON-quoted: YAML keeps them strings
    assert spec.tags == {"team": "a", "stage": "dev"}


def test_environment_paths(layout):
    folder, elsewhere = layout
    (folder / "env.yml").write_text("name: e\nconda_file: conda.yml\nbuild: {path: docker}\n")
    spec = load_asset(EnvironmentAsset, folder / "env.yml", []).spec
    assert spec.conda_file == str(folder / "conda.yml") and spec.build.path == str(folder / "docker")
    spec = load_asset(
        EnvironmentAsset, None, [], flags={"name": "e", "build.dockerfile_path": "Dockerfile.cpu"},
        paths={"conda_file": "c.yml", "build.path": "ctx"},
    ).spec  # fmt: skip
    assert spec.conda_file == str(elsewhere / "c.yml")
    assert spec.build.path == str(elsewhere / "ctx") and spec.build.dockerfile_path == "Dockerfile.cpu"


def test_compute_flags(layout):
    spec = load_asset(
        Compute, None, [], flags={"name": "cpu-cluster", "type": "AmlCompute", "min_instances": 0, "max_instances": 2}
    ).spec
    assert (spec.type, spec.min_instances, spec.max_instances) == ("amlcompute", 0, 2)


def test_tags_as_az_takes_them():
    assert parse_tags(["a=b"], ["c=d", "e"]) == {"a": "b", "c": "d", "e": ""}
    assert parse_tags(None) is None
    with pytest.raises(typer.BadParameter, match="unexpected"):
        parse_tags(None, ["stray"])


def test_refusals_before_anything_is_sent(tmp_path):
    env = {**os.environ, "TIFFIN_URL": "http://127.0.0.1:9", "TIFFIN_ADMIN_TOKEN": "x"}
    done = run("model", "create", "--path", "m", env=env)
    assert done.returncode == 2 and "--name" in done.stderr
    done = run("model", "create", "-n", "m", env=env)
    assert done.returncode == 2 and "--path" in done.stderr and "--file" in done.stderr
    done = run("data", "create", "-n", "d", env=env)
    assert done.returncode == 2 and "--path" in done.stderr
    bad = tmp_path / "model.yml"
    bad.write_text("name: m\npath: model\ndescripton: typo\n")
    done = run("model", "create", "-f", str(bad), env=env)
    assert done.returncode == 1 and "did you mean 'description'" in done.stderr and "Traceback" not in done.stderr
    done = run("model", "create", "-n", "m", "-p", "m", "stray", env=env)
    assert done.returncode == 2 and "stray" in done.stderr
    done = run("model", "update", "-n", "m", "-v", "1", env=env)
    assert done.returncode == 2 and "--set description=" in done.stderr


# --- against a real `tiffin serve` --------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[object]:
    from tiffin.testing import serve_tiffin

    with serve_tiffin() as running:
        yield running


@pytest.fixture()
def az(server, tmp_path):
    """`tiffin ARGS` in ``tmp_path`` against the server; a CompletedProcess."""

    def call(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return run(*args, env=server.env, cwd=cwd or tmp_path)

    return call


def ok(done: subprocess.CompletedProcess[str]) -> object:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else None


def model_folder(root: Path, content: str = "weights-1") -> Path:
    folder = root / "model"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.pkl").write_text(content)
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "conf.json").write_text('{"a": 1}')
    return folder


def test_model_versions_as_azure_keeps_them(az, tmp_path):
    """Register from model.yml with --set version=$N as Azure's samples do; show, list, label latest; the same
    content again is a no-op, other content under that version is refused naming the fix."""
    spec_dir = tmp_path / "cli" / "assets"
    model_folder(spec_dir)
    (spec_dir / "model.yml").write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/model.schema.json\n"
        "name: sklearn-model\npath: model\ndescription: a regression\n"
    )
    first = ok(az("model", "create", "-f", "cli/assets/model.yml", "--set", "version=1"))
    assert first["name"] == "sklearn-model" and first["version"] == "1"
    assert first["id"].endswith("/models/sklearn-model/versions/1") and "creation_context" in first
    assert ok(az("model", "create", "-f", "cli/assets/model.yml", "--set", "version=1"))["version"] == "1"
    (spec_dir / "model" / "model.pkl").write_text("weights-2")
    refused = az("model", "create", "-f", "cli/assets/model.yml", "--set", "version=1")
    assert refused.returncode == 1 and "--version" in refused.stderr, refused.stderr
    second = ok(az("model", "create", "-f", "cli/assets/model.yml"))  # no version: the next one
    assert second["version"] == "2"
    assert az("model", "show", "-n", "sklearn-model", "-l", "latest", "--query", "version", "-o", "tsv").stdout == "2\n"
    versions = ok(az("model", "list", "-n", "sklearn-model", "--query", "[].version"))
    assert versions == ["2", "1"]
    names = ok(az("model", "list", "--query", "[].name"))
    assert names.count("sklearn-model") == 1
    table = az("model", "list", "-n", "sklearn-model", "-o", "table")
    assert table.returncode == 0 and "sklearn-model" in table.stdout
    shown = az("model", "show", "-n", "sklearn-model", "-v", "1", "--query", "id", "-o", "tsv")
    assert shown.stdout.strip() == first["id"]


def test_flags_register_from_the_current_directory_and_tags_as_az(az, tmp_path):
    work = tmp_path / "work"
    model_folder(work)
    done = ok(
        az("model", "create", "-n", "flags-model", "-v", "7", "-p", "model", "-t", "custom_model",
           "--tags", "team=a", "stage=dev", "--description", "from flags", cwd=work)
    )  # fmt: skip
    assert done["tags"] == {"team": "a", "stage": "dev"} and done["description"] == "from flags"
    assert done["path"] != str(work / "model")  # a copy in tiffin's store, not the user's folder


def test_archive_hides_from_list_and_latest_but_exact_version_resolves(az, tmp_path):
    model_folder(tmp_path)
    for version in ("1", "2"):
        ok(az("model", "create", "-n", "archived-model", "-v", version, "-p", "model", "--set", f"tags.v={version}"))
    assert az("model", "archive", "-n", "archived-model", "-v", "2").returncode == 0
    assert ok(az("model", "list", "-n", "archived-model", "--query", "[].version")) == ["1"]
    assert ok(az("model", "show", "-n", "archived-model", "-l", "latest", "--query", "version")) == "1"
    assert ok(az("model", "show", "-n", "archived-model", "-v", "2", "--query", "archived")) is True
    every = ok(az("model", "list", "-n", "archived-model", "--include-archived", "--query", "[].version"))
    assert every == ["2", "1"]
    assert ok(az("model", "list", "-n", "archived-model", "--archived-only", "--query", "[].version")) == ["2"]
    assert az("model", "archive", "-n", "archived-model").returncode == 0  # every version
    refused = az("model", "show", "-n", "archived-model", "-l", "latest")
    assert refused.returncode == 1 and "restore" in refused.stderr, refused.stderr
    assert az("model", "restore", "-n", "archived-model", "-v", "1").returncode == 0
    assert ok(az("model", "show", "-n", "archived-model", "-l", "latest", "--query", "version")) == "1"
    assert az("model", "restore", "-n", "archived-model").returncode == 0
    assert ok(az("model", "list", "-n", "archived-model", "--query", "[].version")) == ["2", "1"]


def test_update_changes_description_and_tags_only(az, tmp_path):
    model_folder(tmp_path)
    ok(az("model", "create", "-n", "updated-model", "-v", "1", "-p", "model"))
    done = ok(
        az("model", "update", "-n", "updated-model", "-v", "1", "--set", "description=better", "--set", "tags.k=v")
    )
    assert done["description"] == "better" and done["tags"] == {"k": "v"}
    done = ok(az("model", "update", "-n", "updated-model", "-v", "1", "--remove", "tags.k", "--remove", "description"))
    assert done["tags"] == {} and not done.get("description")  # az's --remove
    refused = az("model", "update", "-n", "updated-model", "-v", "1", "--remove", "tags.nope")
    assert refused.returncode == 1 and "tags.nope" in refused.stderr, refused.stderr
    refused = az("model", "update", "-n", "updated-model", "-l", "latest", "--set", "type=mlflow_model")
    assert refused.returncode == 1 and "tiffin model create" in refused.stderr and "type" in refused.stderr


def test_missing_asset_names_how_to_list(az):
    done = az("model", "show", "-n", "no-such-model", "-v", "1")
    assert done.returncode == 1 and "tiffin model list" in done.stderr and "Traceback" not in done.stderr
    done = az("data", "show", "-n", "no-such-data")
    assert done.returncode == 2 and "--label latest" in done.stderr and "tiffin data list" in done.stderr


def test_download_writes_the_files_under_the_model_name(az, tmp_path):
    """As az lays them out, DIR/NAME/<the registered folder>/..., and writable (the store's copy is read-only), so
    a second download over the first works and the user can edit what was downloaded."""
    model_folder(tmp_path, "downloaded")
    ok(az("model", "create", "-n", "dl-model", "-v", "1", "-p", "model"))
    for _ in range(2):
        done = az("model", "download", "-n", "dl-model", "-v", "1", "--download-path", "out")
        assert done.returncode == 0 and done.stdout == "", done.stderr
    top = tmp_path / "out" / "dl-model" / "model"
    assert (top / "model.pkl").read_text() == "downloaded" and (top / "sub" / "conf.json").is_file()
    for item in (top, top / "model.pkl", top / "sub", top / "sub" / "conf.json"):
        assert item.stat().st_mode & stat.S_IWUSR, f"{item} is read-only"
    done = az("model", "download", "-n", "dl-model", "-v", "9", "--download-path", "out")
    assert done.returncode == 1 and "tiffin model list" in done.stderr


def test_data_and_environment(az, tmp_path):
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "a.csv").write_text("x\n1\n")
    local = ok(az("data", "create", "-n", "rows", "-p", "rows", "-t", "uri_folder"))
    assert local["version"] == "1" and local["type"] == "uri_folder"
    remote = ok(az("data", "create", "-n", "iris", "-v", "1", "-p", "https://example.org/iris.csv", "-t", "uri_file"))
    assert remote["path"] == "https://example.org/iris.csv"
    env_dir = tmp_path / "envs"
    env_dir.mkdir()
    (env_dir / "conda.yml").write_text("name: e\ndependencies:\n  - python=3.11\n  - pip:\n    - scikit-learn\n")
    (env_dir / "env.yml").write_text(
        "name: sklearn-env\nimage: mcr.microsoft.com/azureml/minimal\nconda_file: conda.yml\n"
    )
    env = ok(az("environment", "create", "-f", "envs/env.yml", "--set", "version=1"))
    assert env["version"] == "1"
    flags = ok(az("environment", "create", "-n", "flag-env", "-c", "conda.yml", "--image", "python:3.11", cwd=env_dir))
    assert flags["version"] == "1" and flags["conda_file"]["name"] == "e"
    assert ok(az("environment", "show", "-n", "sklearn-env", "-v", "1", "--query", "conda_file.name")) == "e"


def test_compute_create_show_update_delete(az, tmp_path):
    done = ok(az("compute", "create", "-n", "cpu-cluster", "--type", "AmlCompute", "--min-instances", "0",
                 "--max-instances", "2", "--size", "Standard_DS3_v2"))  # fmt: skip
    assert done["max_instances"] == 2 and done["type"] == "amlcompute"
    assert "cpu-cluster" in ok(az("compute", "list", "--query", "[].name"))
    done = ok(az("compute", "update", "-n", "cpu-cluster", "--max-instances", "3", "--tags", "team=a"))
    assert done["max_instances"] == 3 and done["tags"] == {"team": "a"}
    assert ok(az("compute", "show", "-n", "cpu-cluster", "--query", "max_instances")) == 3
    assert az("compute", "delete", "-n", "cpu-cluster", "-y").returncode == 0
    (tmp_path / "compute.yml").write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/amlCompute.schema.json\n"
        "name: batch-cluster\nsize: STANDARD_DS3_v2\nmin_instances: 0\nmax_instances: 5\n"
    )
    done = ok(az("compute", "create", "-f", "compute.yml", "--set", "max_instances=4"))
    assert (done["name"], done["type"], done["max_instances"]) == ("batch-cluster", "amlcompute", 4)
    assert ok(az("compute", "update", "-n", "batch-cluster", "--set", "max_instances=6"))["max_instances"] == 6
    ok(az("compute", "update", "-n", "batch-cluster", "--tags", "a=1", "b=2"))
    assert ok(az("compute", "update", "-n", "batch-cluster", "--remove", "tags.a"))["tags"] == {"b": "2"}
    refused = az("compute", "update", "-n", "batch-cluster", "--min-instances", "7")
    assert refused.returncode == 1 and "max_instances" in refused.stderr, refused.stderr
    done = az("compute", "show", "-n", "cpu-cluster")
    assert done.returncode == 1 and "Traceback" not in done.stderr


def test_sdk(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model_folder(tmp_path, "sdk")
    with server.client() as client:
        first = client.models.create_or_update({"name": "sdk-model", "path": "model"})
        assert first["version"] == "1"
        # The same content with another description: Azure updates the description.
        again = client.models.create_or_update(
            {"name": "sdk-model", "version": "1", "path": "model", "description": "d"}
        )
        assert again["description"] == "d"
        assert client.models.get("sdk-model", label="latest")["version"] == "1"
        assert [m["version"] for m in client.models.list("sdk-model")] == ["1"]
        client.models.archive("sdk-model", "1")
        assert client.models.list("sdk-model") == []
        assert [m["version"] for m in client.models.list("sdk-model", list_view_type="All")] == ["1"]
        client.models.restore("sdk-model", version="1")
        folder = client.models.download("sdk-model", "1", tmp_path / "dl")
        assert folder == tmp_path / "dl" / "sdk-model" and any(folder.rglob("model.pkl"))
        compute = client.compute.begin_create_or_update({"name": "sdk-cluster", "max_instances": 2}).result()
        assert compute["max_instances"] == 2
        assert "sdk-cluster" in [c["name"] for c in client.compute.list()]
        client.compute.begin_delete("sdk-cluster").result()
        # A spec built in code, as azure-ai-ml's Model(...): its relative path is the current directory's.
        built = client.models.create_or_update(ModelAsset(name="sdk-built", path="model", type="mlflow_model"))
        assert built["version"] == "1" and built["type"] == "mlflow_model"
        assert client.models.list("no-such-model") == []
