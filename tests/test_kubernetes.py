"""``tiffin export kubernetes``'s manifests (tiffin.containers.kubernetes) and image names (tiffin.containers.naming).

No cluster runs here: every manifest is validated against Kubernetes' own OpenAPI schemas, as the pinned
``kubernetes-validate`` ships them (offline), for the oldest and newest Kubernetes versions it has and one between,
in strict mode (a field Kubernetes does not know is an error). Content is checked field by field.
"""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate  # the test extra pins it: missing, these tests fail rather than skip
import pytest
import yaml

from tiffin.containers.instance_types import INSTANCE_TYPES
from tiffin.containers.kubernetes import (
    PLACEHOLDER,
    ExportOptions,
    Manifests,
    dns_label,
    endpoint_manifests,
    to_yaml,
)
from tiffin.containers.naming import CONTAINER_PORT, image_reference, server_image_reference
from tiffin.errors import SpecError

K8S_VERSIONS = ("1.25.0", "1.30.0", "1.37.0")
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
PRIMARY = "primary-key-value-Zq81"
SECONDARY = "secondary-key-value-Wm27"
KEYS = {"primaryKey": PRIMARY, "secondaryKey": SECONDARY}

ENDPOINT = {"name": "my-endpoint", "auth_mode": "key", "traffic": {"blue": 90, "green": 10}, "mirror_traffic": {}}


def _deployment(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "endpoint_name": "my-endpoint",
        "model": {"path": "/models/m"},
        "code_configuration": {"code": "/code", "scoring_script": "score.py"},
        "provisioning_state": "Succeeded",  # what the server adds to a shown deployment is read past
        **fields,
    }


BLUE = _deployment(
    "blue",
    instance_type="Standard_DS3_v2",
    instance_count=3,
    environment_variables={"WORKER_COUNT": "2", "MODE": "fast"},
    request_settings={"request_timeout_ms": 3000, "max_concurrent_requests_per_instance": 4},
    readiness_probe={"initial_delay": 7, "period": 3, "timeout": 4, "success_threshold": 2, "failure_threshold": 5},
    liveness_probe={"initial_delay": 11, "period": 13, "timeout": 6, "success_threshold": 1, "failure_threshold": 9},
)
GREEN = _deployment(
    "green",
    instance_type="Standard_F4s_v2",
    instance_count=2,
    scale_settings={
        "type": "target_utilization",
        "min_instances": 2,
        "max_instances": 6,
        "polling_interval": 15,
        "target_utilization_percentage": 65,
    },
)


