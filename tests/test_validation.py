"""Mistakes caught when a spec is created or validated, not when its replicas start (issue 11, item 6).

An unknown field is refused with the closest field name ("did you mean"), as ``az ml`` refuses unknown
fields, while fields of Azure's schema that tiffin does not use stay accepted and reported as ignored. A
model path or an MLflow ``models:/``/``runs:/`` URI that does not resolve is refused at create with 422.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from tiffin.api import create_api
from tiffin.errors import SpecError
from tiffin.specs import BatchDeployment, BatchEndpoint, OnlineDeployment, OnlineEndpoint, load_spec, parse_spec
from tiffin.store import Store

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

HERE = Path(__file__).parent
TOKEN = "admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCHEMA = "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- unknown fields ------------------------------------------------------------------------------


def test_a_misspelt_field_is_refused_with_the_field_it_most_likely_means(tmp_path: Path) -> None:
    """The issue's `modle:`: it created a deployment with no model, which failed 17 s later."""
    (tmp_path / "model").mkdir()
    file = write(tmp_path, "d.yml", SCHEMA + "name: blue\nendpoint_name: ep\nmodle:\n  path: model\n")
    with pytest.raises(SpecError) as info:
        load_spec(file)
    assert info.value.field == "modle"
    assert "did you mean 'model'?" in str(info.value)
    assert str(info.value).startswith(f"{file}: field 'modle': ")


def test_tiffin_validate_checks_a_deployments_model_as_create_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tiffin.cli.main import main

    body = "name: blue\nendpoint_name: ep\nmodel:\n  path: {}\ncode_configuration:\n  code: .\n  scoring_script: s.py\n"
    write(tmp_path, "s.py", "def init():\n    pass\n\ndef run(raw):\n    return raw\n")
    missing = write(tmp_path, "missing.yml", SCHEMA + body.format("no-such-model"))
    assert main(["validate", "-f", str(missing), "-o", "none"]) == 1
    said = " ".join(capsys.readouterr().err.split())
    assert f"{missing}: field 'model.path'" in said and "no-such-model" in said, said
    (tmp_path / "model").mkdir()
    present = write(tmp_path, "present.yml", SCHEMA + body.format("model"))
    assert main(["validate", "-f", str(present), "-o", "none"]) == 0


@pytest.mark.parametrize(
    ("data", "kind", "field", "suggestion"),
    [
        ({"name": "b", "instnce_count": 2}, OnlineDeployment, "instnce_count", "instance_count"),
        (
            {"name": "b", "request_settings": {"request_timeout": 9}},
            OnlineDeployment,
            "request_settings.request_timeout",
            "request_timeout_ms",
        ),
        ({"name": "b", "model": {"path": "/m", "typ": "mlflow_model"}}, OnlineDeployment, "model.typ", "type"),
        ({"name": "ep", "trafic": {}}, OnlineEndpoint, "trafic", "traffic"),
        ({"name": "b", "model": "/m", "mini_batch_sise": 3}, BatchDeployment, "mini_batch_sise", "mini_batch_size"),
    ],
)
def test_unknown_fields_are_refused_naming_the_closest_one(
    data: dict[str, Any], kind: type, field: str, suggestion: str
) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(data, kind)
    assert info.value.field == field
    assert f"did you mean '{suggestion}'?" in str(info.value)


def test_a_field_like_no_other_lists_the_fields_instead() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"name": "ep", "zzzz": 1}, OnlineEndpoint)
    assert info.value.field == "zzzz"
    assert "is not a field of an online endpoint" in str(info.value)
    assert "mirror_traffic" in str(info.value)  # the known fields, so the user can pick


@pytest.mark.parametrize(
    "extra",
    [
        {"instance_type": "Standard_DS3_v2"},
        {"egress_public_network_access": "disabled"},
        {"data_collector": {"collections": {"model_inputs": {"enabled": "true"}}}},
        {"environment": {"image": "mcr.microsoft.com/x:latest", "datastore": "workspaceblobstore"}},
        {"model": {"path": "/m", "job_name": "j", "utc_time_created": "2024-01-01"}},
        {"id": "/subscriptions/x", "provisioning_state": "Succeeded"},
    ],
)
def test_azure_fields_tiffin_does_not_use_stay_accepted_and_reported(extra: dict[str, Any]) -> None:
    loaded = parse_spec({"name": "blue", **extra}, OnlineDeployment)
    assert loaded.ignored, loaded
    assert loaded.warnings()[0].startswith("ignored locally: ")


def test_an_old_azure_endpoint_file_with_type_online_still_loads() -> None:
    loaded = load_spec(HERE / "fixtures" / "azure" / "online" / "1-sai-create-endpoint.yml")
    assert isinstance(loaded.spec, OnlineEndpoint)
    assert loaded.ignored == ["type"]


def test_every_example_and_fixture_still_loads_unmodified() -> None:
    """Azure's own sample files and tiffin's examples load as one of the four kinds: none has a field refused."""
    files = [*HERE.parent.joinpath("examples").rglob("*.y*ml"), *HERE.joinpath("fixtures", "azure").rglob("*.y*ml")]
    files += list(HERE.joinpath("deployments").rglob("deployment.yml"))
    not_specs = ("conda", "python_env", "hello-batch-deployment")  # environments; a pipeline deployment
    checked = 0
    for file in (f for f in files if not any(word in f.name for word in not_specs)):
        errors = []
        for kind in (OnlineDeployment, OnlineEndpoint, BatchDeployment, BatchEndpoint):
            try:
                load_spec(file, kind)
                break
            except SpecError as exc:
                errors.append(str(exc))
        else:
            pytest.fail(f"{file} loads as no kind: {errors}")
        checked += 1
    assert checked >= 30


