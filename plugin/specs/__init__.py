"""Azure-ML-compatible endpoint and deployment specs: pydantic models plus the YAML loader.

YAML files written for Azure ML's CLI (v2) load unchanged, ``$schema`` line included::

    from tiffin.specs import OnlineDeployment, load_spec

    loaded = load_spec("blue-deployment.yml", OnlineDeployment, overrides=["instance_count=2"])
    for line in loaded.warnings():  # e.g. "ignored locally: instance_type, environment.image"
        print(line)
    deployment = loaded.spec

Invalid files raise :class:`tiffin.errors.SpecError` naming the file and the field.
"""

from ._base import SpecModel, is_remote_path
from .assets import ASSET_SPEC_KINDS, Compute, DataAsset, EnvironmentAsset, ModelAsset
from .batch import (
    JOB_SETTING_KEYS,
    SETTINGS_KEYS,
    BatchAuthMode,
    BatchDeployment,
    BatchDeploymentSettings,
    BatchEndpoint,
    BatchEndpointDefaults,
    LoggingLevel,
    OutputAction,
    with_job_settings,
)
from .common import (
    BatchRetrySettings,
    BuildContext,
    CodeConfiguration,
    DefaultScaleSettings,
    Environment,
    EnvironmentRef,
    InferenceConfig,
    Model,
    ModelRef,
    ModelType,
    ProbeSettings,
    RequestSettings,
    ResourceConfiguration,
    Route,
    ScaleSettings,
    TargetConcurrencyScaleSettings,
    TargetUtilizationScaleSettings,
)
from .loader import SPEC_KINDS, LoadedSpec, Spec, kind_from_schema, load_spec, parse_spec
from .online import OnlineAuthMode, OnlineDeployment, OnlineEndpoint
from .overrides import apply_overrides
from .problems import translate_validation_error
from .strict_yaml import read_yaml

__all__ = [
    "ASSET_SPEC_KINDS",
    "JOB_SETTING_KEYS",
    "SETTINGS_KEYS",
    "SPEC_KINDS",
    "BatchAuthMode",
    "BatchDeployment",
    "BatchDeploymentSettings",
    "BatchEndpoint",
    "BatchEndpointDefaults",
    "BatchRetrySettings",
    "BuildContext",
    "CodeConfiguration",
    "Compute",
    "DataAsset",
    "DefaultScaleSettings",
    "Environment",
    "EnvironmentAsset",
    "EnvironmentRef",
    "InferenceConfig",
    "LoadedSpec",
    "LoggingLevel",
    "Model",
    "ModelAsset",
    "ModelRef",
    "ModelType",
    "OnlineAuthMode",
    "OnlineDeployment",
    "OnlineEndpoint",
    "OutputAction",
    "ProbeSettings",
    "RequestSettings",
    "ResourceConfiguration",
    "Route",
    "ScaleSettings",
    "Spec",
    "SpecModel",
    "TargetConcurrencyScaleSettings",
    "TargetUtilizationScaleSettings",
    "apply_overrides",
    "is_remote_path",
    "kind_from_schema",
    "load_spec",
    "parse_spec",
    "read_yaml",
    "translate_validation_error",
    "with_job_settings",
]