def _by(manifests: Manifests, kind: str, name: str) -> dict[str, Any]:
    found = [m for m in manifests.items if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, [(m["kind"], m["metadata"]["name"]) for m in manifests.items]
    return found[0]


def _validate_all(manifests: Manifests) -> None:
    for item in manifests.items:
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(item, version, strict=True)


# --- image names --------------------------------------------------------------------------------------------------


def test_image_reference_is_registry_repository_and_tag() -> None:
    assert image_reference("my-endpoint", "blue") == "tiffin-my-endpoint-blue:latest"
    assert image_reference("My-Endpoint", "b_1", "1.2", "ghcr.io/my-org") == "ghcr.io/my-org/tiffin-my-endpoint-b_1:1.2"
    assert image_reference("e", "d", registry="localhost:5000/ml/") == "localhost:5000/ml/tiffin-e-d:latest"
    assert image_reference("ep", "b_1") != image_reference("ep", "b-1")
    assert server_image_reference("3", "ghcr.io/x") == "ghcr.io/x/tiffin-server:3"


@pytest.mark.parametrize(
    ("tag", "registry", "words"),
    [("-bad", None, "image tag '-bad'"), ("1", "https://ghcr.io", "image registry"), ("1", "Ghcr.io/Org", "lower")],
)
def test_bad_image_tag_or_registry_says_what_is_wrong(tag: str, registry: str | None, words: str) -> None:
    with pytest.raises(SpecError, match=words):
        image_reference("e", "d", tag, registry)


# --- names --------------------------------------------------------------------------------------------------------


def test_dns_label_cuts_long_names_with_a_digest_and_keeps_them_apart() -> None:
    long_a, long_b = "e" * 40 + "-a", "e" * 40 + "-b"
    a, b = dns_label(long_a, "deployment-" + "x" * 30), dns_label(long_b, "deployment-" + "x" * 30)
    assert a != b and 55 <= len(a) <= 63 and 55 <= len(b) <= 63
    assert DNS_1035.fullmatch(a) and DNS_1035.fullmatch(b)
    assert dns_label("My_Endpoint", "Blue") == "my-endpoint-blue"
    assert DNS_1035.fullmatch(dns_label("1st", "x"))


def test_long_names_validate_and_stay_within_63() -> None:
    endpoint = {"name": "e" * 32, "auth_mode": "key", "traffic": {}}
    manifests = endpoint_manifests(endpoint, [_deployment("d" * 32, endpoint_name="e" * 32)])
    _validate_all(manifests)
    for item in manifests.items:
        assert len(item["metadata"]["name"]) <= 63 and DNS_1035.fullmatch(item["metadata"]["name"])


# --- validation against Kubernetes' schemas -----------------------------------------------------------------------


def test_every_manifest_validates_for_three_kubernetes_versions() -> None:
    options = ExportOptions(namespace="ml", image_registry="ghcr.io/my-org", image_tag="7", include_keys=True)
    odd = _deployment("odd", instance_type="Standard_Unknown_v9", liveness_probe={"success_threshold": 3})
    given = _deployment(
        "given", resources={"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"nvidia.com/gpu": "1"}}
    )
    manifests = endpoint_manifests(ENDPOINT, [BLUE, GREEN, odd, given], KEYS, options)
    kinds = sorted(m["kind"] for m in manifests.items)
    assert kinds == ["Deployment"] * 5 + ["HorizontalPodAutoscaler"] + ["Secret"] * 2 + ["Service"] * 5
    _validate_all(manifests)
    # And the YAML stream kubectl reads says the same, with no YAML aliases.
    text = to_yaml(manifests.items)
    assert "&id" not in text and "*id" not in text
    assert list(yaml.safe_load_all(text)) == manifests.items


def test_the_validator_refuses_a_broken_manifest() -> None:
    # The checks above can fail: a wrong type and an unknown field are caught, in every version used.
    deployment = _by(endpoint_manifests(ENDPOINT, [BLUE]), "Deployment", "my-endpoint-blue")
    for version in K8S_VERSIONS:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate({**deployment, "spec": {**deployment["spec"], "replicas": "3"}}, version)
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate({**deployment, "spex": {}}, version, strict=True)


# --- content ------------------------------------------------------------------------------------------------------


def test_deployment_has_its_image_replicas_probes_resources_and_env() -> None:
    manifests = endpoint_manifests(ENDPOINT, [BLUE], options=ExportOptions(image_registry="reg:5000/ml", image_tag="4"))
    deployment = _by(manifests, "Deployment", "my-endpoint-blue")
    assert deployment["spec"]["replicas"] == 3
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "inference-server"
    assert container["image"] == "reg:5000/ml/tiffin-my-endpoint-blue:4"
    assert container["ports"] == [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}]
    assert container["readinessProbe"] == {
        "httpGet": {"path": "/", "port": "http"},
        "initialDelaySeconds": 7,
        "periodSeconds": 3,
        "timeoutSeconds": 4,
        "successThreshold": 2,
        "failureThreshold": 5,
    }
    assert container["livenessProbe"] == {
        "httpGet": {"path": "/", "port": "http"},
        "initialDelaySeconds": 11,
        "periodSeconds": 13,
        "timeoutSeconds": 6,
        "successThreshold": 1,
        "failureThreshold": 9,
    }
    size = INSTANCE_TYPES["Standard_DS3_v2"]
    assert (size.cpu, size.memory_gib) == (4, 14)
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "14336Mi"},
        "limits": {"cpu": "4", "memory": "14336Mi"},
    }
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env == {
        "MODE": "fast",
        "WORKER_COUNT": "2",
        "TIFFIN_REQUEST_TIMEOUT_MS": "3000",
        "TIFFIN_MAX_CONCURRENT_REQUESTS_PER_INSTANCE": "4",
        "TIFFIN_MAX_QUEUE_WAIT_MS": "500",
    }
    assert deployment["metadata"]["annotations"] == {
        "tiffin.ai/traffic": "90",
        "tiffin.ai/instance-type": "Standard_DS3_v2",
    }
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_labels_select_the_right_pods() -> None:
    manifests = endpoint_manifests(ENDPOINT, [BLUE, GREEN])
    for name in ("my-endpoint-blue", "my-endpoint-green"):
        deployment, service = _by(manifests, "Deployment", name), _by(manifests, "Service", name)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        assert service["spec"]["selector"] == selector
        assert deployment["metadata"]["labels"] == pod_labels == service["metadata"]["labels"]
        assert pod_labels["tiffin.ai/endpoint"] == "my-endpoint"
        assert pod_labels["app.kubernetes.io/managed-by"] == "tiffin"
    mirrored = endpoint_manifests(
        {**ENDPOINT, "traffic": {"blue": 100}, "mirror_traffic": {"green": 10}}, [BLUE, GREEN]
    )
    assert _by(mirrored, "Deployment", "my-endpoint-green")["metadata"]["annotations"] == {
        "tiffin.ai/traffic": "0",
        "tiffin.ai/mirror-traffic": "10",
        "tiffin.ai/instance-type": "Standard_F4s_v2",
    }
    blue = _by(manifests, "Deployment", "my-endpoint-blue")["spec"]["selector"]["matchLabels"]
    green = _by(manifests, "Deployment", "my-endpoint-green")["spec"]["selector"]["matchLabels"]
    assert blue != green


