"""Asset references in deployments (issue 12): Azure-shaped ids, references parsed in every form, curated
environments, and (against a real store) references pinned at create and inlined where things run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_sdk_cli
import yaml
from test_sdk_cli import PLAIN, Server
from test_serve import FAST_PROBES

from tiffin import resource_ids
from tiffin.api.batch import BatchControl
from tiffin.api.control import ControlPlane
from tiffin.assets.curated import curated_environment, is_curated, known
from tiffin.assets.references import parse_reference
from tiffin.assets.resolve import asset_reference, inline_assets, pin_references
from tiffin.errors import SpecError
from tiffin.store import Store
from tiffin.supervisor.desired import DesiredSpecs
from tiffin.testing import serve_tiffin

WORKSPACE = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/tiffin"
    "/providers/Microsoft.MachineLearningServices/workspaces/tiffin"
)

# --- ids ---------------------------------------------------------------------------------------------


def test_ids_are_shaped_like_azures() -> None:
    assert resource_ids.online_endpoint_id("ep") == f"{WORKSPACE}/onlineEndpoints/ep"
    assert resource_ids.online_deployment_id("ep", "blue") == f"{WORKSPACE}/onlineEndpoints/ep/deployments/blue"
    assert resource_ids.batch_endpoint_id("b") == f"{WORKSPACE}/batchEndpoints/b"
    assert resource_ids.batch_deployment_id("b", "d") == f"{WORKSPACE}/batchEndpoints/b/deployments/d"
    assert resource_ids.job_id("batchjob-1") == f"{WORKSPACE}/jobs/batchjob-1"
    assert resource_ids.asset_id("model", "m", "3") == f"{WORKSPACE}/models/m/versions/3"
    assert resource_ids.asset_id("environment", "e", "1") == f"{WORKSPACE}/environments/e/versions/1"
    assert resource_ids.asset_id("data", "d", "2") == f"{WORKSPACE}/data/d/versions/2"
    assert resource_ids.compute_id("batch-cluster") == f"{WORKSPACE}/computes/batch-cluster"
    with pytest.raises(ValueError, match="kind must be one of"):
        resource_ids.asset_id("code", "c", "1")


def test_an_asset_id_is_read_back_with_or_without_azureml_prefix() -> None:
    model = resource_ids.asset_id("model", "sklearn-model", "7")
    assert resource_ids.asset_of_id(model) == ("model", "sklearn-model", "7")
    assert resource_ids.asset_of_id(f"azureml:{model}") == ("model", "sklearn-model", "7")
    # An id copied from a real Azure workspace names the same asset here.
    azure = (
        "/subscriptions/1234/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"
        "/data/heart/versions/1"
    )
    assert resource_ids.asset_of_id(azure) == ("data", "heart", "1")
    assert resource_ids.asset_of_id("/home/me/model") is None
    assert resource_ids.asset_of_id(resource_ids.online_endpoint_id("ep")) is None


# --- references in deployment fields -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "version"),
    [
        ("azureml:sklearn-model:3", "sklearn-model", "3"),
        ("azureml:sklearn-model@latest", "sklearn-model", None),
        (f"azureml:{WORKSPACE}/models/sklearn-model/versions/3", "sklearn-model", "3"),
        (f"{WORKSPACE}/models/sklearn-model/versions/3", "sklearn-model", "3"),  # `show --query id -o tsv`
        ("azureml://locations/westeurope/workspaces/w/models/sklearn-model/versions/3", "sklearn-model", "3"),
    ],
)
def test_every_form_of_a_model_reference_is_read(text: str, name: str, version: str | None) -> None:
    reference = asset_reference(text, "model", "model")
    assert reference is not None
    assert (reference.name, reference.version) == (name, version)


@pytest.mark.parametrize("value", ["/home/me/model", "./model", "models:/m/1", "https://x/m", {"path": "m"}, None])
def test_paths_uris_and_inline_assets_are_no_references(value: object) -> None:
    assert asset_reference(value, "model", "model") is None


def test_a_reference_to_another_kind_is_refused_naming_the_field() -> None:
    with pytest.raises(SpecError, match=r"field 'model': .*names an environment; give a model here"):
        asset_reference(f"{WORKSPACE}/environments/env/versions/1", "model", "model")


def test_a_code_asset_reference_is_refused_saying_to_give_the_folder() -> None:
    spec = {"name": "blue", "code_configuration": {"code": "azureml:score-code:1", "scoring_script": "score.py"}}
    with pytest.raises(SpecError, match=r"code_configuration.code.*give the folder"):
        pin_references(_NoStore(), spec)


# --- curated environments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "name", "version"),
    [
        ("azureml://registries/azureml/environments/sklearn-1.5/versions/12", "sklearn-1.5", "12"),
        ("azureml://registries/azureml/environments/sklearn-1.5/labels/latest", "sklearn-1.5", None),
        ("azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest", "sklearn-1.0", None),
        ("azureml:AzureML-minimal-py311-inference:4", "minimal-py311-inference", "4"),
    ],
)
def test_curated_environments_resolve_to_their_definition(text: str, name: str, version: str | None) -> None:
    reference = parse_reference(text)
    assert is_curated(reference)
    environment = curated_environment(reference, "environment")
    assert (environment.name, environment.version) == (name, version)
    assert environment.python.startswith("3.")
    assert any(p.startswith("scikit-learn") or p.startswith("azureml-inference") for p in environment.pip)
    conda = environment.conda_file()
    assert conda["dependencies"][0] == f"python={environment.python}"


def test_the_curated_table_covers_the_common_frameworks() -> None:
    names = " ".join(known())
    for framework in ("sklearn", "lightgbm", "mlflow", "pytorch", "tensorflow", "minimal"):
        assert framework in names
    # xgboost has no curated environment of its own on Azure: lightgbm's holds it.
    lightgbm = curated_environment(parse_reference("azureml:AzureML-lightgbm-3.3@latest"))
    assert any(p.startswith("xgboost") for p in lightgbm.pip)


def test_an_unknown_curated_environment_lists_the_known_ones() -> None:
    with pytest.raises(SpecError) as caught:
        curated_environment(parse_reference("azureml://registries/azureml/environments/nope/labels/latest"), "env")
    assert "'nope'" in caught.value.message
    assert "sklearn-1.5" in caught.value.message and "mlflow-py312-inference" in caught.value.message


def test_a_curated_environment_is_pinned_as_its_registry_uri_without_the_store() -> None:
    spec = {"name": "blue", "environment": "azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest"}
    pinned = pin_references(_NoStore(), spec)
    assert pinned["environment"] == "azureml://registries/azureml/environments/sklearn-1.0/labels/latest"
    assert spec["environment"].startswith("azureml:AzureML-")  # the input is left as it was


class _NoStore:
    """A store that is never asked: references these tests pin need none."""

    def get_asset(self, kind: str, name: str, version: str) -> object:
        raise AssertionError("not asked")

    def latest_asset(self, kind: str, name: str) -> object:
        raise AssertionError("not asked")


# --- ids on every show output of the control plane ---------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(home=tmp_path) as opened:
        yield opened


def test_show_outputs_carry_azure_shaped_ids(store: Store, tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "score.py").write_text("def init():\n    pass\n\ndef run(mini_batch):\n    return []\n")
    (tmp_path / "in.csv").write_text("a\n1\n")
    code = {"code": str(tmp_path / "code"), "scoring_script": "score.py"}
    online = ControlPlane(store, public_url="http://127.0.0.1:7700", home=tmp_path)
    assert online.create_endpoint({"name": "ep"})["id"] == resource_ids.online_endpoint_id("ep")
    deployment, _ = online.put_deployment(
        "ep", "blue", {"model": {"path": str(tmp_path / "model")}, "code_configuration": code}
    )
    assert deployment["id"] == resource_ids.online_deployment_id("ep", "blue")
    assert online.get_deployment("ep", "blue")["id"] == deployment["id"]
    assert [e["id"] for e in online.list_endpoints()] == [resource_ids.online_endpoint_id("ep")]
    # A show output fed back (as scripts and SDK users do) keeps its id out of the stored spec.
    online.put_deployment("ep", "blue", deployment)
    assert "id" not in store.get_deployment("ep", "blue").spec

    batch = BatchControl(store, public_url="http://127.0.0.1:7700", home=tmp_path)
    assert batch.create_endpoint({"name": "be"})["id"] == resource_ids.batch_endpoint_id("be")
    shown, _ = batch.put_deployment("be", "d", {"model": {"path": str(tmp_path / "model")}, "code_configuration": code})
    assert shown["id"] == resource_ids.batch_deployment_id("be", "d")
    assert batch.list_deployments("be")[0]["id"] == shown["id"]
    job = batch.invoke("be", {"input": str(tmp_path / "in.csv")}, admin=True)
    assert job["id"] == resource_ids.job_id(job["name"])
    assert batch.get_job(job["name"])["id"] == job["id"]


# --- relative paths: a YAML's against its folder, --set values without a file against the current directory ---


cli_server = test_sdk_cli.server
"""A fixture: test_sdk_cli's server (control plane and gateway on a free loopback port, no supervisor)."""


