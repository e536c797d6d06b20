"""The control plane's routes for registered assets and computes (``tiffin model|environment|data|compute``).

The routes of the three versioned kinds are alike: ``/models/...``, ``/environments/...`` and ``/data/...`` are
made from one table (``{kinds}`` filled in), each an operation of its own in the OpenAPI document. Every route
needs the admin token: a body's ``path`` is a path on the server's machine, read with the server user's rights,
as a deployment's model path is. What registration does with the files is :mod:`tiffin.assets.registry`'s; this
module parses requests and answers JSON shaped as ``az ml model show`` prints it.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse

from tiffin.assets.registry import AssetRegistry
from tiffin.errors import BadRequestError

from .operations import Operation

__all__ = ["ASSET_OPERATIONS", "ASSET_SCHEMAS", "COLLECTIONS", "AssetHandlers", "Flag", "asset_path_schema"]

COLLECTIONS: dict[str, str] = {"models": "model", "environments": "environment", "data": "data"}
"""The URL collection of each asset kind, as Azure's resource ids name them."""


@dataclass(frozen=True, slots=True)
class Flag:
    """An optional true/false query parameter (``?include_archived=true``)."""

    name: str
    default: bool
    description: str


INCLUDE_ARCHIVED = Flag("include_archived", False, "true: archived versions too.")

_KV = "/{kinds}/{name}/versions/{version}"

# One row per operation on a versioned kind; "{kinds}" and "{kind}" are filled in for models, environments and
# data, so each kind has routes (and OpenAPI operations) of its own: /models/{name}/versions, create_model...
_PER_KIND: tuple[Operation, ...] = (
    Operation(
        "GET",
        "/{kinds}",
        "list_{kinds}",
        "The latest version of each registered name (archived ones left out unless include_archived).",
        returns="AssetList",
        query=(INCLUDE_ARCHIVED,),  # type: ignore[arg-type]  # a Flag: openapi.py documents it as a boolean
    ),
    Operation(
        "POST",
        "/{kinds}/{name}/versions",
        "create_{kind}",
        "Register the next version (1 + the highest whole-number one) from the asset's Azure YAML fields.",
        body="AssetSpec",
        returns="Asset",
        status=201,
    ),
    Operation(
        "GET",
        "/{kinds}/{name}/versions",
        "list_{kind}_versions",
        "A name's versions, newest first.",
        returns="AssetList",
        query=(INCLUDE_ARCHIVED,),  # type: ignore[arg-type]
    ),
    Operation(
        "PUT",
        _KV,
        "put_{kind}_version",
        "Register this version: 201 new, 200 when the same content is registered there already, 409 other content.",
        body="AssetSpec",
        returns="Asset",
        status=200,
    ),
    Operation("GET", _KV, "get_{kind}_version", "One version (archived ones too).", returns="Asset"),
    Operation(
        "GET",
        "/{kinds}/{name}/labels/latest",
        "get_latest_{kind}",
        "The highest version not archived.",
        returns="Asset",
    ),
    Operation(
        "PATCH",
        _KV,
        "update_{kind}_version",
        "Change a version's description, tags or stage, or archive/restore it; the rest of a version is immutable.",
        body="AssetPatch",
        returns="Asset",
    ),
    Operation("DELETE", _KV, "delete_{kind}_version", "Delete a version; 409 while a deployment uses it.", status=204),
)
# The handler (AssetHandlers' method) of each per-kind row.
_HANDLERS = {
    "list_{kinds}": "list_assets",
    "create_{kind}": "create_asset",
    "list_{kind}_versions": "list_asset_versions",
    "put_{kind}_version": "put_asset",
    "get_{kind}_version": "get_asset",
    "get_latest_{kind}": "get_latest_asset",
    "update_{kind}_version": "update_asset",
    "delete_{kind}_version": "delete_asset",
}


def _for_kind(op: Operation, collection: str, kind: str) -> Operation:
    fill = {"kinds": collection, "kind": kind}
    return replace(op, path=op.path.replace("{kinds}", collection), name=op.name.format(**fill))


_OF_OPERATION: dict[str, tuple[str, str]] = {
    template.name.format(kinds=collection, kind=kind): (_HANDLERS[template.name], kind)
    for collection, kind in COLLECTIONS.items()
    for template in _PER_KIND
}

