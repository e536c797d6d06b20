"""Parts shared by online and batch specs: model, code, environment, probes, scaling, resources.

Field names, defaults and shapes follow Azure ML's CLI (v2) YAML schemas, so that a file copied
from Azure's documentation or the azureml-examples repository loads unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Discriminator, Field, PlainValidator, Tag, model_validator
from pydantic_core import PydanticCustomError

from ._base import (
    INLINE_TAG,
    REFERENCE_TAG,
    Int,
    SpecModel,
    Version,
    choice_key,
    choice_of,
    ref_or_inline,
    ref_or_inline_tag,
)

__all__ = [
    "BatchRetrySettings",
    "BuildContext",
    "CodeConfiguration",
    "DefaultScaleSettings",
    "Environment",
    "EnvironmentRef",
    "InferenceConfig",
    "Model",
    "ModelRef",
    "ModelType",
    "OsType",
    "ProbeSettings",
    "RequestSettings",
    "ResourceConfiguration",
    "Route",
    "ScaleSettings",
    "TargetConcurrencyScaleSettings",
    "TargetUtilizationScaleSettings",
    "check_min_not_above_max",
]

ModelType = Literal["custom_model", "mlflow_model", "triton_model"]
"""Storage formats of a model, as Azure names them."""

OsType = Literal["linux", "windows"]
"""Operating system of an environment's image."""


class Model(SpecModel):
    """An inline model (Azure's model YAML schema); ``path`` is made absolute by the loader."""

    PATH_FIELDS = ("path",)
    # Azure's model schema: what `az ml model show` adds, and fields of a registered model's upload.
    AZURE_READ_ONLY = frozenset({"id", "creation_context", "job_name", "latest_version"})
    AZURE_UNMODELLED = frozenset({"utc_time_created", "datastore", "intellectual_property"})

    name: str | None = None
    version: Version | None = None
    description: str | None = None
    tags: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    path: str
    type: Annotated[ModelType, BeforeValidator(choice_of(ModelType))] = "custom_model"
    flavors: dict[str, Any] | None = None
    stage: str | None = None


class CodeConfiguration(SpecModel):
    """Scoring code: the folder ``code`` (made absolute by the loader) and the script in it."""

    PATH_FIELDS = ("code",)

    code: str
    scoring_script: str


class BuildContext(SpecModel):
    """A Docker build context of an environment; tiffin does not build images."""

    PATH_FIELDS = ("path",)

    path: str
    dockerfile_path: str = "Dockerfile"


class Route(SpecModel):
    """A port and path a custom container serves a probe or scoring route on."""

    path: str
    port: Int = Field(ge=1, le=65535)


class InferenceConfig(SpecModel):
    """The routes of a custom inference container."""

    liveness_route: Route | None = None
    readiness_route: Route | None = None
    scoring_route: Route | None = None


def _path_or_mapping(value: Any) -> str | dict[str, Any]:
    # A conda file is either a path or, as Azure also accepts, the conda YAML itself inline.
    if isinstance(value, str | dict):
        return value
    raise PydanticCustomError(
        "path_or_mapping",
        "must be the path of a conda YAML file or an inline conda mapping (got {got})",
        {"got": repr(value)},
    )


class Environment(SpecModel):
    """An inline environment (Azure's environment YAML schema).

    Its ``conda_file`` is built into a Python environment the deployment runs in (:mod:`tiffin.environments`);
    an image alone is not run, so ``image`` is reported as ignored unless it is one of Azure's curated images,
    which stands for that curated environment. An image or build context with ``inference_config`` (a custom
    container) runs on a container engine (:mod:`tiffin.containers.run`); otherwise build context and routes are
    kept for round trips but reported as ignored.
    """

    LOCAL_IGNORED = frozenset({"image", "build", "inference_config", "os_type"})
    PATH_FIELDS = ("conda_file",)
    AZURE_READ_ONLY = frozenset({"id", "creation_context", "latest_version", "auto_delete_setting"})
    AZURE_UNMODELLED = frozenset({"datastore", "intellectual_property"})

    name: str | None = None
    version: Version | None = None
    description: str | None = None
    tags: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    image: str | None = None
    conda_file: Annotated[str | dict[str, Any], PlainValidator(_path_or_mapping)] | None = None
    build: BuildContext | None = None
    inference_config: InferenceConfig | None = None
    os_type: Annotated[OsType, BeforeValidator(choice_of(OsType))] | None = None
    command: str | list[str] | None = None
    """tiffin's addition for bring-your-own-server deployments where no container engine runs: the
    command that serves HTTP on ``$PORT``. With it, ``inference_config`` is honoured, not ignored."""

    def ignored_here(self) -> list[str]:
        """As :meth:`SpecModel.ignored_here`; a ``command`` makes ``inference_config`` meaningful here."""
        out = super().ignored_here()
        if self.image and not self.conda_file:
            from tiffin.environments.sources import curated_for_image

            if curated_for_image(self.image) is not None:
                out = [n for n in out if n != "image"]
        if self.inference_config and (self.image or self.build) and not self.command:
            # A custom container: run on the container engine (tiffin.containers.run), refused where none answers.
            return [n for n in out if n not in ("image", "build", "inference_config")]
        return [n for n in out if n != "inference_config"] if self.command else out


ModelRef = Annotated[
    Annotated[str, Tag(REFERENCE_TAG)] | Annotated[Model, Tag(INLINE_TAG)],
    Discriminator(ref_or_inline_tag),
    BeforeValidator(ref_or_inline("model", "azureml:my-model:1")),
]
"""A model field: a reference string such as ``azureml:my-model:1``, or an inline :class:`Model`."""

