"""Registered assets (issue 12): Azure's asset YAML schemas, the store's version rules, computes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tiffin.errors import SpecError
from tiffin.specs import Compute, DataAsset, EnvironmentAsset, ModelAsset, load_spec, parse_spec

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
