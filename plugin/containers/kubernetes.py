"""Kubernetes manifests for an online endpoint (pure: specs in, dicts out; ``tiffin export kubernetes`` does the I/O).

For an endpoint and its deployments, as ``tiffin serve`` stores them::

    Secret      ENDPOINT-keys          the endpoint's keys (real ones only when asked: ``include_keys``)
    Secret      tiffin-store           TIFFIN_STORE_URL, TIFFIN_SECRET_KEY, TIFFIN_ADMIN_TOKEN (placeholders; not
                                       written when the user names a Secret of their own: ``store_secret``)
    Deployment  tiffin-gateway         ``tiffin serve`` (control plane + gateway) on the PostgreSQL store
    Service     tiffin-gateway
    per tiffin deployment D:
    Deployment  ENDPOINT-D             the deployment's image (:mod:`tiffin.containers.naming`), instance_count
                                       replicas, Azure's probes on ``GET /``, resources from its instance_type
    Service     ENDPOINT-D
    HorizontalPodAutoscaler ENDPOINT-D when its scale_settings are ``target_utilization``

Keys appear in the keys Secret only, never in another manifest (a test checks). The gateway routes each deployment's
requests to its Service: its pods get ``TIFFIN_DEPLOYMENT_URL_TEMPLATE`` (:mod:`tiffin.gateway.services`), whose
``{service}`` is :func:`dns_label`'s name of the Service. docs/kubernetes.md says what was and was not run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from tiffin.containers.instance_types import instance_size
from tiffin.containers.naming import CONTAINER_PORT, image_reference, server_image_reference
from tiffin.specs import OnlineDeployment, parse_spec
from tiffin.specs.common import ProbeSettings, TargetUtilizationScaleSettings

__all__ = [
    "DEPLOYMENT_URL_TEMPLATE",
    "DEPLOYMENT_URL_TEMPLATE_ENV",
    "GATEWAY_NAME",
    "GATEWAY_PORT",
    "LABEL_PREFIX",
    "PLACEHOLDER",
    "STORE_SECRET",
    "ExportOptions",
    "Manifests",
    "dns_label",
    "endpoint_manifests",
    "to_yaml",
]

LABEL_PREFIX = "tiffin.ai/"
GATEWAY_NAME = "tiffin-gateway"
GATEWAY_PORT = 7700
STORE_SECRET = "tiffin-store"
SERVICE_PORT = 80
"""The port of every Service written here."""
DEPLOYMENT_URL_TEMPLATE_ENV = "TIFFIN_DEPLOYMENT_URL_TEMPLATE"
"""Set on the gateway: ``tiffin serve`` then runs no replica and sends each deployment's requests to this URL."""
DEPLOYMENT_URL_TEMPLATE = f"http://{{service}}:{SERVICE_PORT}"
"""Each per-deployment Service, by its name (the gateway and the Services share a namespace)."""
PLACEHOLDER = "REPLACE-ME"
"""Starts every placeholder value; a client sending it as a key is refused (401), so an unfilled Secret fails closed."""
# The pod's emptyDir is mounted at _DATA, and TIFFIN_HOME is a folder in it: tiffin serve makes its home 0700, which
# only the folder's owner may, and the emptyDir itself belongs to root.
_DATA = "/var/lib/tiffin"
_HOME = f"{_DATA}/home"
# Every pod runs as uid/gid 1000, the user tiffin's deployment images declare (USER 1000:1000); given here too, so
# that runAsNonRoot holds for a server image whose USER is a name the kubelet cannot check.
_POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000}


@dataclass(frozen=True)
class ExportOptions:
    """What ``tiffin export kubernetes`` lets the user choose."""

    namespace: str | None = None
    image_registry: str | None = None
    image_tag: str | None = None
    server_image: str | None = None
    """The image running ``tiffin serve``; default :func:`~tiffin.containers.naming.server_image_reference`."""
    store_secret: str | None = None
    """A Secret the user made (keys TIFFIN_STORE_URL, TIFFIN_SECRET_KEY, TIFFIN_ADMIN_TOKEN); none is written then."""
    include_keys: bool = False
    gateway_replicas: int = 1


