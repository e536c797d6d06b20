"""Tests of tiffin.specs: Azure's own example YAML files load unchanged, bad ones fail clearly.

The files under tests/fixtures/azure/ are verbatim copies of Azure ML examples (see the README
there); the folders they point at do not exist here, which is fine: loading a spec never looks at
the disk beyond the YAML file itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tiffin.errors import SpecError
from tiffin.specs import (
    SPEC_KINDS,
    BatchDeployment,
    BatchEndpoint,
    DefaultScaleSettings,
    Environment,
    LoadedSpec,
    Model,
    OnlineDeployment,
    OnlineEndpoint,
    TargetUtilizationScaleSettings,
    apply_overrides,
    kind_from_schema,
    load_spec,
    parse_spec,
)

AZURE = Path(__file__).parent / "fixtures" / "azure"
ONLINE = AZURE / "online"
BATCH = AZURE / "batch"


def here(base: Path, relative: str) -> str:
    """What the loader makes of a relative path in a file under ``base``."""
    return os.path.normpath(base / relative)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def spec_error(excinfo: pytest.ExceptionInfo[SpecError]) -> str:
    return str(excinfo.value)


# --- every Azure example loads, with the right kind and the right report -------------------------

# (file, kind passed or None to infer it, expected kind, ignored, unknown)
FIXTURES: list[tuple[str, type | None, type, list[str], list[str]]] = [
    ("online/endpoint.yml", None, OnlineEndpoint, [], []),
    ("online/1-uai-create-endpoint.yml", None, OnlineEndpoint, ["identity"], []),
    # Azure's old example spells the schema in a VS Code comment and carries the earlier CLI's `type: online`.
    ("online/1-sai-create-endpoint.yml", None, OnlineEndpoint, ["type"], []),
    ("online/kubernetes-endpoint.yml", OnlineEndpoint, OnlineEndpoint, ["compute"], []),
    (
        "online/blue-deployment.yml",
        None,
        OnlineDeployment,
        ["instance_type", "environment.image"],
        [],
    ),
    (
        "online/green-deployment.yml",
        OnlineDeployment,
        OnlineDeployment,
        ["instance_type", "environment.image"],
        [],
    ),
    (
        "online/blue-deployment-with-registered-assets.yml",
        None,
        OnlineDeployment,
        ["environment", "instance_type"],
        [],
    ),
    ("online/blue-deployment-with-curated-env.yml", None, OnlineDeployment, ["environment", "instance_type"], []),
    ("online/sklearn-deployment.yaml", None, OnlineDeployment, ["instance_type"], []),
    ("online/create-managed-deployment.yaml", None, OnlineDeployment, ["instance_type"], []),
    (
        "online/kubernetes-blue-deployment.yml",
        None,
        OnlineDeployment,
        ["resources", "environment.image"],
        [],
    ),
    (
        "online/kubernetes-green-deployment.yml",
        None,
        OnlineDeployment,
        [
            "instance_type",
            "resources",
            "environment.image",
        ],
        [],
    ),
    ("batch/endpoint.yml", None, BatchEndpoint, [], []),
    (
        "batch/deployment-torch.yml",
        None,
        BatchDeployment,
        ["compute", "environment.image"],
        [],
    ),
    ("batch/deployment-simple.yml", None, BatchDeployment, ["compute"], []),
    ("batch/deployment-legacy.yml", None, BatchDeployment, ["compute"], []),
    (
        "batch/deployment-custom-legacy.yml",
        None,
        BatchDeployment,
        ["compute", "environment.image"],
        [],
    ),
    ("batch/model_batch_deployment.yaml", BatchDeployment, BatchDeployment, ["environment", "compute"], []),
    ("batch/batch_deployment_1.yaml", BatchDeployment, BatchDeployment, ["environment", "compute"], []),
]


@pytest.mark.parametrize(("name", "kind", "expected", "ignored", "unknown"), FIXTURES, ids=[f[0] for f in FIXTURES])
def test_azure_example_loads(
    name: str, kind: type | None, expected: type, ignored: list[str], unknown: list[str]
) -> None:
    loaded = load_spec(AZURE / name, kind)
    assert isinstance(loaded, LoadedSpec)
    assert type(loaded.spec) is expected
    assert loaded.source == (AZURE / name).absolute()
    assert loaded.ignored == ignored
    assert loaded.unknown == unknown


@pytest.mark.parametrize(("name", "kind"), [(f[0], f[2]) for f in FIXTURES], ids=[f[0] for f in FIXTURES])
def test_round_trip_is_lossless(name: str, kind: type) -> None:
    loaded = load_spec(AZURE / name, kind)
    data = loaded.spec.to_yaml_dict()
    assert "$schema" not in data
    again = parse_spec(data, kind)
    assert again.spec == loaded.spec
    assert (again.ignored, again.unknown) == (loaded.ignored, loaded.unknown)
    # And through YAML text, as `show` output fed back to `create` would go.
    assert parse_spec(yaml.safe_load(loaded.spec.to_yaml()), kind).spec == loaded.spec


def _has_none(value: Any) -> bool:
    if isinstance(value, dict):
        return any(v is None or _has_none(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_none(v) for v in value)
    return value is None


def test_to_yaml_dict_is_plain_and_leaves_out_none() -> None:
    data = load_spec(ONLINE / "blue-deployment.yml").spec.to_yaml_dict()
    assert not _has_none(data)
    assert list(data)[:3] == ["name", "endpoint_name", "type"]
    assert data["model"] == {"path": here(ONLINE, "../../model-1/model"), "type": "custom_model"}
    assert "description" not in data
    assert yaml.safe_load(yaml.safe_dump(data)) == data


# --- online values -------------------------------------------------------------------------------


def test_online_endpoint_values() -> None:
    spec = load_spec(ONLINE / "endpoint.yml").spec
    assert isinstance(spec, OnlineEndpoint)
    assert spec.name == "my-endpoint"
    assert spec.auth_mode == "key"
    assert spec.traffic == {}
    assert spec.mirror_traffic == {}


def test_online_deployment_values_and_azure_defaults() -> None:
    loaded = load_spec(ONLINE / "blue-deployment.yml", OnlineDeployment)
    spec = loaded.spec
    assert (spec.name, spec.endpoint_name, spec.type) == ("blue", "my-endpoint", "managed")
    assert isinstance(spec.model, Model)
    assert spec.model.path == here(ONLINE, "../../model-1/model")
    assert spec.model.type == "custom_model"
    assert spec.code_configuration is not None
    assert spec.code_configuration.code == here(ONLINE, "../../model-1/onlinescoring")
    assert spec.code_configuration.scoring_script == "score.py"
    assert isinstance(spec.environment, Environment)
    assert spec.environment.conda_file == here(ONLINE, "../../model-1/environment/conda.yml")
    assert spec.environment.image == "mcr.microsoft.com/azureml/openmpi3.1.2-ubuntu18.04:20210727.v1"
    assert spec.instance_type == "Standard_DS2_v2"
    assert spec.instance_count == 1
    assert spec.app_insights_enabled is False
    assert spec.environment_variables == {}
    assert isinstance(spec.scale_settings, DefaultScaleSettings)
    # Azure's documented defaults.
    rs = spec.request_settings
    assert (rs.request_timeout_ms, rs.max_concurrent_requests_per_instance, rs.max_queue_wait_ms) == (5000, 1, 500)
    for probe in (spec.liveness_probe, spec.readiness_probe):
        assert (probe.initial_delay, probe.period, probe.timeout) == (10, 10, 2)
        assert (probe.success_threshold, probe.failure_threshold) == (1, 30)
    assert loaded.warnings() == ["ignored locally: instance_type, environment.image"]


def test_registered_assets_stay_references() -> None:
    spec = load_spec(ONLINE / "blue-deployment-with-registered-assets.yml", OnlineDeployment).spec
    assert spec.model == "azureml:my-model:1"
    assert spec.environment == "azureml:my-env:1"
    curated = load_spec(ONLINE / "blue-deployment-with-curated-env.yml", OnlineDeployment).spec
    assert curated.environment == "azureml://registries/azureml/environments/sklearn-1.5/labels/latest"


def test_mlflow_and_triton_models_need_no_code() -> None:
    mlflow = load_spec(ONLINE / "sklearn-deployment.yaml", OnlineDeployment).spec
    assert isinstance(mlflow.model, Model)
    assert (mlflow.model.name, mlflow.model.version, mlflow.model.type) == (
        "mir-sample-sklearn-ncd-model",
        "1",
        "mlflow_model",
    )
    assert mlflow.model.path == here(ONLINE, "sklearn-diabetes/model")
    assert mlflow.code_configuration is None
    assert mlflow.environment is None
    triton = load_spec(ONLINE / "create-managed-deployment.yaml", OnlineDeployment).spec
    assert isinstance(triton.model, Model)
    assert triton.model.type == "triton_model"
    assert triton.model.path == here(ONLINE, "models")


def test_kubernetes_deployment_without_schema() -> None:
    loaded = load_spec(ONLINE / "kubernetes-blue-deployment.yml")  # kind from `type: kubernetes`
    spec = loaded.spec
    assert isinstance(spec, OnlineDeployment)
    assert spec.type == "kubernetes"
    rs = spec.request_settings
    assert (rs.request_timeout_ms, rs.max_concurrent_requests_per_instance, rs.max_queue_wait_ms) == (3000, 1, 3000)
    assert spec.liveness_probe.model_dump() == {
        "initial_delay": 5,
        "period": 5,
        "timeout": 10,
        "success_threshold": 1,
        "failure_threshold": 1,
    }
    assert spec.resources == {
        "requests": {"cpu": "0.1", "memory": "0.1Gi"},
        "limits": {"cpu": "0.2", "memory": "200Mi"},
    }
    assert spec.tags == {"tag1": "deployment-tag1-value"}
    assert spec.model is not None and not isinstance(spec.model, str)
    assert spec.model.path == here(ONLINE, "../model-1/model")


def test_kubernetes_autoscaling_is_kept_and_honoured() -> None:
    spec = load_spec(ONLINE / "kubernetes-green-deployment.yml", OnlineDeployment).spec
    assert spec.type == "kubernetes"
    assert spec.app_insights_enabled is True
    scale = spec.scale_settings
    assert isinstance(scale, TargetUtilizationScaleSettings)
    assert (scale.min_instances, scale.max_instances, scale.polling_interval) == (1, 3, 10)
    assert scale.target_utilization_percentage == 70


def test_kubernetes_schema_implies_kubernetes_type(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "k.yml",
        "$schema: https://azuremlschemas.azureedge.net/latest/kubernetesOnlineDeployment.schema.json\n"
        "name: blue\nendpoint_name: ep\nmodel: azureml:m:1\n",
    )
    assert load_spec(path).spec.type == "kubernetes"


def test_kubernetes_endpoint_needs_a_kind_and_accepts_azure_casing() -> None:
    with pytest.raises(SpecError, match="add a \\$schema line"):
        load_spec(ONLINE / "kubernetes-endpoint.yml")
    spec = load_spec(ONLINE / "kubernetes-endpoint.yml", OnlineEndpoint).spec
    assert spec.auth_mode == "key"  # the file says `Key`
    assert spec.compute == "azureml:inferencecompute"
    assert spec.tags == {"tag1": "endpoint-tag1-value"}


def test_identity_is_kept() -> None:
    spec = load_spec(ONLINE / "1-uai-create-endpoint.yml", OnlineEndpoint).spec
    assert spec.identity == {
        "type": "user_assigned",
        "user_assigned_identities": [{"resource_id": "user_identity_ARM_id_place_holder"}],
    }


def test_schema_from_vs_code_comment() -> None:
    loaded = load_spec(ONLINE / "1-sai-create-endpoint.yml")
    assert loaded.schema_url == "https://azuremlsdk2.blob.core.windows.net/latest/managedOnlineEndpoint.schema.json"
    assert loaded.spec.name == "my-sai-endpoint"
    assert loaded.spec.model_extra == {"type": "online"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [("key", "key"), ("Key", "key"), ("AMLToken", "aml_token"), ("aml_token", "aml_token"), ("AADToken", "aad_token")],
)
def test_auth_mode_spellings(given: str, expected: str) -> None:
    assert parse_spec({"name": "ep", "auth_mode": given}, OnlineEndpoint).spec.auth_mode == expected
    assert parse_spec({"name": "ep", "auth_mode": given}, BatchEndpoint).spec.auth_mode == expected


def test_traffic_and_mirror_traffic() -> None:
    spec = parse_spec(
        {"name": "ep", "traffic": {"blue": 90, "green": 10}, "mirror_traffic": {"red": 20}}, OnlineEndpoint
    ).spec
    assert spec.traffic == {"blue": 90, "green": 10}
    assert spec.mirror_traffic == {"red": 20}
    assert parse_spec({"name": "ep", "traffic": {"blue": 0}}, OnlineEndpoint).spec.traffic == {"blue": 0}


def test_environment_variables_become_strings() -> None:
    spec = parse_spec(
        {"name": "d", "environment_variables": {"WORKER_COUNT": 4, "DEBUG": True, "RATE": 0.5, 7: "x"}},
        OnlineDeployment,
    ).spec
    assert spec.environment_variables == {"WORKER_COUNT": "4", "DEBUG": "true", "RATE": "0.5", "7": "x"}


def test_custom_container_environment() -> None:
    data = {
        "name": "tfserving-deployment",
        "endpoint_name": "tfserving-endpoint",
        "model": {"name": "tfserving-mounted", "version": 1, "path": "./half_plus_two"},
        "environment": {
            "image": "docker.io/tensorflow/serving:latest",
            "inference_config": {
                "liveness_route": {"port": 8501, "path": "/v1/models/half_plus_two"},
                "readiness_route": {"port": 8501, "path": "/v1/models/half_plus_two"},
                "scoring_route": {"port": 8501, "path": "/v1/models/half_plus_two:predict"},
            },
        },
        "model_mount_path": "/var/tfserving-model-mount",
        "instance_type": "Standard_DS3_v2",
        "instance_count": 1,
    }
    loaded = parse_spec(data, OnlineDeployment)
    env = loaded.spec.environment
    assert isinstance(env, Environment) and env.inference_config is not None
    assert env.inference_config.scoring_route is not None
    assert env.inference_config.scoring_route.port == 8501
    # The image, its routes and the model's mount path are a custom container's, run on a container engine
    # (tests/test_container_deployments.py).
    assert loaded.ignored == ["instance_type"]
    # No base_dir: relative paths are left for the caller.
    assert isinstance(loaded.spec.model, Model) and loaded.spec.model.path == "./half_plus_two"


# --- batch values --------------------------------------------------------------------------------


def test_batch_endpoint_values_and_defaults() -> None:
    spec = load_spec(BATCH / "endpoint.yml", BatchEndpoint).spec
    assert spec.name == "mnist-batch"
    assert spec.description == "A batch endpoint for scoring images from the MNIST dataset."
    assert spec.tags == {"type": "deep-learning"}
    assert spec.auth_mode == "aad_token"
    assert spec.defaults.deployment_name is None
    other = parse_spec({"name": "b", "defaults": {"deployment_name": "blue"}}, BatchEndpoint).spec
    assert other.defaults.deployment_name == "blue"


def test_batch_deployment_settings_block() -> None:
    spec = load_spec(BATCH / "deployment-torch.yml", BatchDeployment).spec
    assert (spec.name, spec.endpoint_name, spec.type) == ("mnist-torch-dpl", "mnist-batch", "model")
    assert isinstance(spec.model, Model)
    assert spec.model.name == "mnist-classifier-torch"
    assert spec.model.path == here(BATCH, "model")
    assert spec.code_configuration is not None
    assert spec.code_configuration.code == here(BATCH, "code")
    assert spec.code_configuration.scoring_script == "batch_driver.py"
    assert isinstance(spec.environment, Environment)
    assert spec.environment.conda_file == here(BATCH, "environment/conda.yaml")
    assert spec.compute == "azureml:batch-cluster"
    assert spec.instance_count == spec.resources.instance_count == 1
    assert spec.max_concurrency_per_instance == 2
    assert spec.mini_batch_size == 10
    assert spec.output_action == "append_row"
    assert spec.output_file_name == "predictions.csv"
    assert (spec.retry_settings.max_retries, spec.retry_settings.timeout) == (3, 30)
    assert spec.error_threshold == -1
    assert spec.logging_level == "info"


def test_batch_flat_and_settings_shapes_are_the_same() -> None:
    flat = load_spec(BATCH / "deployment-legacy.yml", BatchDeployment).spec
    nested = load_spec(BATCH / "deployment-simple.yml", BatchDeployment).spec
    assert flat.settings == nested.settings
    assert flat.resources == nested.resources
    assert flat.mini_batch_size == 2
    assert flat.retry_settings.timeout == 300
    assert flat.instance_count == 2
    assert flat.model == "azureml:heart-classifier-mlflow@latest"
    assert flat.description == "A heart condition classifier based on XGBoost"
    # The flat file is written back in the newer shape.
    data = flat.to_yaml_dict()
    assert data["type"] == "model"
    assert "mini_batch_size" not in data
    assert data["settings"]["mini_batch_size"] == 2


def test_batch_sdk_examples_of_both_shapes() -> None:
    nested = load_spec(BATCH / "model_batch_deployment.yaml", BatchDeployment).spec
    flat = load_spec(BATCH / "batch_deployment_1.yaml", BatchDeployment).spec
    assert nested.settings == flat.settings
    assert nested.instance_count == flat.instance_count == 2  # settings.instance_count, resources.instance_count
    assert nested.error_threshold == 10
    assert nested.output_file_name == "append_row.txt"
    assert nested.environment_variables == {"AZUREML_BE": "bla"}
    assert isinstance(nested.model, Model) and nested.model.version == "5"


def test_model_batch_deployment_schema(tmp_path: Path) -> None:
    # Azure's mnist torch example with the newer schema URL that `type: model` files may use.
    text = (
        (BATCH / "deployment-torch.yml")
        .read_text()
        .replace("batchDeployment.schema.json", "modelBatchDeployment.schema.json")
    )
    path = write(tmp_path, "deployment.yml", text)
    loaded = load_spec(path)
    assert isinstance(loaded.spec, BatchDeployment)
    assert loaded.spec.settings == load_spec(BATCH / "deployment-torch.yml", BatchDeployment).spec.settings


def test_batch_defaults() -> None:
    spec = parse_spec({"name": "d", "endpoint_name": "b", "model": "azureml:m:1"}, BatchDeployment).spec
    assert spec.mini_batch_size == 10
    assert spec.max_concurrency_per_instance == 1
    assert spec.error_threshold == -1
    assert (spec.retry_settings.max_retries, spec.retry_settings.timeout) == (3, 30)
    assert spec.output_action == "append_row"
    assert spec.output_file_name == "predictions.csv"
    assert spec.logging_level == "info"
    assert spec.instance_count == 1
    assert spec.environment_variables == {}


@pytest.mark.parametrize(("given", "expected"), [("AppendRow", "append_row"), ("SummaryOnly", "summary_only")])
def test_output_action_spellings(given: str, expected: str) -> None:
    data = {"name": "d", "model": "azureml:m:1", "output_action": given, "logging_level": "DEBUG"}
    spec = parse_spec(data, BatchDeployment).spec
    assert spec.output_action == expected
    assert spec.logging_level == "debug"


def test_pipeline_component_deployment_is_refused() -> None:
    with pytest.raises(SpecError) as excinfo:
        load_spec(BATCH / "hello-batch-deployment.yml")
    assert excinfo.value.field == "type"
    assert "pipeline component deployments are not supported" in spec_error(excinfo)
    assert spec_error(excinfo).startswith(str(BATCH / "hello-batch-deployment.yml"))


def test_batch_setting_given_twice_differently() -> None:
    data = {"name": "d", "model": "azureml:m:1", "mini_batch_size": 3, "settings": {"mini_batch_size": 4}}
    with pytest.raises(SpecError) as excinfo:
        parse_spec(data, BatchDeployment, source="d.yml")
    assert excinfo.value.field == "mini_batch_size"
    assert "given twice" in spec_error(excinfo)


# --- errors name the file, the field and what is allowed -----------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: my-endpoint\nauth_mode: password\n",
            "blue.yml: field 'auth_mode': must be one of key, aml_token, aad_token (got 'password')",
        ),
        (
            "name: ep\ntraffic:\n  blue: ninety\n  green: 10\n",
            "blue.yml: field 'traffic.blue': must be a whole number (got 'ninety')",
        ),
        ("name: ep\ntraffic:\n  blue: 0.5\n", "blue.yml: field 'traffic.blue': must be a whole number (got 0.5)"),
        ("name: ep\ntraffic: [blue]\n", "blue.yml: field 'traffic': must be a mapping (got a list)"),
        (
            "name: ep\ntraffic:\n  blue: 90\n  green: 20\n",
            "blue.yml: field 'traffic': percentages must add up to 100, or all be 0 (got 110)",
        ),
        ("name: ep\ntraffic:\n  blue: 101\n", "blue.yml: field 'traffic.blue': must be at most 100 (got 101)"),
        ("name: my endpoint\n", "blue.yml: field 'name': must start with a letter"),
        ("description: no name\n", "blue.yml: field 'name': is required"),
    ],
)
def test_endpoint_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "blue.yml", text)
    with pytest.raises(SpecError) as excinfo:
        load_spec("blue.yml", OnlineEndpoint)
    assert spec_error(excinfo).startswith(expected)


DEPLOYMENT = "name: blue\nendpoint_name: my-endpoint\n"


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ("instance_count: two\n", "instance_count", "must be a whole number (got 'two')"),
        ("instance_count: yes\n", "instance_count", "must be a whole number (got True)"),
        ("instance_count: 0\n", "instance_count", "must be at least 1 (got 0)"),
        ("model: 5\n", "model", "must be a reference like 'azureml:my-model:1' or a mapping"),
        ("model:\n  name: m\n", "model.path", "is required"),
        (
            "model:\n  path: m\n  type: onnx_model\n",
            "model.type",
            "must be one of custom_model, mlflow_model, triton_model (got 'onnx_model')",
        ),
        ("code_configuration:\n  code: src\n", "code_configuration.scoring_script", "is required"),
        (
            "environment:\n  inference_config:\n    scoring_route:\n      path: /score\n      port: 0\n",
            "environment.inference_config.scoring_route.port",
            "must be at least 1 (got 0)",
        ),
        (
            "scale_settings:\n  type: auto\n",
            "scale_settings.type",
            "must be one of default, target_utilization, target_concurrency (got 'auto')",
        ),
        (
            "scale_settings:\n  type: target_utilization\n  min_instances: 4\n  max_instances: 2\n",
            "scale_settings.min_instances",
            "must not be above max_instances (2) (got 4)",
        ),
        ("request_settings:\n  request_timeout_ms: soon\n", "request_settings.request_timeout_ms", "must be a whole"),
        ("liveness_probe:\n  period: 0\n", "liveness_probe.period", "must be at least 1 (got 0)"),
        ("environment_variables:\n  A: [1]\n", "environment_variables.A", "must be a string (got a list)"),
        ("app_insights_enabled: maybe\n", "app_insights_enabled", "must be true or false (got 'maybe')"),
        ("type: aks\n", "type", "must be one of managed, kubernetes (got 'aks')"),
    ],
)
def test_deployment_errors(tmp_path: Path, text: str, field: str, expected: str) -> None:
    path = write(tmp_path, "blue.yml", DEPLOYMENT + text)
    with pytest.raises(SpecError) as excinfo:
        load_spec(path, OnlineDeployment)
    assert excinfo.value.field == field
    assert excinfo.value.source == str(path)
    assert spec_error(excinfo).startswith(f"{path}: field '{field}': {expected}")


@pytest.mark.parametrize(
    ("data", "field", "expected"),
    [
        ({"mini_batch_size": "x"}, "mini_batch_size", "must be a whole number (got 'x')"),  # flat shape
        ({"settings": {"mini_batch_size": 0}}, "settings.mini_batch_size", "must be at least 1 (got 0)"),
        ({"output_action": "everything"}, "output_action", "must be one of append_row, summary_only"),
        ({"settings": {"logging_level": "loud"}}, "settings.logging_level", "must be one of warning, info, debug"),
        ({"retry_settings": {"timeout": 0}}, "retry_settings.timeout", "must be at least 1 (got 0)"),
        ({"error_threshold": -2}, "error_threshold", "must be at least -1 (got -2)"),
        ({"settings": 4}, "settings", "must be a mapping (got 4)"),
        ({"resources": {"instance_count": 0}}, "resources.instance_count", "must be at least 1 (got 0)"),
    ],
)
def test_batch_deployment_errors(data: dict[str, Any], field: str, expected: str) -> None:
    with pytest.raises(SpecError) as excinfo:
        parse_spec({"name": "d", "model": "azureml:m:1", **data}, BatchDeployment, source="dep.yml")
    assert excinfo.value.field == field
    assert spec_error(excinfo).startswith(f"dep.yml: field '{field}': {expected}")


def test_batch_deployment_needs_a_model() -> None:
    with pytest.raises(SpecError, match="field 'model': is required"):
        parse_spec({"name": "d"}, BatchDeployment)


def test_several_errors_are_reported_together() -> None:
    with pytest.raises(SpecError) as excinfo:
        parse_spec({"name": "d", "type": "aks", "instance_count": "two"}, OnlineDeployment, source="d.yml")
    assert excinfo.value.field == "type"
    assert spec_error(excinfo) == (
        "d.yml: field 'type': must be one of managed, kubernetes (got 'aks'); "
        "also field 'instance_count': must be a whole number (got 'two')"
    )


def test_invalid_yaml_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yml", "name: blue\nmodel:\n  path: a\n   type: b: c\n")
    with pytest.raises(SpecError) as excinfo:
        load_spec(path, OnlineDeployment)
    assert spec_error(excinfo).startswith(f"{path}: invalid YAML at line 4, column ")


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "dup.yml", "name: blue\ninstance_count: 1\ninstance_count: 3\n")
    with pytest.raises(SpecError, match=r"invalid YAML at line 3, column 1: found the key 'instance_count' twice"):
        load_spec(path, OnlineDeployment)


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = "name: blue\nliveness_probe: &b\n  period: 5\n  timeout: 3\nreadiness_probe:\n  <<: *b\n  period: 7\n"
    loaded = load_spec(write(tmp_path, "m.yml", text), OnlineDeployment)
    assert (loaded.spec.readiness_probe.period, loaded.spec.readiness_probe.timeout) == (7, 3)
    # An anchor kept in a key of its own is a key Azure does not know, refused as az ml refuses it.
    text = "base: &b\n  period: 5\nname: blue\nliveness_probe:\n  <<: *b\n"
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, "n.yml", text), OnlineDeployment)
    assert info.value.field == "base"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "is empty"),
        ("# only a comment\n", "is empty"),
        ("- name: blue\n", "must hold a YAML mapping of fields (got a list)"),
        ("just text\n", "must hold a YAML mapping of fields (got 'just text')"),
    ],
)
def test_document_must_be_a_mapping(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, "x.yml", text)
    with pytest.raises(SpecError) as excinfo:
        load_spec(path, OnlineEndpoint)
    assert spec_error(excinfo).startswith(f"{path}: {expected}")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.yml: file not found"):
        load_spec(tmp_path / "nope.yml")
    with pytest.raises(SpecError, match="is a folder"):
        load_spec(tmp_path)


def test_unknown_schema(tmp_path: Path) -> None:
    path = write(tmp_path, "x.yml", "$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json\n")
    with pytest.raises(SpecError) as excinfo:
        load_spec(path)
    assert excinfo.value.field == "$schema"
    assert "is not a schema tiffin knows" in spec_error(excinfo)


def test_schema_and_kind_must_agree() -> None:
    with pytest.raises(SpecError) as excinfo:
        load_spec(ONLINE / "endpoint.yml", OnlineDeployment)
    assert excinfo.value.field == "$schema"
    assert spec_error(excinfo).endswith(
        "field '$schema': this file describes an online endpoint (per its $schema), "
        "but an online deployment is expected here"
    )


def test_kind_must_be_a_spec_class() -> None:
    with pytest.raises(TypeError):
        parse_spec({"name": "x"}, dict)  # type: ignore[arg-type]


# --- unknown and ignored fields are kept and reported --------------------------------------------


def test_typos_are_refused_naming_the_closest_field() -> None:
    """Kept with a warning before issue 11: a `modle:` made a deployment with no model. Now refused, as az ml does."""
    data = {"name": "blue", "instnce_count": 2, "request_settings": {"request_timeout": 9}}
    with pytest.raises(SpecError) as info:
        parse_spec(data, OnlineDeployment)
    assert info.value.field == "instnce_count"
    assert str(info.value) == (
        "<inline>: field 'instnce_count': is not a field of an online deployment (and neither is "
        "request_settings.request_timeout); did you mean 'instance_count'?"
    )


def test_azure_show_output_keys_are_ignored_not_unknown() -> None:
    data = {
        "name": "ep",
        "id": "/subscriptions/x",
        "provisioning_state": "Succeeded",
        "scoring_uri": "https://ep.example/score",
        "public_network_access": "Enabled",
    }
    loaded = parse_spec(data, OnlineEndpoint)
    assert loaded.unknown == []
    assert loaded.ignored == ["public_network_access", "id", "provisioning_state", "scoring_uri"]
    assert loaded.spec.public_network_access == "enabled"


def test_default_valued_azure_fields_are_not_reported() -> None:
    data = {"name": "d", "app_insights_enabled": False, "scale_settings": {"type": "default"}}
    assert parse_spec(data, OnlineDeployment).ignored == []


def test_everything_azure_only_is_reported() -> None:
    data = {
        "name": "d",
        "model": {"path": "m"},
        "environment": {
            "image": "img",
            "conda_file": {"dependencies": ["python=3.11"]},
            "build": {"path": "docker"},
            "os_type": "Linux",
        },
        "instance_type": "Standard_DS3_v2",
        "app_insights_enabled": True,
        "data_collector": {"collections": {"model_inputs": {"enabled": "True"}}},
        "egress_public_network_access": "disabled",
        "private_network_connection": True,
    }
    loaded = parse_spec(data, OnlineDeployment)
    assert loaded.ignored == [
        "instance_type",
        "data_collector",
        "egress_public_network_access",
        "private_network_connection",
        "environment.image",
        "environment.build",
        "environment.os_type",
    ]
    env = loaded.spec.environment
    assert isinstance(env, Environment) and env.build is not None
    assert env.conda_file == {"dependencies": ["python=3.11"]}
    assert env.build.dockerfile_path == "Dockerfile"
    assert env.os_type == "linux"


# --- overrides -----------------------------------------------------------------------------------


def test_overrides_are_typed_and_applied_before_validation() -> None:
    loaded = load_spec(
        ONLINE / "blue-deployment.yml",
        OnlineDeployment,
        overrides=["instance_count=2", "environment_variables.WORKERS=4", "request_settings.request_timeout_ms=900"],
    )
    assert loaded.spec.instance_count == 2
    assert loaded.spec.environment_variables == {"WORKERS": "4"}
    assert loaded.spec.request_settings.request_timeout_ms == 900


def test_overrides_on_endpoint_traffic() -> None:
    spec = load_spec(ONLINE / "endpoint.yml", overrides=["traffic.blue=90", "traffic.green=10"]).spec
    assert isinstance(spec, OnlineEndpoint)
    assert spec.traffic == {"blue": 90, "green": 10}
    flow = load_spec(ONLINE / "endpoint.yml", overrides=["traffic={blue: 100}", "auth_mode=aml_token"]).spec
    assert flow.traffic == {"blue": 100}
    assert flow.auth_mode == "aml_token"


def test_override_replaces_inline_model_with_reference() -> None:
    spec = load_spec(ONLINE / "blue-deployment.yml", OnlineDeployment, overrides=["model=azureml:my-model:2"]).spec
    assert spec.model == "azureml:my-model:2"


def test_override_can_supply_required_fields() -> None:
    spec = parse_spec({"model": "azureml:m:1"}, BatchDeployment, overrides=["name=blue", "endpoint_name=b"]).spec
    assert (spec.name, spec.endpoint_name) == ("blue", "b")


@pytest.mark.parametrize("override", ["mini_batch_size=5", "settings.mini_batch_size=5"])
@pytest.mark.parametrize("name", ["deployment-legacy.yml", "deployment-simple.yml"])
def test_batch_setting_overrides_work_with_either_shape(name: str, override: str) -> None:
    spec = load_spec(BATCH / name, BatchDeployment, overrides=[override]).spec
    assert spec.mini_batch_size == 5


def test_override_validation_error_names_the_field() -> None:
    with pytest.raises(SpecError) as excinfo:
        load_spec(ONLINE / "blue-deployment.yml", overrides=["instance_count=two"])
    assert excinfo.value.field == "instance_count"


@pytest.mark.parametrize(
    ("override", "field", "expected"),
    [
        ("instance_count", None, "malformed override 'instance_count': expected dotted.path=value"),
        ("=2", None, "malformed override '=2': the field path before '=' has an empty part"),
        ("traffic..blue=2", None, "malformed override 'traffic..blue=2'"),
        ("tags=[a", "tags", "malformed override 'tags=[a': the value is not valid YAML"),
        (
            "instance_count.max=2",
            "instance_count",
            "cannot apply override 'instance_count.max=2': 'instance_count' is 1, not a mapping",
        ),
        ("model.path=./m", "model", "'model' is 'azureml:m:1', not a mapping"),
    ],
)
def test_malformed_overrides(override: str, field: str | None, expected: str) -> None:
    data = {"name": "d", "instance_count": 1, "model": "azureml:m:1"}
    with pytest.raises(SpecError) as excinfo:
        parse_spec(data, OnlineDeployment, source="d.yml", overrides=[override])
    assert excinfo.value.field == field
    assert expected in spec_error(excinfo)
    assert spec_error(excinfo).startswith("d.yml: ")


def test_apply_overrides_leaves_its_input_alone() -> None:
    data = {"name": "d", "traffic": {"blue": 100}}
    result = apply_overrides(data, ["traffic.blue=0", "tags.team=ml", "description="])
    assert data == {"name": "d", "traffic": {"blue": 100}}
    assert result == {"name": "d", "traffic": {"blue": 0}, "tags": {"team": "ml"}, "description": ""}


def test_parse_spec_leaves_its_input_alone() -> None:
    data = {"name": "d", "model": {"path": "m"}, "mini_batch_size": 3}
    snapshot = {"name": "d", "model": {"path": "m"}, "mini_batch_size": 3}
    parse_spec(data, BatchDeployment, base_dir=Path("/base"), overrides=["settings.mini_batch_size=4"])
    assert data == snapshot


# --- paths ---------------------------------------------------------------------------------------


def test_relative_paths_resolve_against_base_dir() -> None:
    data = {
        "name": "d",
        "model": {"path": "../models/m"},
        "code_configuration": {"code": "src", "scoring_script": "score.py"},
        "environment": {"conda_file": "env/conda.yml", "build": {"path": "docker"}},
    }
    spec = parse_spec(data, OnlineDeployment, base_dir=Path("/work/project")).spec
    assert isinstance(spec.model, Model) and spec.model.path == os.path.normpath("/work/models/m")
    assert spec.code_configuration is not None
    assert spec.code_configuration.code == os.path.normpath("/work/project/src")
    assert spec.code_configuration.scoring_script == "score.py"
    assert isinstance(spec.environment, Environment) and spec.environment.build is not None
    assert spec.environment.conda_file == os.path.normpath("/work/project/env/conda.yml")
    assert spec.environment.build.path == os.path.normpath("/work/project/docker")


@pytest.mark.parametrize(
    "path",
    [
        "azureml://datastores/workspaceblobstore/paths/models/m",
        "https://example.org/model.tar.gz",
        "azureml:my-model:1",
        "/already/absolute",
    ],
)
def test_remote_and_absolute_paths_are_kept(path: str) -> None:
    spec = parse_spec({"name": "d", "model": {"path": path}}, OnlineDeployment, base_dir=Path("/base")).spec
    assert isinstance(spec.model, Model)
    assert spec.model.path == (os.path.normpath(path) if path.startswith("/") else path)


def test_file_prefix_of_old_examples() -> None:
    data = {"name": "d", "environment": {"conda_file": "file:../env/conda.yml"}}
    spec = parse_spec(data, OnlineDeployment, base_dir=Path("/a/b")).spec
    assert isinstance(spec.environment, Environment)
    assert spec.environment.conda_file == os.path.normpath("/a/env/conda.yml")


# --- schema URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json", OnlineEndpoint),
        ("https://azuremlschemas.azureedge.net/latest/kubernetesOnlineEndpoint.schema.json", OnlineEndpoint),
        ("https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json", OnlineDeployment),
        ("https://azuremlschemas.azureedge.net/latest/kubernetesOnlineDeployment.schema.json", OnlineDeployment),
        ("http://azureml/sdk-2-0/OnlineDeployment.json", OnlineDeployment),
        ("https://azuremlschemas.azureedge.net/latest/batchEndpoint.schema.json", BatchEndpoint),
        ("https://azuremlschemas.azureedge.net/latest/batchDeployment.schema.json", BatchDeployment),
        ("https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json", BatchDeployment),
        ("https://azuremlschemas.azureedge.net/latest/commandJob.schema.json", None),
    ],
)
def test_kind_from_schema(url: str, kind: type | None) -> None:
    assert kind_from_schema(url) is kind


def test_spec_kinds() -> None:
    assert set(SPEC_KINDS) == {OnlineEndpoint, OnlineDeployment, BatchEndpoint, BatchDeployment}