# --- models that do not exist, refused at create -----------------------------------------------------


class Api:
    def __init__(self, client: TestClient, home: Path) -> None:
        self.client, self.home = client, home

    def put(self, url: str, body: dict[str, Any]) -> Any:
        return self.client.put("/api" + url, headers=AUTH, json=body)

    def post(self, url: str, body: dict[str, Any]) -> Any:
        return self.client.post("/api" + url, headers=AUTH, json=body)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    store = Store.open(home=tmp_path)
    app = create_api(store, admin_token=TOKEN, public_url="http://127.0.0.1:7700", home=tmp_path)
    with TestClient(Starlette(routes=[Mount("/api", app)])) as client:
        api = Api(client, tmp_path)
        assert api.post("/online-endpoints", {"name": "ep"}).status_code == 201
        assert api.post("/batch-endpoints", {"name": "be"}).status_code == 201
        yield api
    store.close()


def script(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "code").mkdir(exist_ok=True)
    (tmp_path / "code" / "score.py").write_text("def init():\n    pass\n\ndef run(data):\n    return data\n")
    return {"code": str(tmp_path / "code"), "scoring_script": "score.py"}


def test_a_typo_in_a_deployment_body_is_422_at_create(api: Api) -> None:
    response = api.put("/online-endpoints/ep/deployments/blue", {"modle": {"path": str(api.home)}})
    assert response.status_code == 422, response.text
    assert "field 'modle'" in response.json()["message"] and "did you mean 'model'?" in response.json()["message"]


@pytest.mark.parametrize("kind", ["online", "batch"])
def test_a_model_path_that_does_not_exist_is_422_at_create(api: Api, kind: str) -> None:
    missing = api.home / "no-such-model"
    url = "/online-endpoints/ep/deployments/blue" if kind == "online" else "/batch-endpoints/be/deployments/blue"
    response = api.put(url, {"model": {"path": str(missing)}, "code_configuration": script(api.home)})
    assert response.status_code == 422, response.text
    text = response.json()["message"]
    assert "field 'model.path'" in text and str(missing) in text and "does not exist" in text
    (api.home / "no-such-model").mkdir()
    assert api.put(url, {"model": {"path": str(missing)}, "code_configuration": script(api.home)}).status_code == 201


def test_a_triton_server_url_is_not_a_path(api: Api) -> None:
    model = {"path": "http://127.0.0.1:9/", "type": "triton_model"}
    response = api.put("/online-endpoints/ep/deployments/tri", {"model": model})
    assert response.status_code == 201, response.text


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real MLflow tracking store (SQLite) with one registered model version and one run; no model is logged:
    resolving a URI must not need one."""
    mlflow = pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("t", artifact_location=str(root / "artifacts"))
    run = client.create_run(experiment)
    client.create_registered_model("diabetes")
    client.create_model_version("diabetes", source=str(root / "artifacts"), run_id=run.info.run_id)
    client.set_registered_model_alias("diabetes", "champion", "1")
    return {"uri": uri, "run_id": run.info.run_id, "root": str(root)}


def mlflow_body(path: str, tracking: str) -> dict[str, Any]:
    return {"model": {"path": path, "type": "mlflow_model"}, "environment_variables": {"MLFLOW_TRACKING_URI": tracking}}


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("models:/diabetes/1", None),
        ("models:/diabetes@champion", None),
        ("runs:/{run_id}/model", None),
        ("models:/diabetes/7", "version 7 of registered model 'diabetes'"),
        ("models:/nope/1", "'nope'"),
        ("models:/diabetes@nobody", "alias 'nobody'"),
        ("runs:/0123456789abcdef0123456789abcdef/model", "run '0123456789abcdef0123456789abcdef'"),
    ],
)
def test_mlflow_uris_are_resolved_at_create(api: Api, registry: dict[str, str], path: str, words: str | None) -> None:
    body = mlflow_body(path.format(**registry), registry["uri"])
    for url in ("/online-endpoints/ep/deployments/mlf", "/batch-endpoints/be/deployments/mlf"):
        response = api.put(url, body)
        if words is None:
            assert response.status_code in (200, 201), response.text
        else:
            assert response.status_code == 422, response.text
            text = response.json()["message"]
            assert "field 'model.path'" in text and words in text and "does not exist" in text, text
            assert registry["uri"] in text  # where it was looked up


def test_an_mlflow_store_that_is_not_there_is_named(api: Api, tmp_path: Path) -> None:
    absent = f"sqlite:///{tmp_path}/elsewhere/mlflow.db"
    response = api.put("/online-endpoints/ep/deployments/mlf", mlflow_body("models:/diabetes/1", absent))
    assert response.status_code == 422, response.text
    assert "no MLflow tracking store" in response.json()["message"]
    assert not (tmp_path / "elsewhere").exists()  # looking did not create one


def test_an_unreachable_tracking_server_is_said_so(api: Api) -> None:
    with socket.socket() as sock:  # a port nothing listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        url = f"http://user:secret@127.0.0.1:{sock.getsockname()[1]}"
        response = api.put("/online-endpoints/ep/deployments/mlf", mlflow_body("models:/diabetes/1", url))
    assert response.status_code == 422, response.text
    text = response.json()["message"]
    assert "cannot reach the MLflow tracking server" in text
    assert "secret" not in text  # credentials in the URI are not echoed