def test_target_utilization_gives_an_hpa_with_its_bounds() -> None:
    manifests = endpoint_manifests(ENDPOINT, [BLUE, GREEN])
    hpa = _by(manifests, "HorizontalPodAutoscaler", "my-endpoint-green")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "my-endpoint-green"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"][0]["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 65},
    }
    assert hpa["metadata"]["annotations"] == {"tiffin.ai/polling-interval": "15"}
    assert _by(manifests, "Deployment", "my-endpoint-green")["spec"]["replicas"] == 2
    # Manual scaling: no autoscaler.
    assert not [
        m for m in manifests.items if m["kind"] == "HorizontalPodAutoscaler" and "blue" in m["metadata"]["name"]
    ]


def test_hpa_replicas_start_within_bounds_and_zero_minimum_becomes_one() -> None:
    scaled = _deployment(
        "s", instance_count=9, instance_type="Standard_DS2_v2",
        scale_settings={"type": "target_utilization", "min_instances": 0, "max_instances": 4},
    )  # fmt: skip
    manifests = endpoint_manifests(ENDPOINT, [scaled])
    assert _by(manifests, "Deployment", "my-endpoint-s")["spec"]["replicas"] == 4
    assert _by(manifests, "HorizontalPodAutoscaler", "my-endpoint-s")["spec"]["minReplicas"] == 1


def test_keys_only_in_the_keys_secret_and_only_when_asked() -> None:
    with_keys = endpoint_manifests(ENDPOINT, [BLUE, GREEN], KEYS, ExportOptions(include_keys=True))
    secret = _by(with_keys, "Secret", "my-endpoint-keys")
    assert secret["stringData"] == KEYS
    for item in with_keys.items:
        if item is not secret:
            text = to_yaml([item])
            assert PRIMARY not in text and SECONDARY not in text, item["metadata"]["name"]
    # The default: placeholders, and the real keys nowhere, even when the caller had them.
    default = endpoint_manifests(ENDPOINT, [BLUE], KEYS)
    text = to_yaml(default.items)
    assert PRIMARY not in text and SECONDARY not in text
    placeholder = _by(default, "Secret", "my-endpoint-keys")["stringData"]["primaryKey"]
    assert placeholder.startswith(PLACEHOLDER) and "get-credentials" in placeholder