def _cli(target: Server, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tiffin.cli", *args],
        env=target.env,
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_relative_model_paths_resolve_where_the_user_wrote_them(cli_server: Server, tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "conf" / "model").mkdir(parents=True)
    (work / "models").mkdir()
    code = PLAIN / "code"
    (work / "conf" / "deployment.yml").write_text(
        f"name: blue\nendpoint_name: ep\nmodel: model\n"
        f"code_configuration:\n  code: {code}\n  scoring_script: score.py\n"
    )
    assert _cli(cli_server, work, "online-endpoint", "create", "-n", "ep").returncode == 0
    # A model given as a bare path in the YAML: against the file's folder, as Azure's CLI reads it.
    done = _cli(cli_server, work, "online-deployment", "create", "-f", "conf/deployment.yml", "--no-wait")
    assert done.returncode == 0, done.stderr
    assert cli_server.store.get_deployment("ep", "blue").spec["model"] == str(work / "conf" / "model")
    # --set with a file: against the file's folder too (Azure applies overrides to the file before loading it).
    done = _cli(
        cli_server,
        work,
        "online-deployment",
        "update",
        "-f",
        "conf/deployment.yml",
        "--set",
        "model=../models",
        "--no-wait",
    )
    assert done.returncode == 0, done.stderr
    assert cli_server.store.get_deployment("ep", "blue").spec["model"] == str(work / "models")
    # --set without a file: against the current directory, never tiffin's home or the server's directory.
    done = _cli(
        cli_server,
        work / "conf",
        "online-deployment",
        "update",
        "-n",
        "blue",
        "-e",
        "ep",
        "--set",
        "model=model",
        "--no-wait",
    )
    assert done.returncode == 0, done.stderr
    assert cli_server.store.get_deployment("ep", "blue").spec["model"] == str(work / "conf" / "model")
    done = _cli(
        cli_server,
        work,
        "online-deployment",
        "update",
        "-n",
        "blue",
        "-e",
        "ep",
        "--set",
        "code_configuration.code=conf",
        "--no-wait",
    )
    assert done.returncode == 0, done.stderr
    assert cli_server.store.get_deployment("ep", "blue").spec["code_configuration"]["code"] == str(work / "conf")


def test_relative_batch_paths_given_with_set_resolve_against_the_current_directory(
    cli_server: Server, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "score.py").write_text("def init():\n    pass\n\ndef run(mini_batch):\n    return []\n")
    assert _cli(cli_server, work, "batch-endpoint", "create", "-n", "be").returncode == 0
    (work / "deployment.yml").write_text(
        f"name: d\nendpoint_name: be\nmodel:\n  path: models\n"
        f"code_configuration:\n  code: {scripts}\n  scoring_script: score.py\n"
    )
    done = _cli(cli_server, work, "batch-deployment", "create", "-f", "deployment.yml")
    assert done.returncode == 0, done.stderr
    done = _cli(cli_server, tmp_path, "batch-deployment", "update", "-n", "d", "-e", "be", "--set", "model=work/models")
    assert done.returncode == 0, done.stderr
    assert cli_server.store.get_deployment("be", "d").spec["model"] == str(work / "models")


# --- references pinned at create/update, against a real store ----------------------------------------


def _registered_model(store: Store, tmp_path: Path, name: str, version: str) -> Path:
    folder = tmp_path / f"{name}-{version}"
    folder.mkdir()
    (folder / "model.pkl").write_text(version)
    store.create_asset("model", name, {"name": name, "path": str(folder), "type": "custom_model"}, version=version)
    return folder


def _code(tmp_path: Path) -> dict[str, str]:
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    (code / "score.py").write_text("def init():\n    pass\n\ndef run(mini_batch):\n    return []\n")
    return {"code": str(code), "scoring_script": "score.py"}


@pytest.mark.parametrize(
    ("model", "pinned"),
    [
        ("azureml:sk:1", "azureml:sk:1"),
        ("azureml:sk@latest", "azureml:sk:2"),
        (f"azureml:{WORKSPACE}/models/sk/versions/1", "azureml:sk:1"),
        (f"{WORKSPACE}/models/sk/versions/2", "azureml:sk:2"),
    ],
)
def test_online_references_are_pinned_at_create(store: Store, tmp_path: Path, model: str, pinned: str) -> None:
    _registered_model(store, tmp_path, "sk", "1")
    _registered_model(store, tmp_path, "sk", "2")
    online = ControlPlane(store, public_url="http://127.0.0.1:7700", home=tmp_path)
    online.create_endpoint({"name": "ep"})
    shown, _ = online.put_deployment("ep", "blue", {"model": model, "code_configuration": _code(tmp_path)})
    assert shown["model"] == pinned
    assert store.get_deployment("ep", "blue").spec["model"] == pinned
    # A later version does not move a running deployment.
    _registered_model(store, tmp_path, "sk", "3")
    assert store.get_deployment("ep", "blue").spec["model"] == pinned


def test_a_missing_asset_is_refused_at_create_naming_it_and_how_to_list(store: Store, tmp_path: Path) -> None:
    _registered_model(store, tmp_path, "sk", "1")
    online = ControlPlane(store, public_url="http://127.0.0.1:7700", home=tmp_path)
    online.create_endpoint({"name": "ep"})
    with pytest.raises(SpecError) as caught:
        online.put_deployment("ep", "blue", {"model": "azureml:sk:9", "code_configuration": _code(tmp_path)})
    assert caught.value.status_code == 422
    assert "field 'model'" in caught.value.message and "sk" in caught.value.message
    assert "`tiffin model list --name sk`" in caught.value.message
    with pytest.raises(SpecError, match=r"'nope' is not registered.*tiffin model list"):
        online.put_deployment("ep", "blue", {"model": "azureml:nope@latest", "code_configuration": _code(tmp_path)})
    assert store.list_deployments("ep") == []


def test_the_resolved_model_is_what_create_checks(store: Store, tmp_path: Path) -> None:
    folder = _registered_model(store, tmp_path, "sk", "1")
    (folder / "model.pkl").unlink()
    folder.rmdir()  # the stored files are gone: nothing could run it
    online = ControlPlane(store, public_url="http://127.0.0.1:7700", home=tmp_path)
    online.create_endpoint({"name": "ep"})
    with pytest.raises(SpecError, match=r"model.path.*does not exist"):
        online.put_deployment("ep", "blue", {"model": "azureml:sk:1", "code_configuration": _code(tmp_path)})


def test_environments_registered_and_curated_are_pinned(store: Store, tmp_path: Path) -> None:
    _registered_model(store, tmp_path, "sk", "1")
    store.create_asset("environment", "env", {"name": "env", "image": "python:3.11"}, version="4")
    online = ControlPlane(store, public_url="http://127.0.0.1:7700", home=tmp_path)
    online.create_endpoint({"name": "ep"})
    body = {"model": "azureml:sk:1", "environment": "azureml:env@latest", "code_configuration": _code(tmp_path)}
    assert online.put_deployment("ep", "blue", body)[0]["environment"] == "azureml:env:4"
    body["environment"] = "azureml://registries/azureml/environments/sklearn-1.5/labels/latest"
    shown, _ = online.put_deployment("ep", "blue", body)
    assert shown["environment"] == "azureml://registries/azureml/environments/sklearn-1.5/labels/latest"
    body["environment"] = "azureml:AzureML-nope@latest"
    with pytest.raises(SpecError, match=r"sklearn-1\.5"):
        online.put_deployment("ep", "blue", body)


def test_batch_references_are_pinned_at_create_and_update(store: Store, tmp_path: Path) -> None:
    _registered_model(store, tmp_path, "sk", "1")
    batch = BatchControl(store, public_url="http://127.0.0.1:7700", home=tmp_path)
    batch.create_endpoint({"name": "be"})
    body = {"model": "azureml:sk@latest", "code_configuration": _code(tmp_path)}
    assert batch.put_deployment("be", "d", body)[0]["model"] == "azureml:sk:1"
    _registered_model(store, tmp_path, "sk", "2")
    assert batch.put_deployment("be", "d", body)[0]["model"] == "azureml:sk:2"
    with pytest.raises(SpecError, match=r"`tiffin model list --name sk`"):
        batch.put_deployment("be", "d", {**body, "model": "azureml:sk:7"})
    assert store.get_deployment("be", "d").spec["model"] == "azureml:sk:2"


def test_inline_assets_gives_runners_the_stored_files(store: Store, tmp_path: Path) -> None:
    folder = _registered_model(store, tmp_path, "sk", "1")
    spec = {"name": "d", "model": "azureml:sk:1", "environment": "azureml:AzureML-sklearn-1.5@latest"}
    inlined = inline_assets(store, spec)
    assert inlined["model"] == {"name": "sk", "version": "1", "path": str(folder), "type": "custom_model"}
    assert inlined["environment"]["conda_file"]["dependencies"][0] == "python=3.10"
    assert spec["model"] == "azureml:sk:1"


# --- computes: a batch deployment's compute, and its cap on instances --------------------------------


def test_a_batch_deployment_on_a_registered_compute_is_capped_by_it(store: Store, tmp_path: Path) -> None:
    batch = BatchControl(store, public_url="http://127.0.0.1:7700", home=tmp_path)
    batch.create_endpoint({"name": "be"})
    model = tmp_path / "model"
    model.mkdir()
    body: dict[str, object] = {"model": {"path": str(model)}, "code_configuration": _code(tmp_path)}
    # No compute registered: the compute is a name tiffin does not use, as before (Azure's samples name one).
    batch.put_deployment("be", "d", {**body, "compute": "azureml:batch-cluster", "resources": {"instance_count": 3}})
    store.put_compute(
        "batch-cluster", {"name": "batch-cluster", "type": "amlcompute", "min_instances": 0, "max_instances": 2}
    )
    with pytest.raises(SpecError) as caught:
        batch.put_deployment(
            "be", "d", {**body, "compute": "azureml:batch-cluster", "resources": {"instance_count": 3}}
        )
    assert "instance_count" in caught.value.message and "batch-cluster" in caught.value.message
    assert "max_instances (2)" in caught.value.message
    assert "tiffin compute update --name batch-cluster --max-instances 3" in caught.value.message
    shown, _ = batch.put_deployment("be", "d", {**body, "compute": "batch-cluster", "resources": {"instance_count": 2}})
    assert shown["compute"] == "batch-cluster"
    # Once computes are registered, a compute that is not one of them is refused, as Azure refuses it.
    with pytest.raises(SpecError) as caught:
        batch.put_deployment("be", "d", {**body, "compute": "azureml:cpu-cluster"})
    assert "'cpu-cluster' is not registered" in caught.value.message
    assert "batch-cluster" in caught.value.message
    assert "tiffin compute create --name cpu-cluster --type amlcompute" in caught.value.message


# --- where things run: the replica's spec file holds the asset, not the reference ---------------------


def test_a_replicas_spec_file_holds_the_registered_models_files(store: Store, tmp_path: Path) -> None:
    folder = _registered_model(store, tmp_path, "sk", "1")
    online = ControlPlane(store, public_url="http://127.0.0.1:7700", home=tmp_path)
    online.create_endpoint({"name": "ep"})
    online.put_deployment("ep", "blue", {"model": "azureml:sk@latest", "code_configuration": _code(tmp_path)})
    record = store.get_deployment("ep", "blue")
    specs = DesiredSpecs(tmp_path / "deployment")
    desired = specs.desired(record, "ep/blue", 4, lambda spec: inline_assets(store, spec))
    path, _ = specs.spec_file(desired.template)
    written = yaml.safe_load(path.read_text())
    assert written["model"] == {"name": "sk", "version": "1", "path": str(folder), "type": "custom_model"}
    # An asset gone by the time replicas start fails the deployment with a message naming it.
    store.delete_deployment("ep", "blue")
    store.delete_asset("model", "sk", "1")
    store.create_endpoint("online", "ep2", {}, "key")
    stale = store.put_deployment("ep2", "blue", "online", {**record.spec})
    with pytest.raises(SpecError, match=r"azureml:sk:1 cannot be resolved.*tiffin model list"):
        DesiredSpecs(tmp_path / "d2").desired(stale, "ep2/blue", 4, lambda spec: inline_assets(store, spec))


# --- end to end: tiffin serve, a registered model, deployments pinned to its versions ------------------


@pytest.mark.slow
def test_a_deployment_serves_the_registered_version_it_was_pinned_to(tmp_path: Path) -> None:
    source = tmp_path / "v1" / "model"
    source.mkdir(parents=True)
    (source / "weights.json").write_text('{"scale": 10}')
    with serve_tiffin() as server:

        def tiffin(*args: str) -> Any:
            done = subprocess.run(
                [sys.executable, "-m", "tiffin.cli", *args, "-o", "json"],
                env=server.env,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=300,
            )
            assert done.returncode == 0, f"tiffin {' '.join(args)}\n{done.stderr}"
            return json.loads(done.stdout) if done.stdout.strip() else None

        tiffin("model", "create", "--name", "plain", "--version", "1", "--path", str(source))
        shutil.rmtree(source)  # registered means copied: the source may go
        tiffin("online-endpoint", "create", "--name", "ep", "--auth-mode", "key")
        fast = [f"--set={item}" for item in FAST_PROBES]
        shown = tiffin(
            "online-deployment", "create", "-f", str(PLAIN), "--name", "blue", "--endpoint-name", "ep",
            "--set", "model=azureml:plain@latest", *fast, "--all-traffic",
        )  # fmt: skip
        assert shown["model"] == "azureml:plain:1"
        key = tiffin("online-endpoint", "get-credentials", "--name", "ep")["primaryKey"]

        def score() -> Any:
            response = httpx.post(
                f"{server.url}/endpoints/ep/score",
                json={"data": [[1, 2]]},
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            return response.json()["sums"]

        assert score() == [30]
        newer = tmp_path / "v2" / "model"
        newer.mkdir(parents=True)
        (newer / "weights.json").write_text('{"scale": 100}')
        tiffin("model", "create", "--name", "plain", "--path", str(newer))  # version 2, the new latest
        assert score() == [30]  # frozen: blue still runs version 1
        shown = tiffin(
            "online-deployment",
            "update",
            "--name",
            "blue",
            "--endpoint-name",
            "ep",
            "--set",
            "model=azureml:plain@latest",
        )
        assert shown["model"] == "azureml:plain:2"
        assert score() == [300]


def test_a_batch_job_is_frozen_with_the_assets_its_deployment_pinned(store: Store, tmp_path: Path) -> None:
    folder = _registered_model(store, tmp_path, "sk", "1")
    (tmp_path / "in.csv").write_text("a\n1\n")
    batch = BatchControl(store, public_url="http://127.0.0.1:7700", home=tmp_path)
    batch.create_endpoint({"name": "be"})
    batch.put_deployment("be", "d", {"model": "azureml:sk@latest", "code_configuration": _code(tmp_path)})
    job = batch.invoke("be", {"input": str(tmp_path / "in.csv"), "settings": {"mini_batch_size": 2}}, admin=True)
    spec = store.get_job(job["name"]).spec
    assert spec is not None
    assert spec["model"] == {"name": "sk", "version": "1", "path": str(folder), "type": "custom_model"}
    assert store.get_deployment("be", "d").spec["model"] == "azureml:sk:1"  # the deployment keeps the reference
