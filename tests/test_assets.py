"""Registered assets (issue 12): Azure's asset YAML schemas, the store's version rules, computes."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from tiffin.assets.blobs import LINK_MIN_BYTES, blob_path, blobs_dir, release, store_tree
from tiffin.errors import ConflictError, NotFoundError, SpecError
from tiffin.specs import Compute, DataAsset, EnvironmentAsset, ModelAsset, load_spec, parse_spec
from tiffin.store import Store

# --- specs ---------------------------------------------------------------------------------------

SCHEMA = "https://azuremlschemas.azureedge.net/latest/{}.schema.json"


def _write(tmp_path: Path, text: str, name: str = "asset.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_model_yaml_as_azure_writes_it(tmp_path: Path) -> None:
    # azureml-examples' cli/assets/model/local-mlflow.yml, with a numeric version.
    path = _write(
        tmp_path,
        f"$schema: {SCHEMA.format('model')}\nname: local-mlflow-example\nversion: 1\npath: mlflow-model\n"
        "type: mlflow_model\ndescription: Model created from local MLflow model directory.\n",
    )
    loaded = load_spec(path)
    assert isinstance(loaded.spec, ModelAsset)
    assert loaded.spec.version == "1"
    assert loaded.spec.path == str(tmp_path / "mlflow-model")
    assert loaded.spec.type == "mlflow_model"


def test_model_show_output_loads_back_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    shown = {
        "name": "m",
        "version": "2",
        "path": "/x",
        "id": "/subscriptions/0/.../models/m/versions/2",
        "creation_context": {"created_at": "2026-01-01"},
        "archived": True,
        "job_name": "j",
    }
    loaded = parse_spec(shown, ModelAsset)
    assert set(loaded.ignored) >= {"id", "creation_context", "archived"}
    with pytest.raises(SpecError, match="did you mean 'path'"):
        parse_spec({"name": "m", "pth": "/x", "path": "/y"}, ModelAsset)


def test_asset_name_and_version_rules() -> None:
    with pytest.raises(SpecError, match="letters, digits"):
        parse_spec({"name": "a b", "path": "/x"}, ModelAsset)
    with pytest.raises(SpecError, match="version"):
        parse_spec({"name": "m", "version": "1:2", "path": "/x"}, ModelAsset)
    with pytest.raises(SpecError, match="name"):
        parse_spec({"path": "/x"}, ModelAsset)


def test_environment_yaml(tmp_path: Path) -> None:
    (tmp_path / "conda.yml").write_text("name: e\ndependencies: [python=3.11]\n")
    path = _write(
        tmp_path,
        f"$schema: {SCHEMA.format('environment')}\nname: docker-image-plus-conda-example\n"
        "image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04\nconda_file: conda.yml\n",
    )
    loaded = load_spec(path)
    assert isinstance(loaded.spec, EnvironmentAsset)
    assert loaded.spec.conda_file == str(tmp_path / "conda.yml")
    assert loaded.ignored == ["image"]


def test_environment_yaml_that_is_a_conda_file_is_refused() -> None:
    with pytest.raises(SpecError, match=r"conda_file: conda\.yml"):
        parse_spec({"name": "e", "dependencies": ["python=3.11"]}, EnvironmentAsset)


def test_data_yaml(tmp_path: Path) -> None:
    path = _write(
        tmp_path, f"$schema: {SCHEMA.format('data')}\nname: heart\ntype: uri_folder\npath: data\n", name="d.yml"
    )
    loaded = load_spec(path)
    assert isinstance(loaded.spec, DataAsset)
    assert loaded.spec.path == str(tmp_path / "data")
    remote = parse_spec({"name": "r", "type": "uri_file", "path": "https://x.test/a.csv"}, DataAsset, base_dir=tmp_path)
    assert remote.spec.path == "https://x.test/a.csv"
    with pytest.raises(SpecError, match="uri_file, uri_folder, mltable"):
        parse_spec({"name": "r", "type": "table", "path": "x"}, DataAsset)


def test_compute_yaml(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"$schema: {SCHEMA.format('amlCompute')}\nname: cpu-cluster\ntype: amlcompute\nsize: STANDARD_DS3_v2\n"
        "min_instances: 0\nmax_instances: 2\nidle_time_before_scale_down: 120\n",
    )
    loaded = load_spec(path)
    assert isinstance(loaded.spec, Compute)
    assert (loaded.spec.min_instances, loaded.spec.max_instances) == (0, 2)
    assert "size" in loaded.ignored
    k8s = load_spec(_write(tmp_path, f"$schema: {SCHEMA.format('kubernetesCompute')}\nname: k\n", name="k.yml"))
    assert k8s.spec.type == "kubernetes"
    with pytest.raises(SpecError, match="must not be above max_instances"):
        parse_spec({"name": "c", "min_instances": 3, "max_instances": 2}, Compute)
    with pytest.raises(SpecError, match="amlcompute computes"):
        parse_spec({"name": "c", "type": "computeinstance", "max_instances": 2}, Compute)


def test_asset_file_given_where_a_deployment_is_expected(tmp_path: Path) -> None:
    from tiffin.specs import OnlineDeployment

    path = _write(tmp_path, f"$schema: {SCHEMA.format('model')}\nname: m\npath: x\n")
    with pytest.raises(SpecError, match="describes a model"):
        load_spec(path, OnlineDeployment)


# --- the store: versions as Azure keeps them, on SQLite and PostgreSQL ---------------------------------


def _model(path: str = "/store/a", **extra: Any) -> dict[str, Any]:
    return {"path": path, "type": "custom_model", **extra}


def test_versions_are_numbered_when_left_out(store: Store) -> None:
    assert store.create_asset("model", "m", _model()).version == "1"
    assert store.create_asset("model", "m", _model("/b")).version == "2"
    store.create_asset("model", "m", _model("/c"), version="10")
    store.create_asset("model", "m", _model("/d"), version="beta")
    assert store.create_asset("model", "m", _model("/e")).version == "11"
    # Another kind, another name: their own numbers.
    assert store.create_asset("data", "m", {"path": "/x", "type": "uri_folder"}).version == "1"
    assert store.create_asset("model", "other", _model()).version == "1"


def test_a_version_is_immutable_and_the_same_content_is_a_no_op(store: Store) -> None:
    first = store.create_asset("model", "m", _model(description="one"), version="1", digest="sha256:aa")
    again = store.create_asset(
        "model", "m", _model(description="two", tags={"a": "b"}), version="1", digest="sha256:aa"
    )
    assert again == first  # description and tags may differ: still the same version, unchanged
    with pytest.raises(ConflictError) as caught:
        store.create_asset("model", "m", _model(), version="1", digest="sha256:bb")
    message = str(caught.value)
    assert "version 1 exists already" in message and "--version N" in message and "leave the version out" in message
    with pytest.raises(ConflictError):
        store.create_asset("model", "m", _model(type="mlflow_model"), version="1", digest="sha256:aa")


def test_latest_is_the_highest_version_not_archived(store: Store) -> None:
    for version in ("1", "2", "10", "rc"):
        store.create_asset("model", "m", _model(f"/{version}"), version=version)
    assert store.latest_asset("model", "m").version == "10"  # whole numbers compare as numbers
    store.update_asset("model", "m", "10", archived=True)
    assert store.latest_asset("model", "m").version == "2"
    # Archived: hidden from list and @latest, still resolvable by exact version.
    assert [r.version for r in store.list_assets("model", "m")] == ["2", "1", "rc"]
    assert [r.version for r in store.list_assets("model", "m", include_archived=True)] == ["10", "2", "1", "rc"]
    assert store.get_asset("model", "m", "10").archived is True
    for version in ("1", "2", "rc"):
        store.update_asset("model", "m", version, archived=True)
    with pytest.raises(NotFoundError) as caught:
        store.latest_asset("model", "m")
    assert "every version of model 'm' is archived" in str(caught.value)
    assert "tiffin model restore --name m --version 10" in str(caught.value)
    assert store.list_assets("model") == []
    store.update_asset("model", "m", "2", archived=False)
    assert store.latest_asset("model", "m").version == "2"


def test_list_without_a_name_gives_the_latest_of_each(store: Store) -> None:
    store.create_asset("model", "b", _model())
    store.create_asset("model", "b", _model("/2"))
    store.create_asset("model", "a", _model())
    store.create_asset("environment", "e", {"image": "python:3.11"})
    listed = store.list_assets("model")
    assert [(r.name, r.version) for r in listed] == [("a", "1"), ("b", "2")]


def test_not_found_messages_name_the_list_command(store: Store) -> None:
    with pytest.raises(NotFoundError, match="`tiffin model list`"):
        store.get_asset("model", "nope", "1")
    store.create_asset("model", "m", _model())
    with pytest.raises(NotFoundError, match="has no version 7; list its versions with `tiffin model list --name m`"):
        store.get_asset("model", "m", "7")
    with pytest.raises(NotFoundError, match="`tiffin data list`"):
        store.latest_asset("data", "nope")


def test_update_changes_only_what_may_change(store: Store) -> None:
    store.create_asset("model", "m", _model(description="old"))
    updated = store.update_asset("model", "m", "1", description="new", tags={"k": "v"}, stage="Production")
    assert (updated.spec["description"], updated.spec["tags"], updated.spec["stage"]) == (
        "new",
        {"k": "v"},
        "Production",
    )
    assert updated.spec["path"] == "/store/a"


def test_delete_in_use_is_refused_naming_the_deployment(store: Store) -> None:
    store.create_asset("model", "m", _model())
    store.create_asset("model", "m", _model("/2"))
    store.create_endpoint("online", "ep", {})
    store.put_deployment("ep", "blue", "online", {"model": "azureml:m:1"})
    with pytest.raises(ConflictError) as caught:
        store.delete_asset("model", "m", "1")
    assert "in use by deployment ep/blue" in str(caught.value)
    assert "tiffin model archive --name m --version 1" in str(caught.value)
    store.delete_asset("model", "m", "2")  # not in use
    with pytest.raises(NotFoundError):
        store.get_asset("model", "m", "2")
    store.put_deployment("ep", "blue", "online", {"model": "azureml:m2:1"})
    store.delete_asset("model", "m", "1")


def test_auto_numbering_under_concurrent_writers(store: Store) -> None:
    results: list[str] = []
    start = threading.Barrier(4)

    def register(i: int) -> None:
        start.wait()
        results.append(store.create_asset("model", "race", _model(f"/{i}")).version)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results, key=int) == ["1", "2", "3", "4"]


def test_computes(store: Store) -> None:
    created = store.put_compute("cpu", {"type": "amlcompute", "min_instances": 0, "max_instances": 2})
    assert created.spec["name"] == "cpu"
    assert store.update_compute("cpu", max_instances=4).spec["max_instances"] == 4
    assert [c.name for c in store.list_computes()] == ["cpu"]
    store.create_endpoint("batch", "bep", {})
    store.put_deployment("bep", "d1", "batch", {"compute": "azureml:cpu"})
    with pytest.raises(ConflictError, match="in use by batch deployment bep/d1"):
        store.delete_compute("cpu")
    store.put_deployment("bep", "d1", "batch", {"compute": "other"})
    store.delete_compute("cpu")
    with pytest.raises(NotFoundError, match="tiffin compute list"):
        store.get_compute("cpu")


# --- the content store ------------------------------------------------------------------------------------


def _model_folder(root: Path, name: str = "model", content: bytes = b"weights") -> Path:
    folder = root / name
    (folder / "sub").mkdir(parents=True)
    (folder / "model.pkl").write_bytes(content)
    (folder / "sub" / "conf.json").write_text("{}")
    (folder / "empty").mkdir()
    return folder


def test_content_is_stored_once_and_outlives_its_source(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = _model_folder(tmp_path / "a")
    second = _model_folder(tmp_path / "b")
    digest, stored = store_tree(home, first)
    again, stored_again = store_tree(home, second)
    assert (again, stored_again) == (digest, stored)  # same name, same content: one copy
    assert stored == blob_path(home, digest) / "model"
    assert len([p for p in blobs_dir(home).iterdir() if not p.name.startswith(".")]) == 1
    assert not any((blobs_dir(home) / ".incoming").iterdir())
    other, _ = store_tree(home, _model_folder(tmp_path / "c", content=b"other weights"))
    assert other != digest
    # Deleting the source leaves the stored files, with the same layout (the empty folder too).
    shutil.rmtree(first)
    shutil.rmtree(second)
    assert (stored / "model.pkl").read_bytes() == b"weights"
    assert (stored / "sub" / "conf.json").read_text() == "{}"
    assert (stored / "empty").is_dir()


def test_large_files_are_read_only_links(tmp_path: Path) -> None:
    home = tmp_path / "home"
    source = _model_folder(tmp_path)
    (source / "weights.bin").write_bytes(b"w" * LINK_MIN_BYTES)
    _, stored = store_tree(home, source)
    stat_source, stat_stored = (source / "weights.bin").stat(), (stored / "weights.bin").stat()
    assert stat_stored.st_ino == stat_source.st_ino  # a hard link: no file data written
    assert stat_stored.st_mode & 0o222 == 0 and stat_source.st_mode & 0o222 == 0
    assert (stored / "sub").stat().st_mode & 0o222 == 0


def test_small_files_are_copied_so_editing_the_source_in_place_changes_nothing(tmp_path: Path) -> None:
    # Azure's samples rewrite a model file in place between registrations (echo ... > model/weights.json); as
    # root, a read-only hard link would not stop that, and every registered version would change with it.
    home = tmp_path / "home"
    source = _model_folder(tmp_path)
    _, first = store_tree(home, source)
    assert (first / "model.pkl").stat().st_ino != (source / "model.pkl").stat().st_ino
    assert (source / "model.pkl").stat().st_mode & 0o200  # the source keeps its mode
    (source / "model.pkl").write_bytes(b"retrained")
    _, second = store_tree(home, source)
    assert (first / "model.pkl").read_bytes() == b"weights"
    assert (second / "model.pkl").read_bytes() == b"retrained"
    assert (first / "model.pkl").stat().st_mode & 0o222 == 0
    single_digest, single = store_tree(home, source / "sub" / "conf.json")
    assert single.name == "conf.json" and single.read_text() == "{}"
    assert single_digest != store_tree(home, source)[0]


def test_a_linked_file_rewritten_in_place_is_found_and_refused_where_it_would_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root, read-only does not stop an in-place rewrite of a large linked file (``torch.save`` onto the same
    name): what runs the version must notice, not serve changed weights as the registered ones."""
    import os

    from tiffin.assets.blobs import changed_links
    from tiffin.assets.resolve import inline_assets

    monkeypatch.setattr("tiffin.assets.blobs.LINK_MIN_BYTES", 4)  # link model.pkl ("weights") too
    home = tmp_path / "home"
    source = _model_folder(tmp_path)
    digest, stored = store_tree(home, source)
    assert (stored / "model.pkl").stat().st_ino == (source / "model.pkl").stat().st_ino
    assert changed_links(stored) == []
    with Store.open(f"sqlite:///{tmp_path / 'tiffin.db'}", home=home) as store:
        store.create_asset("model", "m", {"name": "m", "path": str(stored), "type": "custom_model"}, digest=digest)
        spec = {"name": "blue", "model": "azureml:m:1"}
        assert inline_assets(store, spec)["model"]["path"] == str(stored)
        os.chmod(source / "model.pkl", 0o644)  # as root may write regardless; others must chmod first
        (source / "model.pkl").write_bytes(b"retrained")  # in place: the same inode
        assert changed_links(stored) == ["model.pkl"]
        with pytest.raises(
            SpecError, match=r"model m:1 is no longer what was registered: model.pkl .*tiffin model create"
        ):
            inline_assets(store, spec)


