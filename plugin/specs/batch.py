"""Batch endpoints and deployments, in Azure ML's batch YAML shapes.

Azure has two shapes for a model batch deployment: the older one with the scoring settings
(``mini_batch_size``, ``retry_settings``...) at the top level, and the newer ``type: model`` one
with them under ``settings:``. Both load into the same :class:`BatchDeployment`, whose settings
live in :attr:`BatchDeployment.settings` and are also readable as attributes of the deployment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from tiffin.errors import SpecError

from ._base import EnvVars, Int, Name, SpecModel, choice_key, choice_of
from .common import BatchRetrySettings, CodeConfiguration, EnvironmentRef, ModelRef, ResourceConfiguration

__all__ = [
    "JOB_SETTING_KEYS",
    "SETTINGS_KEYS",
    "BatchAuthMode",
    "BatchDeployment",
    "BatchDeploymentSettings",
    "BatchEndpoint",
    "BatchEndpointDefaults",
    "LoggingLevel",
    "OutputAction",
    "with_job_settings",
]

BatchAuthMode = Literal["key", "aml_token", "aad_token"]
"""How callers of a batch endpoint authenticate (Azure itself only offers ``aad_token``)."""

OutputAction = Literal["append_row", "summary_only"]
"""``append_row``: the rows ``run()`` returns go to one output file; ``summary_only``: they do not."""

LoggingLevel = Literal["warning", "info", "debug"]
"""Log verbosity of a batch scoring job."""

SETTINGS_KEYS: tuple[str, ...] = (
    "mini_batch_size",
    "max_concurrency_per_instance",
    "output_action",
    "output_file_name",
    "retry_settings",
    "error_threshold",
    "logging_level",
    "environment_variables",
)
"""Keys that sit under ``settings:`` in the newer shape and at the top level in the older one."""

_INSTANCE_COUNT = ("instance_count", "resources.instance_count", "compute.instance_count")
JOB_SETTING_KEYS: tuple[str, ...] = (*SETTINGS_KEYS, "instance_count")
"""What one job may change of its deployment (Azure's ``invoke --mini-batch-size/--instance-count/--set``)."""


def _check_file_name(value: str) -> str:
    """A file name of its own: the output lands in the job's (or output_path's) folder, never elsewhere."""
    if (
        not value
        or value in (".", "..")
        or len(value) > 200
        or any(sep in value for sep in ("/", "\\"))
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in value)
    ):
        raise PydanticCustomError(
            "file_name",
            "must be a file name, not a path: no '/' or '\\', not '.' or '..', no control characters, at most "
            "200 characters (got {got}); choose the folder with --output-path",
            {"got": repr(value)},
        )
    return value


FileName = Annotated[str, AfterValidator(_check_file_name)]
"""A plain file name (``predictions.csv``), never a path."""

# Keys `show` output adds (Azure's, and tiffin's own), so that feeding it back is not refused as typos.
_READ_ONLY = frozenset(
    {"id", "provisioning_state", "scoring_uri", "swagger_uri", "openapi_uri", "location"}
    | {"created_at", "updated_at", "reason"}
)


class BatchEndpointDefaults(SpecModel):
    """Defaults of a batch endpoint: the deployment that runs jobs that name none."""

    deployment_name: Name | None = None


class BatchEndpoint(SpecModel):
    """A batch endpoint: a name under which scoring jobs are started, run by one of its deployments."""

    kind_label: ClassVar[str] = "batch endpoint"
    AZURE_READ_ONLY = _READ_ONLY
    # Azure's endpoint schema has an identity for batch endpoints too; earlier CLI v2 files carry `type: batch`.
    AZURE_UNMODELLED = frozenset({"identity", "type"})

    name: Name
    description: str | None = None
    tags: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    auth_mode: Annotated[BatchAuthMode, BeforeValidator(choice_of(BatchAuthMode))] = "aad_token"
    defaults: BatchEndpointDefaults = Field(default_factory=BatchEndpointDefaults)


class BatchDeploymentSettings(SpecModel):
    """How a batch deployment splits, scores and writes out its input; defaults are Azure's."""

    mini_batch_size: Int = Field(10, ge=1)
    max_concurrency_per_instance: Int = Field(1, ge=1)
    output_action: Annotated[OutputAction, BeforeValidator(choice_of(OutputAction))] = "append_row"
    output_file_name: FileName = "predictions.csv"
    retry_settings: BatchRetrySettings = Field(default_factory=BatchRetrySettings)
    # -1: any number of failed files is tolerated.
    error_threshold: Int = Field(-1, ge=-1)
    logging_level: Annotated[LoggingLevel, BeforeValidator(choice_of(LoggingLevel))] = "info"
    environment_variables: EnvVars = Field(default_factory=dict)


def _conflict(key: str, top: Any, nested: Any, where: str) -> PydanticCustomError:
    return PydanticCustomError(
        "shape_conflict",
        "given twice with different values, {top} and {nested} under {where}; keep one",
        {"top": repr(top), "nested": repr(nested), "where": where, "field_suffix": key},
    )