@dataclass
class Manifests:
    """The manifests, in the order ``kubectl apply`` should meet them, and what the user should know."""

    items: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def dns_label(*parts: str, limit: int = 63) -> str:
    """An RFC 1035 label (what a Service name must be; valid for every other kind here too) from ``parts``:
    lower case, ``-`` for anything else, a letter first; past ``limit`` cut, with 8 hex digits of the whole's
    sha256 appended, so two long names that share a beginning stay apart."""
    whole = "-".join(parts)
    name = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", whole.lower())).strip("-")
    if not name or not name[0].isalpha():
        name = f"t-{name}".rstrip("-")
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(whole.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def _label_value(value: str) -> str:
    # Label values: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends. Azure's names already are.
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", value)
    if len(cleaned) > 63:
        cleaned = f"{cleaned[:54]}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"
    return cleaned.strip("-._")


def _labels(component: str, endpoint: str | None = None, deployment: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "tiffin",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "tiffin",
    }
    if endpoint is not None:
        labels[LABEL_PREFIX + "endpoint"] = _label_value(endpoint)
    if deployment is not None:
        labels[LABEL_PREFIX + "deployment"] = _label_value(deployment)
    return labels


def _meta(name: str, labels: Mapping[str, str], options: ExportOptions, **annotations: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if options.namespace:
        meta["namespace"] = options.namespace
    meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = {LABEL_PREFIX + key.replace("_", "-"): value for key, value in annotations.items()}
    return meta


def _probe(settings: ProbeSettings, *, liveness: bool) -> dict[str, Any]:
    # Azure's probe settings, field by field; Azure probes GET / on the inference server, as tiffin's image serves.
    return {
        "httpGet": {"path": "/", "port": "http"},
        "initialDelaySeconds": settings.initial_delay,
        "periodSeconds": settings.period,
        "timeoutSeconds": settings.timeout,
        # Kubernetes refuses a liveness probe whose successThreshold is not 1 (endpoint_manifests warns).
        "successThreshold": 1 if liveness else settings.success_threshold,
        "failureThreshold": settings.failure_threshold,
    }


def _env(deployment: OnlineDeployment) -> list[dict[str, str]]:
    env = [{"name": key, "value": str(value)} for key, value in sorted(deployment.environment_variables.items())]
    given = {item["name"] for item in env}
    rs = deployment.request_settings
    # Recorded for the container; tiffin enforces them in its gateway, and the image does not read them itself.
    for name, value in (
        ("TIFFIN_REQUEST_TIMEOUT_MS", rs.request_timeout_ms),
        ("TIFFIN_MAX_CONCURRENT_REQUESTS_PER_INSTANCE", rs.max_concurrent_requests_per_instance),
        ("TIFFIN_MAX_QUEUE_WAIT_MS", rs.max_queue_wait_ms),
    ):
        if name not in given:
            env.append({"name": name, "value": str(value)})
    return env


def _resources(deployment: OnlineDeployment, warnings: list[str]) -> dict[str, Any] | None:
    if deployment.resources:
        # Azure's Kubernetes online deployments carry Kubernetes' own requests/limits: used as they are.
        return {key: dict(value) for key, value in deployment.resources.items() if key in ("requests", "limits")}
    if deployment.instance_type is None:
        return None
    size = instance_size(deployment.instance_type)
    if size is None:
        warnings.append(
            f"deployment '{deployment.name}': instance_type '{deployment.instance_type}' is not in tiffin's table "
            "(docs/kubernetes.md): its pods get no resource requests or limits; add `resources:` to the deployment "
            "or edit the manifest"
        )
        return None
    return size.resources()


def _deployment_manifests(
    endpoint: Mapping[str, Any], deployment: OnlineDeployment, options: ExportOptions, warnings: list[str]
) -> list[dict[str, Any]]:
    ep = str(endpoint["name"])
    name = dns_label(ep, deployment.name)
    labels = _labels("inference-server", ep, deployment.name)
    selector = {key: labels[key] for key in (LABEL_PREFIX + "endpoint", LABEL_PREFIX + "deployment")}
    container: dict[str, Any] = {
        # Azure's name for the container that runs the scoring code (get-logs --container inference-server).
        "name": "inference-server",
        "image": image_reference(ep, deployment.name, options.image_tag, options.image_registry),
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "env": _env(deployment),
        "readinessProbe": _probe(deployment.readiness_probe, liveness=False),
        "livenessProbe": _probe(deployment.liveness_probe, liveness=True),
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if deployment.liveness_probe.success_threshold != 1:
        warnings.append(
            f"deployment '{deployment.name}': liveness_probe.success_threshold "
            f"{deployment.liveness_probe.success_threshold} written as 1 (Kubernetes allows no other value)"
        )
    resources = _resources(deployment, warnings)
    if resources:
        container["resources"] = resources
    scale = deployment.scale_settings
    replicas = deployment.instance_count
    if isinstance(scale, TargetUtilizationScaleSettings):
        replicas = min(max(replicas, scale.min_instances, 1), scale.max_instances)
    annotations: dict[str, str] = {"traffic": str(endpoint.get("traffic", {}).get(deployment.name, 0))}
    if deployment.name in (endpoint.get("mirror_traffic") or {}):
        annotations["mirror_traffic"] = str(endpoint["mirror_traffic"][deployment.name])
    if deployment.instance_type:
        annotations["instance_type"] = deployment.instance_type
    items: list[dict[str, Any]] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(name, labels, options, **annotations),
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "containers": [container],
                        "securityContext": _POD_SECURITY,
                        "automountServiceAccountToken": False,
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(name, labels, options),
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
            },
        },
    ]
    if isinstance(scale, TargetUtilizationScaleSettings):
        if not (resources or {}).get("requests", {}).get("cpu"):
            warnings.append(
                f"deployment '{deployment.name}': its HorizontalPodAutoscaler scales on CPU utilisation, which "
                "Kubernetes measures against the pods' CPU request, and they have none: give it an instance_type "
                "from the table or `resources.requests.cpu`"
            )
        items.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                # Kubernetes' autoscaler polls at its controller's interval, not per object: polling_interval is
                # kept as an annotation only.
                "metadata": _meta(name, labels, options, polling_interval=str(scale.polling_interval)),
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                    # Below 1 needs Kubernetes' HPAScaleToZero feature gate (alpha): min_instances 0 becomes 1.
                    "minReplicas": max(1, scale.min_instances),
                    "maxReplicas": scale.max_instances,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {
                                "name": "cpu",
                                "target": {
                                    "type": "Utilization",
                                    "averageUtilization": scale.target_utilization_percentage,
                                },
                            },
                        }
                    ],
                },
            }
        )
    return items