def test_the_content_store_is_where_tiffin_assets_dir_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIFFIN_ASSETS_DIR", str(tmp_path / "shared"))
    _, stored = store_tree(tmp_path / "home", _model_folder(tmp_path))
    assert stored.is_relative_to(tmp_path / "shared" / "blobs")
    assert not (tmp_path / "home" / "assets").exists()


def test_a_link_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    source = _model_folder(tmp_path)
    (source / "shadow").symlink_to(secret)
    with pytest.raises(SpecError, match="outside the folder being registered"):
        store_tree(home, source)
    (source / "shadow").unlink()
    (source / "dangling").symlink_to(tmp_path / "nothing")
    with pytest.raises(SpecError, match="symbolic link to nothing"):
        store_tree(home, source)
    (source / "dangling").unlink()
    (source / "loop").symlink_to(source, target_is_directory=True)
    with pytest.raises(SpecError, match="symbolic link to a folder"):
        store_tree(home, source)
    (source / "loop").unlink()
    # A link to a file inside the folder is stored as that file's content.
    (source / "alias.pkl").symlink_to(source / "model.pkl")
    _, stored = store_tree(home, source)
    assert not (stored / "alias.pkl").is_symlink()
    assert (stored / "alias.pkl").read_bytes() == b"weights"
    assert not list(blobs_dir(home).glob("*/model/shadow"))


def test_a_missing_source_or_too_many_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        store_tree(tmp_path / "home", tmp_path / "nope")
    with pytest.raises(SpecError, match="more than 3 files and folders"):
        store_tree(tmp_path / "home", _model_folder(tmp_path), max_entries=3)
    assert not list(blobs_dir(tmp_path / "home").glob("*/model"))


def test_release_removes_the_content(tmp_path: Path) -> None:
    home = tmp_path / "home"
    digest, stored = store_tree(home, _model_folder(tmp_path))
    release(home, digest)
    assert not stored.exists()
