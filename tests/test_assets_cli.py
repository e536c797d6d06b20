"""`tiffin model|environment|data|compute` and the SDK's asset groups, as a user of `az ml` runs them.

The first tests need no server: how a YAML file, --set and flags become the spec that is sent (relative
paths against the file's folder for the file and --set, against the current directory for flags), and the
refusals made before anything is sent. The others run the commands against a real `tiffin serve`.
"""

from __future__ import annotations

import json
import os
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