def _secret(name: str, labels: Mapping[str, str], data: Mapping[str, str], options: ExportOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(name, labels, options),
        "type": "Opaque",
        "stringData": dict(data),
    }


def _secret_env(name: str, secret: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}}


def _gateway_manifests(options: ExportOptions) -> list[dict[str, Any]]:
    labels = _labels("gateway")
    selector = {"app.kubernetes.io/name": "tiffin", "app.kubernetes.io/component": "gateway"}
    secret = options.store_secret or STORE_SECRET
    image = options.server_image or server_image_reference(options.image_tag, options.image_registry)
    probe = {"httpGet": {"path": "/api/health", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 2}
    env = [
        {"name": "TIFFIN_HOME", "value": _HOME},
        # Each pod is a tiffin node: named after the pod, reached by the others at its own address (peer route).
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "TIFFIN_NODE_ID", "value": "$(POD_NAME)"},
        {"name": "TIFFIN_ADVERTISE_URL", "value": f"http://$(POD_IP):{GATEWAY_PORT}"},
        _secret_env("TIFFIN_STORE_URL", secret),
        _secret_env("TIFFIN_SECRET_KEY", secret),
        # No replica runs in these pods: each deployment is served by its own Deployment + Service.
        {"name": DEPLOYMENT_URL_TEMPLATE_ENV, "value": DEPLOYMENT_URL_TEMPLATE},
    ]
    security = {"allowPrivilegeEscalation": False}
    # tiffin serve reads its admin token from TIFFIN_HOME/admin-token (0600); every pod gets the same one from the
    # Secret, written by an init container so that the token is not in the server's own environment.
    init = {
        "name": "admin-token",
        "image": image,
        "command": [
            "sh",
            "-c",
            f'umask 077 && mkdir -p {_HOME} && printf "%s\\n" "$TIFFIN_ADMIN_TOKEN" > {_HOME}/admin-token',
        ],
        "env": [_secret_env("TIFFIN_ADMIN_TOKEN", secret)],
        "volumeMounts": [{"name": "home", "mountPath": _DATA}],
        "securityContext": security,
    }
    server = {
        "name": "tiffin",
        "image": image,
        "command": ["tiffin", "serve", "--host", "0.0.0.0", "--port", str(GATEWAY_PORT)],
        "ports": [{"name": "http", "containerPort": GATEWAY_PORT, "protocol": "TCP"}],
        "env": env,
        "readinessProbe": {**probe, "initialDelaySeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**probe, "initialDelaySeconds": 30, "failureThreshold": 6},
        "volumeMounts": [{"name": "home", "mountPath": _DATA}],
        "securityContext": security,
    }
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(GATEWAY_NAME, labels, options),
            "spec": {
                "replicas": options.gateway_replicas,
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "initContainers": [init],
                        "securityContext": _POD_SECURITY,
                        "containers": [server],
                        "volumes": [{"name": "home", "emptyDir": {}}],
                        "automountServiceAccountToken": False,
                        # Sends SIGTERM: tiffin serve stops its replicas and leaves the cluster of nodes.
                        "terminationGracePeriodSeconds": 60,
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(GATEWAY_NAME, labels, options),
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
            },
        },
    ]