EnvironmentRef = Annotated[
    Annotated[str, Tag(REFERENCE_TAG)] | Annotated[Environment, Tag(INLINE_TAG)],
    Discriminator(ref_or_inline_tag),
    BeforeValidator(ref_or_inline("environment", "azureml:my-env:1")),
]
"""An environment field: a reference string, or an inline :class:`Environment`."""


class ProbeSettings(SpecModel):
    """Liveness or readiness probe timing, in seconds; defaults are Azure's."""

    initial_delay: Int = Field(10, ge=1)
    period: Int = Field(10, ge=1)
    timeout: Int = Field(2, ge=1)
    success_threshold: Int = Field(1, ge=1)
    failure_threshold: Int = Field(30, ge=1)


class RequestSettings(SpecModel):
    """Scoring request limits of an online deployment; defaults are Azure's."""

    request_timeout_ms: Int = Field(5000, ge=1)
    max_concurrent_requests_per_instance: Int = Field(1, ge=1)
    # Deprecated by Azure in favour of request_timeout_ms, still accepted there and here.
    max_queue_wait_ms: Int = Field(500, ge=0)


class DefaultScaleSettings(SpecModel):
    """Manual scaling: the deployment runs ``instance_count`` replicas."""

    type: Literal["default"] = "default"


class TargetUtilizationScaleSettings(SpecModel):
    """Azure's Kubernetes autoscaling by CPU utilisation per instance; tiffin serve honours it (docs/autoscale.md)."""

    type: Literal["target_utilization"] = "target_utilization"
    min_instances: Int = Field(1, ge=0)
    max_instances: Int = Field(1, ge=1)
    polling_interval: Int = Field(1, ge=1)
    target_utilization_percentage: Int = Field(70, ge=1, le=100)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> TargetUtilizationScaleSettings:
        check_min_not_above_max(self.min_instances, self.max_instances)
        return self


class TargetConcurrencyScaleSettings(SpecModel):
    """tiffin's autoscaling by requests in flight per instance (as Knative's KPA), with a panic mode for bursts."""

    type: Literal["target_concurrency"] = "target_concurrency"
    min_instances: Int = Field(1, ge=0)
    max_instances: Int = Field(1, ge=1)
    polling_interval: Int = Field(1, ge=1)
    target_concurrency_per_instance: float = Field(1.0, gt=0)
    stable_window: Int = Field(60, ge=1)
    panic_window: Int = Field(6, ge=1)
    # Panic mode starts when the panic window's average asks for this share of the current instances.
    panic_threshold_percentage: float = Field(200.0, gt=100)
    scale_up_delay: Int = Field(0, ge=0)
    scale_down_delay: Int = Field(30, ge=0)

    @model_validator(mode="after")
    def _min_not_above_max(self) -> TargetConcurrencyScaleSettings:
        check_min_not_above_max(self.min_instances, self.max_instances)
        return self


_SCALE_TYPES = ("default", "target_utilization", "target_concurrency")


def check_min_not_above_max(min_instances: int, max_instances: int) -> None:
    """The error an autoscale setting or a compute gets for ``min_instances`` above ``max_instances``."""
    if min_instances > max_instances:
        raise PydanticCustomError(
            "min_above_max",
            "must not be above max_instances ({max}) (got {got})",
            {"max": max_instances, "got": min_instances, "field_suffix": "min_instances"},
        )


def _check_scale_settings(value: Any) -> Any:
    # Checked before the union so that a wrong `type` is reported as such, with the allowed values,
    # instead of as a failed union.
    if not isinstance(value, dict):
        return value
    given = value.get("type", "default")
    kind = next((name for name in _SCALE_TYPES if choice_key(name) == choice_key(given)), None)
    if kind is None:
        raise PydanticCustomError(
            "literal_error",
            "Input should be 'default', 'target_utilization' or 'target_concurrency'",
            {
                "expected": "'default', 'target_utilization' or 'target_concurrency'",
                "got": given,
                "field_suffix": "type",
            },
        )
    return {**value, "type": kind}


def _scale_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"<{kind}>" if kind in ("target_utilization", "target_concurrency") else "<default>"


ScaleSettings = Annotated[
    Annotated[DefaultScaleSettings, Tag("<default>")]
    | Annotated[TargetUtilizationScaleSettings, Tag("<target_utilization>")]
    | Annotated[TargetConcurrencyScaleSettings, Tag("<target_concurrency>")],
    Discriminator(_scale_tag),
    BeforeValidator(_check_scale_settings),
]
"""Scale settings, chosen by ``type`` (``default``, ``target_utilization`` or ``target_concurrency``)."""


class ResourceConfiguration(SpecModel):
    """Compute resources of a batch deployment; only ``instance_count`` matters locally."""

    LOCAL_IGNORED = frozenset({"instance_type", "properties"})
    # Azure's job resource configuration: Docker and placement settings of its compute cluster.
    AZURE_UNMODELLED = frozenset({"shm_size", "docker_args", "locations", "max_instance_count"})

    instance_count: Int = Field(1, ge=1)
    instance_type: str | None = None
    properties: dict[str, Any] | None = None


class BatchRetrySettings(SpecModel):
    """How often a failed or timed-out mini-batch is retried, and its timeout in seconds."""

    max_retries: Int = Field(3, ge=0)
    timeout: Int = Field(30, ge=1)
