"""Registered assets and computes, in the shapes of Azure ML's CLI (v2) YAML schemas.

``model.schema.json``, ``environment.schema.json``, ``data.schema.json`` and the compute schemas
(``amlCompute``, ``kubernetesCompute``, ``computeInstance``), field for field as azure-ai-ml's own
marshmallow schemas (``azure/ai/ml/_schema/assets/*.py``, ``_schema/compute/*.py``) define them, so a
file written for ``az ml model create -f`` loads unchanged. Keys Azure adds to ``show`` output are
accepted and reported as ignored; any other key is refused with a "did you mean" by the loader.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from ._base import Int, Name, SpecModel, Version, choice_of
from .common import Environment, Model, check_min_not_above_max

__all__ = [
    "ASSET_SPEC_KINDS",
    "AssetName",
    "AssetVersion",
    "Compute",
    "ComputeTier",
    "ComputeType",
    "DataAsset",
    "DataType",
    "EnvironmentAsset",
    "ModelAsset",
]

# What Azure accepts in an asset's name and version, as tiffin.assets.references parses them: the same
# rule here means every registered asset can be named by an azureml:NAME:VERSION reference.
_ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
_ASSET_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _check_asset_name(value: str) -> str:
    if not _ASSET_NAME.fullmatch(value):
        raise PydanticCustomError(
            "asset_name",
            "must start with a letter or digit and hold only letters, digits, '-', '_' and '.', at most 255 "
            "characters (got {got})",
            {"got": repr(value)},
        )
    return value


def _check_asset_version(value: str) -> str:
    if not _ASSET_VERSION.fullmatch(value):
        raise PydanticCustomError(
            "asset_version",
            "must start with a letter or digit and hold only letters, digits, '-', '_' and '.', at most 128 "
            "characters, such as 1 or 2024.01 (got {got})",
            {"got": repr(value)},
        )
    return value


AssetName = Annotated[str, AfterValidator(_check_asset_name)]
"""A registered asset's name: what ``azureml:NAME:VERSION`` can refer to."""

AssetVersion = Annotated[Version, AfterValidator(_check_asset_version)]
"""A registered asset's version: YAML numbers are kept as their text (``version: 1`` is ``"1"``)."""

# Keys `az ml <asset> show` prints that are no input (azure-ai-ml's dump_only fields), and tiffin's own.
_ASSET_READ_ONLY = frozenset({"id", "creation_context", "latest_version", "archived"})


class ModelAsset(Model):
    """A registered model (``az ml model create``): ``path`` is a local file or folder, or a URI."""

    kind_label: ClassVar[str] = "model"
    AZURE_READ_ONLY = _ASSET_READ_ONLY | {"job_name"}
    AZURE_UNMODELLED = frozenset(
        {
            "utc_time_created",
            "datastore",
            "intellectual_property",
            "auto_delete_setting",
            "default_deployment_template",
            "allowed_deployment_templates",
        }
    )

    name: AssetName  # type: ignore[assignment]  # required here, optional inline in a deployment
    version: AssetVersion | None = None


_CONDA_KEYS = ("channels", "dependencies")


class EnvironmentAsset(Environment):
    """A registered environment (``az ml environment create``): an image, a conda file, or a build context.

    Registered here, built in a later step: ``image`` and ``os_type`` are kept and reported as ignored.
    ``conda_file`` is kept as the conda YAML's content once registered, as Azure's ``show`` prints it.
    """

    kind_label: ClassVar[str] = "environment"
    LOCAL_IGNORED = frozenset({"image", "os_type"})
    AZURE_READ_ONLY = _ASSET_READ_ONLY
    AZURE_UNMODELLED = frozenset({"datastore", "intellectual_property", "auto_delete_setting", "stage"})

    name: AssetName  # type: ignore[assignment]
    version: AssetVersion | None = None

    @model_validator(mode="before")
    @classmethod
    def _not_a_conda_file(cls, data: Any) -> Any:
        # azure-ai-ml refuses these too: a conda file given where the environment's own YAML belongs.
        if isinstance(data, dict):
            for key in _CONDA_KEYS:
                if key in data:
                    raise PydanticCustomError(
                        "conda_in_environment",
                        "belongs in a conda file, not in the environment's YAML; save the conda YAML as its own "
                        "file and name it with 'conda_file: conda.yml'",
                        {"field_suffix": key},
                    )
        return data