class BatchDeployment(SpecModel):
    """A model plus scoring code that batch jobs of an endpoint run on, in either of Azure's shapes.

    ``type: pipeline`` (pipeline component) deployments are refused. ``endpoint_name`` may be
    left out of the file when the caller supplies it, so callers must check it.
    """

    kind_label: ClassVar[str] = "batch deployment"
    LOCAL_IGNORED = frozenset({"compute"})
    REFERENCE_IGNORED = frozenset({"environment"})
    AZURE_READ_ONLY = _READ_ONLY | {"creation_context"}

    @classmethod
    def field_names(cls) -> list[str]:
        """As :meth:`SpecModel.field_names`, plus the settings the older shape writes at the top level."""
        return [*super().field_names(), *SETTINGS_KEYS]

    name: Name
    endpoint_name: Name | None = None
    type: Annotated[Literal["model"], BeforeValidator(choice_of(Literal["model"]))] = "model"
    description: str | None = None
    tags: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    model: ModelRef
    code_configuration: CodeConfiguration | None = None
    environment: EnvironmentRef | None = None
    compute: str | None = None
    resources: ResourceConfiguration = Field(default_factory=ResourceConfiguration)
    settings: BatchDeploymentSettings = Field(default_factory=BatchDeploymentSettings)

    @model_validator(mode="before")
    @classmethod
    def _one_shape(cls, data: Any) -> Any:
        """Refuse pipeline deployments; move the older shape's top-level settings under ``settings``."""
        if not isinstance(data, dict):
            return data
        kind = data.get("type")
        if choice_key(kind) == "pipeline" or ("component" in data and kind is None):
            raise PydanticCustomError(
                "pipeline_unsupported",
                "pipeline component deployments are not supported by tiffin; "
                "deploy a model instead (type: model, with model and code_configuration)",
                {"field_suffix": "type" if kind is not None else "component"},
            )
        settings = data.get("settings", {})
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            return data  # reported by field validation, with the field's name
        data = dict(data)
        settings = dict(settings)
        for key in SETTINGS_KEYS:
            if key not in data:
                continue
            value = data.pop(key)
            if key in settings and settings[key] != value:
                raise _conflict(key, value, settings[key], "settings")
            settings[key] = value
        # Azure's SDK also reads settings.instance_count, a second spelling of resources.instance_count.
        if "instance_count" in settings:
            count = settings.pop("instance_count")
            resources = data.get("resources") or {}
            if isinstance(resources, dict):
                earlier = resources.get("instance_count", count)
                if earlier != count:
                    raise _conflict("settings.instance_count", count, earlier, "resources")
                data["resources"] = {**resources, "instance_count": count}
        data["settings"] = settings
        return data

    # Read-through accessors, so callers need not care which shape the file used.

    @property
    def instance_count(self) -> int:
        """Number of workers a job of this deployment runs on (``resources.instance_count``)."""
        return self.resources.instance_count

    @property
    def mini_batch_size(self) -> int:
        """Files (or rows) passed to one ``run()`` call."""
        return self.settings.mini_batch_size

    @property
    def max_concurrency_per_instance(self) -> int:
        """Parallel ``run()`` calls per worker."""
        return self.settings.max_concurrency_per_instance

    @property
    def output_action(self) -> OutputAction:
        """Whether returned rows are written out (``append_row``) or not (``summary_only``)."""
        return self.settings.output_action

    @property
    def output_file_name(self) -> str:
        """Name of the output file of ``append_row`` jobs."""
        return self.settings.output_file_name

    @property
    def retry_settings(self) -> BatchRetrySettings:
        """Retries and timeout of one mini-batch."""
        return self.settings.retry_settings

    @property
    def error_threshold(self) -> int:
        """Failed files tolerated before a job is stopped; -1 tolerates any number."""
        return self.settings.error_threshold

    @property
    def logging_level(self) -> LoggingLevel:
        """Log verbosity of the job."""
        return self.settings.logging_level

    @property
    def environment_variables(self) -> dict[str, str]:
        """Environment variables set for the scoring code."""
        return self.settings.environment_variables


def with_job_settings(spec: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A batch deployment's spec (``to_yaml_dict`` shape) with one job's settings changed, not yet validated.

    Keys are settings (``mini_batch_size``, ``output_file_name``, ``retry_settings.max_retries``,
    ``environment_variables.NAME``..., with or without a ``settings.`` prefix) or ``instance_count``
    (also ``resources.``/``compute.instance_count``, as Azure's SDK spells it in ``params_override``).
    A mapping given for ``retry_settings`` or ``environment_variables`` is merged into the deployment's.
    """
    result = dict(spec)
    settings = dict(result.get("settings") or {})
    resources = dict(result.get("resources") or {})
    for raw_key, value in overrides.items():
        key = str(raw_key).removeprefix("settings.")
        head, _, rest = key.partition(".")
        if key in _INSTANCE_COUNT:
            resources["instance_count"] = value
        elif head in SETTINGS_KEYS and head not in ("retry_settings", "environment_variables") and rest:
            raise SpecError(f"'{head}' has no field '{rest}'", field=str(raw_key))
        elif head in SETTINGS_KEYS and rest:
            settings[head] = {**(settings.get(head) or {}), rest: value}
        elif head in SETTINGS_KEYS and isinstance(value, Mapping) and isinstance(settings.get(head), Mapping):
            settings[head] = {**settings[head], **value}
        elif head in SETTINGS_KEYS:
            settings[head] = value
        else:
            raise SpecError(f"cannot be set for one job; set one of {', '.join(JOB_SETTING_KEYS)}", field=str(raw_key))
    result["settings"] = settings
    result["resources"] = resources
    return result
