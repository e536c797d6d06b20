"""Swagger 2 / OpenAPI 3 documents for a scoring endpoint, in the shape azmlinfsrv serves.

Pure: schemas in, a document out. Azure clients (and the Azure ML studio "Consume" page) read
``definitions.ServiceInput`` / ``ServiceOutput`` (swagger 2) or ``components.schemas`` (OpenAPI 3).
"""

from __future__ import annotations

import copy
from typing import Any

from tiffin._compat import removeprefix

__all__ = ["build_swagger"]

_ANY_OBJECT: dict[str, Any] = {"type": "object", "example": {}}
_ERROR = {"type": "object", "properties": {"message": {"type": "string"}}}


def build_swagger(
    version: str,
    input_schema: dict[str, Any] | None,
    output_schema: dict[str, Any] | None,
    *,
    title: str,
    service_version: str = "1",
    path_prefix: str = "",
) -> dict[str, Any]:
    """Build the document for swagger major ``version`` ("2" or "3").

    ``input_schema``/``output_schema`` are JSON schemas (``None`` = any JSON object). Nested
    ``$defs`` that pydantic emits are hoisted into the document's definitions so ``$ref`` resolves.
    """
    label = service_version
    prefix = "/" + path_prefix.strip("/") if path_prefix.strip("/") else ""
    major = version.split(".")[0]
    ref_root = "#/definitions/" if major == "2" else "#/components/schemas/"

    definitions: dict[str, Any] = {}
    service_input = _hoist(copy.deepcopy(input_schema) if input_schema else dict(_ANY_OBJECT), definitions, ref_root)
    service_output = _hoist(copy.deepcopy(output_schema) if output_schema else dict(_ANY_OBJECT), definitions, ref_root)
    definitions.update(ServiceInput=service_input, ServiceOutput=service_output, ErrorResponse=_ERROR)

    description = f"API specification for the tiffin deployment {title}"
    error_ref = {"$ref": ref_root + "ErrorResponse"}
    if major == "2":
        return {
            "swagger": "2.0",
            "info": {"title": title, "description": description, "version": label},
            "schemes": ["http", "https"],
            "consumes": ["application/json"],
            "produces": ["application/json"],
            "securityDefinitions": {
                "Bearer": {
                    "type": "apiKey",
                    "name": "Authorization",
                    "in": "header",
                    "description": "For example: Bearer abc123",
                }
            },
            "paths": {
                f"{prefix}/": {
                    "get": {
                        "operationId": "ServiceHealthCheck",
                        "description": "Simple health check endpoint.",
                        "responses": {
                            "200": {"description": "The service is up.", "schema": {"type": "string"}},
                            "default": {"description": "An error.", "schema": error_ref},
                        },
                    }
                },
                f"{prefix}/score": {
                    "post": {
                        "operationId": "RunMLService",
                        "description": "Run the model and get the prediction output",
                        "security": [{"Bearer": []}],
                        "parameters": [
                            {
                                "name": "serviceInputPayload",
                                "in": "body",
                                "description": "The input payload for the model.",
                                "schema": {"$ref": ref_root + "ServiceInput"},
                            }
                        ],
                        "responses": {
                            "200": {
                                "description": "The prediction.",
                                "schema": {"$ref": ref_root + "ServiceOutput"},
                            },
                            "default": {"description": "An error.", "schema": error_ref},
                        },
                    }
                },
            },
            "definitions": definitions,
        }
    json_content = {"application/json": {"schema": error_ref}}
    return {
        "openapi": "3.0.1",
        "info": {"title": title, "description": description, "version": label},
        "paths": {
            f"{prefix}/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": "Simple health check endpoint.",
                    "responses": {
                        "200": {
                            "description": "The service is up.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "default": {"description": "An error.", "content": json_content},
                    },
                }
            },
            f"{prefix}/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": "Run the model and get the prediction output",
                    "security": [{"Bearer": []}],
                    "requestBody": {
                        "description": "The input payload for the model.",
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": ref_root + "ServiceInput"}}},
                    },
                    "responses": {
                        "200": {
                            "description": "The prediction.",
                            "content": {"application/json": {"schema": {"$ref": ref_root + "ServiceOutput"}}},
                        },
                        "default": {"description": "An error.", "content": json_content},
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"Bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": definitions,
        },
    }


def _hoist(schema: Any, definitions: dict[str, Any], ref_root: str) -> Any:
    """Move ``$defs`` into ``definitions`` and point ``$ref``s at ``ref_root``."""
    if isinstance(schema, dict):
        for name, sub in schema.pop("$defs", {}).items():
            definitions[name] = _hoist(sub, definitions, ref_root)
        out = {}
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
                out[key] = ref_root + removeprefix(value, "#/$defs/")
            else:
                out[key] = _hoist(value, definitions, ref_root)
        return out
    if isinstance(schema, list):
        return [_hoist(item, definitions, ref_root) for item in schema]
    return schema