DataType = Literal["uri_file", "uri_folder", "mltable"]
"""What a data asset's ``path`` holds: one file, a folder, or an MLTable folder."""


class DataAsset(SpecModel):
    """A registered data asset (``az ml data create``): a local file or folder, an ``azureml://datastores/``
    path or an ``http(s)://`` URL. ``type`` defaults to ``uri_folder``, as Azure's."""

    kind_label: ClassVar[str] = "data asset"
    PATH_FIELDS = ("path",)
    AZURE_READ_ONLY = _ASSET_READ_ONLY
    AZURE_UNMODELLED = frozenset({"datastore", "intellectual_property", "auto_delete_setting", "stage"})

    name: AssetName
    version: AssetVersion | None = None
    description: str | None = None
    tags: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    path: str
    type: Annotated[DataType, BeforeValidator(choice_of(DataType))] = "uri_folder"


ComputeType = Literal["amlcompute", "kubernetes", "computeinstance"]
"""The compute kinds tiffin keeps records of (Azure's ``type`` values)."""

ComputeTier = Literal["dedicated", "low_priority"]
"""An AmlCompute cluster's VM priority."""


class Compute(SpecModel):
    """A compute (``az ml compute create``): locally a record whose ``max_instances`` caps the instances of a
    batch deployment on it, and whose ``min_instances: 0`` means workers exist only while jobs run.

    One class for Azure's three schemas (``type`` says which); the fields of one type given for another are
    refused as Azure's CLI refuses them. Defaults are Azure's YAML reference ones (``max_instances: 1``).
    """

    kind_label: ClassVar[str] = "compute"
    LOCAL_IGNORED = frozenset(
        {"location", "size", "tier", "idle_time_before_scale_down", "ssh_public_access_enabled", "namespace"}
    )
    # current_node_count and jobs: what `compute show` adds about the jobs running on it now.
    AZURE_READ_ONLY = frozenset(
        {"id", "provisioning_state", "provisioning_errors", "created_on", "state", "last_operation", "services"}
        | {"current_node_count", "jobs"}
    )
    AZURE_UNMODELLED = frozenset(
        {
            "resource_id",
            "ssh_settings",
            "network_settings",
            "identity",
            "create_on_behalf_of",
            "schedules",
            "setup_scripts",
            "idle_time_before_shutdown",
            "idle_time_before_shutdown_minutes",
            "enable_node_public_ip",
            "custom_applications",
            "enable_sso",
            "enable_root_access",
            "release_quota_on_stop",
            "enable_os_patching",
        }
    )
    _TYPE_ONLY: ClassVar[dict[str, frozenset[str]]] = {
        "min_instances": frozenset({"amlcompute"}),
        "max_instances": frozenset({"amlcompute"}),
        "tier": frozenset({"amlcompute"}),
        "idle_time_before_scale_down": frozenset({"amlcompute"}),
        "namespace": frozenset({"kubernetes"}),
    }

    name: Name
    type: Annotated[ComputeType, BeforeValidator(choice_of(ComputeType))] = "amlcompute"
    description: str | None = None
    tags: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    location: str | None = None
    size: str | None = None
    tier: Annotated[ComputeTier, BeforeValidator(choice_of(ComputeTier))] | None = None
    min_instances: Int = Field(0, ge=0)
    max_instances: Int = Field(1, ge=1)
    idle_time_before_scale_down: Int | None = Field(None, ge=0)
    ssh_public_access_enabled: bool | None = None
    namespace: str | None = None

    @model_validator(mode="after")
    def _rules(self) -> Compute:
        for field, types in self._TYPE_ONLY.items():
            if field in self.model_fields_set and self.type not in types:
                raise PydanticCustomError(
                    "compute_field",
                    "is a field of {types} computes, not of type {type}",
                    {"types": " and ".join(sorted(types)), "type": self.type, "field_suffix": field},
                )
        check_min_not_above_max(self.min_instances, self.max_instances)
        return self


ASSET_SPEC_KINDS: tuple[type[SpecModel], ...] = (ModelAsset, EnvironmentAsset, DataAsset, Compute)
"""The asset and compute spec classes :func:`~tiffin.specs.load_spec` accepts as ``kind``."""