def test_gateway_reads_the_store_secret_and_a_named_one_is_not_written() -> None:
    manifests = endpoint_manifests(ENDPOINT, [BLUE])
    store = _by(manifests, "Secret", "tiffin-store")
    assert set(store["stringData"]) == {"TIFFIN_STORE_URL", "TIFFIN_SECRET_KEY", "TIFFIN_ADMIN_TOKEN"}
    assert all(value.startswith(("postgresql+psycopg://", PLACEHOLDER)) for value in store["stringData"].values())
    gateway = _by(manifests, "Deployment", "tiffin-gateway")
    pod = gateway["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["command"][:2] == ["tiffin", "serve"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["env"] if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {
        "TIFFIN_STORE_URL": {"name": "tiffin-store", "key": "TIFFIN_STORE_URL"},
        "TIFFIN_SECRET_KEY": {"name": "tiffin-store", "key": "TIFFIN_SECRET_KEY"},
    }
    # The admin token reaches only the init container that writes it into TIFFIN_HOME.
    (init,) = pod["initContainers"]
    assert init["env"] == [
        {
            "name": "TIFFIN_ADMIN_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "tiffin-store", "key": "TIFFIN_ADMIN_TOKEN"}},
        }
    ]
    assert (
        _by(manifests, "Service", "tiffin-gateway")["spec"]["selector"].items()
        <= (pod_labels := gateway["spec"]["template"]["metadata"]["labels"]).items()
        and pod_labels["app.kubernetes.io/component"] == "gateway"
    )

    named = endpoint_manifests(ENDPOINT, [BLUE], options=ExportOptions(store_secret="prod-store", namespace="ml"))
    assert not [m for m in named.items if m["metadata"]["name"] == "tiffin-store"]
    server = _by(named, "Deployment", "tiffin-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert {
        e["valueFrom"]["secretKeyRef"]["name"] for e in server["env"] if "secretKeyRef" in e.get("valueFrom", {})
    } == {"prod-store"}
    assert {m["metadata"]["namespace"] for m in named.items} == {"ml"}
    _validate_all(named)


def test_token_endpoint_gets_no_keys_secret_and_a_warning() -> None:
    manifests = endpoint_manifests(
        {**ENDPOINT, "auth_mode": "aml_token"}, [BLUE], None, ExportOptions(include_keys=True)
    )
    assert not [m for m in manifests.items if m["metadata"]["name"] == "my-endpoint-keys"]
    assert any("aml_token" in line for line in manifests.warnings)


def test_what_cannot_be_mapped_is_said() -> None:
    odd = _deployment("odd", instance_type="Standard_Unknown_v9", liveness_probe={"success_threshold": 3})
    auto = _deployment("auto", scale_settings={"type": "target_utilization", "max_instances": 3})
    manifests = endpoint_manifests(ENDPOINT, [odd, auto])
    text = "\n".join(manifests.warnings)
    assert "'Standard_Unknown_v9' is not in tiffin's table" in text
    assert "success_threshold 3 written as 1" in text
    assert "deployment 'auto'" in text and "CPU request" in text
    assert (
        "resources" not in _by(manifests, "Deployment", "my-endpoint-odd")["spec"]["template"]["spec"]["containers"][0]
    )
    assert not endpoint_manifests(ENDPOINT, [BLUE, GREEN]).warnings


def test_a_bad_stored_deployment_is_a_spec_error_naming_it() -> None:
    with pytest.raises(SpecError, match="deployment 'blue'"):
        endpoint_manifests(ENDPOINT, [{**BLUE, "instance_count": 0}])