def endpoint_manifests(
    endpoint: Mapping[str, Any],
    deployments: Sequence[Mapping[str, Any]],
    keys: Mapping[str, str] | None = None,
    options: ExportOptions | None = None,
) -> Manifests:
    """The manifests of ``endpoint`` (as ``GET /api/online-endpoints/NAME`` returns it) and its ``deployments``
    (as the deployments list returns them). ``keys`` (``primaryKey``/``secondaryKey``) are written only with
    ``options.include_keys``; otherwise the keys Secret holds placeholders."""
    options = options or ExportOptions()
    out = Manifests()
    ep = str(endpoint["name"])
    specs = [
        parse_spec(dict(item), OnlineDeployment, f"deployment '{item.get('name')}'").spec
        for item in sorted(deployments, key=lambda item: str(item.get("name")))
    ]
    if not specs:
        out.warnings.append(f"endpoint '{ep}' has no deployments: only the gateway and Secrets are written")
    if endpoint.get("auth_mode", "key") == "key":
        if options.include_keys and keys:
            data = {"primaryKey": keys["primaryKey"], "secondaryKey": keys["secondaryKey"]}
        else:
            hint = f"{PLACEHOLDER}-with-the-key-from-tiffin-online-endpoint-get-credentials-n-{ep}"
            data = {"primaryKey": hint, "secondaryKey": hint}
        out.items.append(_secret(dns_label(ep, "keys"), _labels("keys", ep), data, options))
    else:
        out.warnings.append(
            f"endpoint '{ep}' authenticates with {endpoint.get('auth_mode')} tokens, not keys: no keys Secret is "
            "written (clients get tokens from the gateway's /api, as `get-credentials` does)"
        )
    if options.store_secret is None:
        out.items.append(
            _secret(
                STORE_SECRET,
                _labels("store"),
                {
                    "TIFFIN_STORE_URL": f"postgresql+psycopg://{PLACEHOLDER}-user:{PLACEHOLDER}-password@"
                    f"{PLACEHOLDER}-host:5432/tiffin",
                    "TIFFIN_SECRET_KEY": f"{PLACEHOLDER}-with-the-TIFFIN_SECRET_KEY-that-sealed-the-store's-keys",
                    "TIFFIN_ADMIN_TOKEN": f"{PLACEHOLDER}-with-a-long-random-admin-token",
                },
                options,
            )
        )
    out.items.extend(_gateway_manifests(options))
    for spec in specs:
        out.items.extend(_deployment_manifests(endpoint, spec, options, out.warnings))
    return out


class _Dumper(yaml.SafeDumper):
    # Labels and security contexts are the same dicts in several places: written out each time, not as YAML
    # anchors and aliases, which some tools that read manifests do not follow.
    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(items: Sequence[Mapping[str, Any]]) -> str:
    """The manifests as one YAML stream (``---`` between documents), as ``kubectl apply -f`` reads it."""
    return yaml.dump_all(items, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
