"""Azure-shaped resource ids for everything tiffin shows (pure).

Azure's ``show`` output carries an ``id`` such as
``/subscriptions/S/resourceGroups/G/providers/Microsoft.MachineLearningServices/workspaces/W/onlineEndpoints/E``
and scripts pass it on (``--query id -o tsv``), most often as an asset reference
(``model: azureml:/subscriptions/.../models/NAME/versions/V``). tiffin has no subscription, resource group or
workspace, so one fixed set stands for them: every id is stable for its resource, and an id of a model,
environment or data version is accepted back wherever a reference is (:func:`asset_of_id`).
"""

from __future__ import annotations

import re

__all__ = [
    "RESOURCE_GROUP",
    "SUBSCRIPTION",
    "WORKSPACE",
    "WORKSPACE_ID",
    "asset_id",
    "asset_of_id",
    "batch_deployment_id",
    "batch_endpoint_id",
    "compute_id",
    "job_id",
    "online_deployment_id",
    "online_endpoint_id",
]

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "tiffin"
WORKSPACE = "tiffin"
WORKSPACE_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    f"/providers/Microsoft.MachineLearningServices/workspaces/{WORKSPACE}"
)
"""The workspace every tiffin resource id starts with."""

# Azure's collection names in ids, by the CLI's singular asset kinds.
_COLLECTIONS = {"model": "models", "environment": "environments", "data": "data"}
_KINDS = {collection: kind for kind, collection in _COLLECTIONS.items()}
# Any workspace's id, not only tiffin's: a script may pass on an id copied from Azure.
_ASSET_ID = re.compile(
    r"/subscriptions/[^/]+/resource[gG]roups/[^/]+/providers/Microsoft\.MachineLearningServices/workspaces/[^/]+"
    r"/(?P<collection>models|environments|data)/(?P<name>[^/]+)/versions/(?P<version>[^/]+)"
)


def online_endpoint_id(name: str) -> str:
    """``.../onlineEndpoints/NAME``."""
    return f"{WORKSPACE_ID}/onlineEndpoints/{name}"


def online_deployment_id(endpoint: str, name: str) -> str:
    """``.../onlineEndpoints/ENDPOINT/deployments/NAME``."""
    return f"{online_endpoint_id(endpoint)}/deployments/{name}"


def batch_endpoint_id(name: str) -> str:
    """``.../batchEndpoints/NAME``."""
    return f"{WORKSPACE_ID}/batchEndpoints/{name}"


def batch_deployment_id(endpoint: str, name: str) -> str:
    """``.../batchEndpoints/ENDPOINT/deployments/NAME``."""
    return f"{batch_endpoint_id(endpoint)}/deployments/{name}"


def job_id(name: str) -> str:
    """``.../jobs/NAME`` (batch scoring jobs are workspace jobs on Azure too)."""
    return f"{WORKSPACE_ID}/jobs/{name}"


def asset_id(kind: str, name: str, version: str) -> str:
    """``.../models/NAME/versions/V`` (``kind`` is ``model``, ``environment`` or ``data``)."""
    if kind not in _COLLECTIONS:
        raise ValueError(f"kind must be one of {', '.join(_COLLECTIONS)}, not {kind!r}")
    return f"{WORKSPACE_ID}/{_COLLECTIONS[kind]}/{name}/versions/{version}"


def compute_id(name: str) -> str:
    """``.../computes/NAME``."""
    return f"{WORKSPACE_ID}/computes/{name}"


def asset_of_id(text: str) -> tuple[str, str, str] | None:
    """``(kind, name, version)`` of an asset version's id as ``show --query id -o tsv`` prints it (with or without
    the ``azureml:`` prefix), or None when ``text`` is no such id."""
    match = _ASSET_ID.fullmatch(text.removeprefix("azureml:"))
    if match is None:
        return None
    return _KINDS[match.group("collection")], match.group("name"), match.group("version")
