"""The OpenAPI 3.1 document of the control plane, built from the route table.

Paths come from :data:`~tiffin.api.operations.OPERATIONS`, so every route is listed; the schemas
below describe the JSON bodies. Spec bodies are open objects: their full shape is Azure ML's
endpoint and deployment YAML schema, validated by :mod:`tiffin.specs`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from tiffin import __version__
from tiffin.specs._base import _NAME_RE

from .assets import ASSET_OPERATIONS, ASSET_SCHEMAS, CREATED_OR_REPLACED, Flag, asset_path_schema
from .autoscale import AUTOSCALE_OPERATIONS, AUTOSCALE_SCHEMAS
from .environments import ENVIRONMENT_OPERATIONS, ENVIRONMENT_SCHEMAS
from .logs import LOG_OPERATIONS, LOG_SCHEMAS, Choice
from .operations import OPERATIONS, Operation
from .rollouts import ROLLOUT_OPERATIONS, ROLLOUT_SCHEMAS

__all__ = ["openapi_document"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


# What the server accepts as an endpoint or deployment name (tiffin.specs), so that the schema admits no
# name the server refuses. JSON Schema patterns search, so the whole value is anchored.
_NAME = {"type": "string", "minLength": 1, "maxLength": 63, "pattern": f"^{_NAME_RE.pattern}$"}
_PATH_NAMES = frozenset({"name", "deployment"})
_PERCENTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 100}}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_AUTH_MODES = ["key", "aml_token", "aad_token"]
_STATES = ["Creating", "Updating", "Succeeded", "Failed", "Deleting"]

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["message"],
        "properties": {"message": {"type": "string", "description": "What went wrong and what to do."}},
    },
    "Health": {"type": "object", "properties": {"status": {"type": "string"}}},
    "OpenAPI": {"type": "object", "description": "An OpenAPI 3.1 document."},
    "Stats": {"type": "object", "description": "Per-endpoint request statistics kept by the gateway."},
    "EndpointSpec": {
        "type": "object",
        "description": "An online endpoint in Azure ML's YAML shape (managedOnlineEndpoint schema).",
        "required": ["name"],
        "additionalProperties": True,
        "properties": {
            "name": _NAME,
            "description": {"type": "string"},
            "tags": {"type": "object"},
            "auth_mode": {"type": "string", "enum": _AUTH_MODES, "default": "key"},
            "traffic": _PERCENTS,
            "mirror_traffic": _PERCENTS,
            "local": {
                "type": "boolean",
                "default": False,
                "description": "Azure's local-endpoint semantics: no auth, one deployment taking all traffic.",
            },
        },
    },
    "EndpointPatch": {
        "type": "object",
        "description": "Spec fields to change; null clears an optional field.",
        "additionalProperties": True,
        "properties": {
            "description": {"type": ["string", "null"]},
            "tags": {"type": ["object", "null"]},
            "auth_mode": {"type": "string", "enum": _AUTH_MODES},
            "traffic": _PERCENTS,
            "mirror_traffic": _PERCENTS,
        },
    },
    "Endpoint": {
        "type": "object",
        "description": "An online endpoint as `az ml online-endpoint show` prints it (never its keys).",
        "additionalProperties": True,
        "properties": {
            "name": {"type": "string"},
            "description": {"type": ["string", "null"]},
            "tags": {"type": "object"},
            "auth_mode": {"type": "string", "enum": [*_AUTH_MODES, "none"]},
            "traffic": _PERCENTS,
            "mirror_traffic": _PERCENTS,
            "provisioning_state": {"type": "string", "enum": _STATES},
            "scoring_uri": {"type": "string", "format": "uri"},
            "openapi_uri": {"type": "string", "format": "uri"},
            "kind": {"type": "string", "const": "online"},
            "local": {"type": "boolean"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "EndpointList": {"type": "array", "items": _ref("Endpoint")},
    "Traffic": {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {"traffic": _PERCENTS, "mirror_traffic": _PERCENTS},
    },
    "Credentials": {
        "oneOf": [
            {
                "type": "object",
                "required": ["primaryKey", "secondaryKey"],
                "properties": {"primaryKey": {"type": "string"}, "secondaryKey": {"type": "string"}},
            },
            {
                "type": "object",
                "required": ["accessToken", "expiryTimeUtc"],
                "properties": {
                    "accessToken": {"type": "string"},
                    "expiryTimeUtc": {"type": "string", "format": "date-time"},
                    "refreshAfterTimeUtc": {"type": "string", "format": "date-time"},
                    "tokenType": {"type": "string"},
                },
            },
        ]
    },
    "RegenerateKeys": {
        "type": "object",
        "properties": {"key_type": {"type": "string", "enum": ["primary", "secondary"], "default": "primary"}},
    },
    "DeploymentSpec": {
        "type": "object",
        "description": "An online deployment in Azure ML's YAML shape (managedOnlineDeployment schema); "
        "name and endpoint_name default to the URL's.",
        "additionalProperties": True,
        "properties": {
            "name": _NAME,
            "endpoint_name": _NAME,
            "model": {"oneOf": [{"type": "string"}, {"type": "object"}]},
            "code_configuration": {"type": "object"},
            "environment": {"oneOf": [{"type": "string"}, {"type": "object"}]},
            "environment_variables": _STRINGS,
            "instance_count": {"type": "integer", "minimum": 1},
            "request_settings": {"type": "object"},
            "liveness_probe": {"type": "object"},
            "readiness_probe": {"type": "object"},
        },
    },
    "Deployment": {
        "allOf": [
            _ref("DeploymentSpec"),
            {
                "type": "object",
                "properties": {
                    "provisioning_state": {"type": "string", "enum": _STATES},
                    "reason": {"type": ["string", "null"], "description": "Why the deployment Failed."},
                    "current_instances": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "Replicas answering now on every server (autoscale moves it; "
                        "instance_count is the count the deployment starts with). Absent while not routed.",
                    },
                    "created_at": {"type": "string", "format": "date-time"},
                    "updated_at": {"type": "string", "format": "date-time"},
                },
            },
        ]
    },
    "DeploymentList": {"type": "array", "items": _ref("Deployment")},
    "BatchEndpointSpec": {
        "type": "object",
        "description": "A batch endpoint in Azure ML's YAML shape (batchEndpoint schema).",
        "required": ["name"],
        "additionalProperties": True,
        "properties": {
            "name": _NAME,
            "description": {"type": "string"},
            "tags": {"type": "object"},
            "auth_mode": {"type": "string", "enum": _AUTH_MODES, "default": "aad_token"},
            "defaults": {"type": "object", "properties": {"deployment_name": {"type": ["string", "null"]}}},
        },
    },
    "BatchEndpointPatch": {
        "type": "object",
        "description": "Spec fields to change; null clears an optional field.",
        "additionalProperties": True,
    },
    "BatchEndpoint": {
        "allOf": [
            _ref("BatchEndpointSpec"),
            {
                "type": "object",
                "properties": {
                    "scoring_uri": {"type": "string", "format": "uri", "description": "POST here to invoke."},
                    "provisioning_state": {"type": "string", "enum": _STATES},
                    "kind": {"type": "string", "const": "batch"},
                },
            },
        ]
    },
    "BatchEndpointList": {"type": "array", "items": _ref("BatchEndpoint")},
    "BatchDeploymentSpec": {
        "type": "object",
        "description": "A batch deployment in Azure ML's YAML shape (batchDeployment or modelBatchDeployment).",
        "additionalProperties": True,
        "properties": {
            "name": _NAME,
            "endpoint_name": _NAME,
            "model": {"oneOf": [{"type": "string"}, {"type": "object"}]},
            "code_configuration": {"type": "object"},
            "resources": {"type": "object"},
            "settings": {"type": "object"},
        },
    },
    "BatchDeployment": {
        "allOf": [
            _ref("BatchDeploymentSpec"),
            {"type": "object", "properties": {"provisioning_state": {"type": "string", "enum": _STATES}}},
        ]
    },
    "BatchDeploymentList": {"type": "array", "items": _ref("BatchDeployment")},
    "Invoke": {
        "type": "object",
        "required": ["input"],
        "additionalProperties": False,
        "properties": {
            "input": {"type": "string", "description": "A folder, a file or a glob pattern on the server."},
            "input_type": {"type": "string", "enum": ["uri_folder", "uri_file"]},
            "deployment_name": {"type": "string", "description": "Default: the endpoint's default deployment."},
            "inputs": {"type": "object", "description": "Literal inputs, given to the code as AZUREML_BI_<NAME>."},
            "job_name": {"type": "string"},
            "settings": {
                "type": "object",
                "description": "The deployment's settings changed for this job only: mini_batch_size, "
                "instance_count, max_concurrency_per_instance, output_file_name, error_threshold, "
                "retry_settings(.max_retries/.timeout), logging_level, environment_variables(.NAME).",
            },
            "output_path": {"type": "string", "description": "A folder on the server to write the output into."},
        },
    },
    "Job": {
        "type": "object",
        "additionalProperties": True,
        "properties": {
            "name": {"type": "string"},
            "status": {"type": "string", "enum": ["Queued", "Running", "Completed", "Failed", "Canceled"]},
            "endpoint_name": {"type": "string"},
            "deployment_name": {"type": ["string", "null"]},
            "inputs": {"type": "object"},
            "outputs": {"type": "object"},
            "error": {"type": ["string", "null"]},
            "errors": {"type": "array", "items": {"type": "object"}},
            "progress": {"type": "object"},
        },
    },
    "JobList": {"type": "array", "items": _ref("Job")},
}


# What a create answers names, and the operations under it that take those names (the others they need
# are the caller's): OpenAPI links, so that a client or a tester (schemathesis) can go from a created
# resource to what acts on it.
_LINKS: dict[str, tuple[str, dict[str, str]]] = {
    "create_endpoint": ("/online-endpoints/{name}", {"name": "$response.body#/name"}),
    "put_deployment": (
        "/online-endpoints/{name}/deployments/{deployment}",
        {"name": "$response.body#/endpoint_name", "deployment": "$response.body#/name"},
    ),
    "create_batch_endpoint": ("/batch-endpoints/{name}", {"name": "$response.body#/name"}),
    "put_batch_deployment": (
        "/batch-endpoints/{name}/deployments/{deployment}",
        {"name": "$response.body#/endpoint_name", "deployment": "$response.body#/name"},
    ),
    "invoke_batch_endpoint": ("/jobs/{job}", {"job": "$response.body#/name"}),
}


def _links(op: Operation, operations: Iterable[Operation]) -> dict[str, Any]:
    if op.name not in _LINKS:
        return {}
    prefix, parameters = _LINKS[op.name]
    return {
        target.name: {"operationId": target.name, "parameters": parameters}
        for target in operations
        if target is not op
        and target.path.startswith(prefix)
        and set(parameters) <= set(re.findall(r"{(\w+)}", target.path))
    }


def _path_schema(op: Operation, name: str) -> dict[str, Any]:
    asset = asset_path_schema(op, name)
    if asset is not None:
        return asset
    return _NAME if name in _PATH_NAMES else {"type": "string"}


def _parameters(op: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(op, name)}
        for name in re.findall(r"{(\w+)}", op.path)
    ]
    params += [
        {
            "name": q.name,
            "in": "query",
            "required": False,
            "description": q.description,
            "schema": {"type": "boolean", "default": q.default}
            if isinstance(q, Flag)
            else {"type": "string", "enum": list(q.choices)}
            if isinstance(q, Choice)
            else {"type": "integer", "minimum": q.minimum, "default": q.default},
        }
        for q in op.query
    ]
    return params


def _responses(op: Operation, operations: Iterable[Operation]) -> dict[str, Any]:
    if op.returns is None:
        success: dict[str, Any] = {"description": "Done; no content."}
    elif op.returns == "text":
        success = {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}
    elif op.returns == "file":
        binary = {"schema": {"type": "string", "format": "binary"}}
        success = {"description": "The file", "content": {"application/octet-stream": binary}}
    else:
        success = {"description": "OK", "content": {"application/json": {"schema": _ref(op.returns)}}}
    links = _links(op, operations)
    if links:
        success["links"] = links
    responses: dict[str, Any] = {str(op.status): success}
    if op.name in ("put_deployment", "put_batch_deployment", *CREATED_OR_REPLACED):
        responses["201"] = {**success, "description": "Created"}
    error = {"content": {"application/json": {"schema": _ref("Error")}}}
    if not op.public:
        responses["401"] = {"description": "The admin token is missing or wrong.", **error}
    responses["default"] = {
        "description": "An error: 400/422 invalid input (the message names the field), 401 missing or wrong "
        "admin token, 404 not found, 409 conflict.",
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    return responses


def _operation(op: Operation, operations: Iterable[Operation]) -> dict[str, Any]:
    doc: dict[str, Any] = {"operationId": op.name, "summary": op.summary, "responses": _responses(op, operations)}
    params = _parameters(op)
    if params:
        doc["parameters"] = params
    if op.body:
        doc["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(op.body)}}}
    if op.public:
        doc["security"] = []
    elif op.endpoint_auth:
        doc["security"] = [{"adminToken": []}, {"endpointCredential": []}]
    return doc


def openapi_document(
    operations: Iterable[Operation] = (
        OPERATIONS
        + ASSET_OPERATIONS
        + ENVIRONMENT_OPERATIONS
        + LOG_OPERATIONS
        + ROLLOUT_OPERATIONS
        + AUTOSCALE_OPERATIONS
    ),
) -> dict[str, Any]:
    """The OpenAPI document of ``operations``, paths relative to where the API is mounted (``/api``)."""
    operations = tuple(operations)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, operations)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tiffin control plane",
            "version": __version__,
            "description": "Online and batch endpoints, deployments and batch jobs, as `az ml online-endpoint`, "
            "`az ml online-deployment`, `az ml batch-endpoint`, `az ml batch-deployment` and `az ml job` manage "
            "them, and registered models, environments, data and computes, as `az ml model|environment|data|compute`"
            " do. Every route but /health and /openapi.json needs `Authorization: Bearer <admin token>` (the "
            "token is in $TIFFIN_HOME/admin-token); starting a batch endpoint's jobs and reading them also take the "
            "endpoint's own key or token.",
        },
        "servers": [{"url": "/api"}],
        "security": [{"adminToken": []}],
        "paths": paths,
        "components": {
            "schemas": {
                **SCHEMAS,
                **ASSET_SCHEMAS,
                **ENVIRONMENT_SCHEMAS,
                **LOG_SCHEMAS,
                **ROLLOUT_SCHEMAS,
                **AUTOSCALE_SCHEMAS,
            },
            "securitySchemes": {
                "adminToken": {"type": "http", "scheme": "bearer"},
                "endpointCredential": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A batch endpoint's key or token (`tiffin batch-endpoint get-credentials`).",
                },
            },
        },
    }