ASSET_OPERATIONS: tuple[Operation, ...] = (
    *(_for_kind(template, collection, kind) for collection, kind in COLLECTIONS.items() for template in _PER_KIND),
    Operation(
        "GET",
        "/models/{name}/versions/{version}/download",
        "download_model",
        "The model's files as a gzip'd tar (`az ml model download`).",
        returns="file",
    ),
    Operation("GET", "/computes", "list_computes", "Every compute, by name.", returns="ComputeList"),
    Operation(
        "PUT",
        "/computes/{name}",
        "put_compute",
        "Create (201) or replace (200) a compute from its Azure YAML fields.",
        body="ComputeSpec",
        returns="Compute",
    ),
    Operation("GET", "/computes/{name}", "get_compute", "One compute.", returns="Compute"),
    Operation(
        "PATCH",
        "/computes/{name}",
        "update_compute",
        "Change some fields (min_instances, max_instances, description, tags...).",
        body="ComputePatch",
        returns="Compute",
    ),
    Operation(
        "DELETE",
        "/computes/{name}",
        "delete_compute",
        "Delete a compute; 409 while a batch deployment uses it.",
        status=204,
    ),
)
"""The asset and compute routes, documented by :func:`tiffin.api.openapi.openapi_document` with the others."""

CREATED_OR_REPLACED = frozenset(
    {*(name for name, (handler, _) in _OF_OPERATION.items() if handler == "put_asset"), "put_compute"}
)
"""Operations answering 201 when they created the resource and 200 when it was there already."""

_OBJECT = {"type": "object"}
_ASSET_NAME = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"}
_ASSET_VERSION = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"}


def asset_path_schema(op: Operation, param: str) -> dict[str, Any] | None:
    """The schema of path parameter ``param`` of an asset route (None: not one of this module's)."""
    if op.name not in _OF_OPERATION and op.name != "download_model":
        return None
    if param == "name":
        return _ASSET_NAME
    if param == "version":
        return _ASSET_VERSION
    return None


ASSET_SCHEMAS: dict[str, dict[str, Any]] = {
    "AssetSpec": {
        "type": "object",
        "description": "A model, environment or data asset in Azure ML's YAML shape (model, environment, data "
        "schemas). `path` (and an environment's `conda_file`, `build.path`) are absolute paths on the server's "
        "machine, or URIs; the server stores a copy of the files (hard links where it can).",
        "additionalProperties": True,
        "properties": {
            "name": _ASSET_NAME,
            "version": _ASSET_VERSION,
            "description": {"type": "string"},
            "tags": _OBJECT,
            "properties": _OBJECT,
            "path": {"type": "string"},
            "type": {"type": "string"},
        },
    },
    "AssetPatch": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "description": {"type": ["string", "null"]},
            "tags": {"type": ["object", "null"]},
            "stage": {"type": ["string", "null"]},
            "archived": {"type": "boolean"},
        },
    },
    "Asset": {
        "type": "object",
        "description": "A registered version as `az ml model show` prints it: its fields, `id`, "
        "`creation_context`, and `archived: true` when archived.",
        "additionalProperties": True,
        "required": ["name", "version", "id"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "id": {"type": "string"},
            "path": {"type": "string"},
            "archived": {"type": "boolean"},
            "creation_context": {
                "type": "object",
                "properties": {
                    "created_at": {"type": "string", "format": "date-time"},
                    "last_modified_at": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
    "AssetList": {"type": "array", "items": {"$ref": "#/components/schemas/Asset"}},
    "ComputeSpec": {
        "type": "object",
        "description": "A compute in Azure ML's YAML shape (amlCompute, kubernetesCompute, computeInstance).",
        "additionalProperties": True,
        "properties": {
            "type": {"type": "string"},
            "min_instances": {"type": "integer", "minimum": 0},
            "max_instances": {"type": "integer", "minimum": 1},
        },
    },
    "ComputePatch": {"type": "object", "additionalProperties": True},
    "Compute": {
        "type": "object",
        "additionalProperties": True,
        "required": ["name", "id"],
        "properties": {
            "name": {"type": "string"},
            "id": {"type": "string"},
            "type": {"type": "string"},
            "current_node_count": {"type": "integer", "description": "Instances its running jobs use now (show)."},
            "jobs": {"type": "object", "description": "Its running and queued jobs, counted (show)."},
        },
    },
    "ComputeList": {"type": "array", "items": {"$ref": "#/components/schemas/Compute"}},
}

Handler = Callable[[Request], Awaitable[Any]]
JsonBody = Callable[[Request], Awaitable[dict[str, Any]]]


def _flag(request: Request, flag: Flag) -> bool:
    raw = request.query_params.get(flag.name)
    if raw is None:
        return flag.default
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise BadRequestError(f"query parameter '{flag.name}' must be true or false, not {raw!r}")


class AssetHandlers:
    """One coroutine per asset operation; ``routes`` gives each route's concrete paths and handlers."""

    def __init__(self, registry: AssetRegistry, json_body: JsonBody) -> None:
        self.registry = registry
        self._json_body = json_body

    def handler(self, op: Operation) -> Handler:
        """The coroutine serving ``op`` (one of :data:`ASSET_OPERATIONS`)."""
        if op.name in _OF_OPERATION:
            name, kind = _OF_OPERATION[op.name]
            return _bound(getattr(self, name), kind)
        handler: Handler = getattr(self, op.name)
        return handler

    async def list_assets(self, request: Request, kind: str) -> Any:
        archived = _flag(request, INCLUDE_ARCHIVED)
        return await run_in_threadpool(self.registry.list, kind, None, archived)

    async def list_asset_versions(self, request: Request, kind: str) -> Any:
        archived = _flag(request, INCLUDE_ARCHIVED)
        return await run_in_threadpool(self.registry.list, kind, request.path_params["name"], archived)

    async def create_asset(self, request: Request, kind: str) -> Any:
        body = await self._json_body(request)
        asset, _ = await run_in_threadpool(self.registry.register, kind, request.path_params["name"], None, body)
        return asset

    async def put_asset(self, request: Request, kind: str) -> Any:
        body = await self._json_body(request)
        params = request.path_params
        asset, created = await run_in_threadpool(self.registry.register, kind, params["name"], params["version"], body)
        return JSONResponse(asset, status_code=201 if created else 200)

    async def get_asset(self, request: Request, kind: str) -> Any:
        params = request.path_params
        return await run_in_threadpool(self.registry.get, kind, params["name"], params["version"])

    async def get_latest_asset(self, request: Request, kind: str) -> Any:
        return await run_in_threadpool(self.registry.latest, kind, request.path_params["name"])

    async def update_asset(self, request: Request, kind: str) -> Any:
        body = await self._json_body(request)
        params = request.path_params
        return await run_in_threadpool(self.registry.update, kind, params["name"], params["version"], body)

    async def delete_asset(self, request: Request, kind: str) -> Any:
        params = request.path_params
        await run_in_threadpool(self.registry.delete, kind, params["name"], params["version"])

    async def download_model(self, request: Request) -> Any:
        params = request.path_params
        stored = await run_in_threadpool(self.registry.model_files, params["name"], params["version"])
        archive = await run_in_threadpool(_tar_gz, stored, self.registry.scratch_dir())
        filename = f"{params['name']}-{params['version']}.tar.gz"
        return FileResponse(
            archive,
            media_type="application/gzip",
            filename=filename,
            background=BackgroundTask(_unlink, archive),
        )

    async def list_computes(self, request: Request) -> Any:
        return await run_in_threadpool(self.registry.list_computes)

    async def put_compute(self, request: Request) -> Any:
        body = await self._json_body(request)
        compute, created = await run_in_threadpool(self.registry.put_compute, request.path_params["name"], body)
        return JSONResponse(compute, status_code=201 if created else 200)

    async def get_compute(self, request: Request) -> Any:
        name = request.path_params["name"]
        compute = await run_in_threadpool(self.registry.get_compute, name)
        # Azure's current_node_count: the instances its running jobs use now (0 when none runs: scaled to zero).
        usage = (await run_in_threadpool(self.registry.store.compute_usage)).get(name)
        running, queued = (usage.running_jobs, usage.queued_jobs) if usage else (0, 0)
        return {
            **compute,
            "current_node_count": usage.current_node_count if usage else 0,
            "jobs": {"running": running, "queued": queued},
        }

    async def update_compute(self, request: Request) -> Any:
        body = await self._json_body(request)
        return await run_in_threadpool(self.registry.update_compute, request.path_params["name"], body)

    async def delete_compute(self, request: Request) -> Any:
        await run_in_threadpool(self.registry.delete_compute, request.path_params["name"])


def _bound(method: Callable[..., Awaitable[Any]], kind: str) -> Handler:
    async def handler(request: Request) -> Any:
        return await method(request, kind)

    return handler


def _tar_gz(stored: Path, scratch: Path) -> Path:
    """The stored file or folder as a gzip'd tar under its own name, in a temporary file (a model may not fit in
    memory); the caller removes it once sent."""
    scratch.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="download-", suffix=".tar.gz", dir=scratch)
    os.close(handle)
    try:
        with tarfile.open(name, "w:gz", compresslevel=1) as tar:
            # The store holds regular files and folders only (tiffin.assets.blobs), so nothing links out.
            tar.add(stored, arcname=stored.name)
    except BaseException:
        _unlink(Path(name))
        raise
    return Path(name)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
