"""Online endpoints and deployments, in Azure ML's managed/Kubernetes online YAML shapes."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from ._base import EnvVars, Int, Name, Percent, SpecModel, choice_of
from .common import (
    CodeConfiguration,
    DefaultScaleSettings,
    Environment,
    EnvironmentRef,
    ModelRef,
    ProbeSettings,
    RequestSettings,
    ScaleSettings,
)
from .traffic import traffic_problem

__all__ = ["DeploymentType", "NetworkAccess", "OnlineAuthMode", "OnlineDeployment", "OnlineEndpoint"]

_NetworkAccessName = Literal["enabled", "disabled"]
NetworkAccess = Annotated[_NetworkAccessName, BeforeValidator(choice_of(_NetworkAccessName))]
"""Whether a network path is open (``enabled``) or private-link only (``disabled``)."""

DeploymentType = Literal["managed", "kubernetes"]
"""Where Azure runs an online deployment; tiffin runs both kinds locally."""

OnlineAuthMode = Literal["key", "aml_token", "aad_token"]
"""How callers of an online endpoint authenticate."""

# Keys Azure adds to `az ml ... show` output, and tiffin to its own; feeding that output back (the CLI's
# `update --set` does, as azure-ai-ml users do with `get` results) must not be refused as typos.
_SHOWN_BY_TIFFIN = frozenset({"created_at", "updated_at"})
_ENDPOINT_READ_ONLY = _SHOWN_BY_TIFFIN | {
    "id", "provisioning_state", "scoring_uri", "swagger_uri", "openapi_uri", "location", "creation_context"
}  # fmt: skip
_DEPLOYMENT_READ_ONLY = _SHOWN_BY_TIFFIN | {
    "id", "provisioning_state", "creation_context", "reason", "current_instances"
}  # fmt: skip


class OnlineEndpoint(SpecModel):
    """An online endpoint: a stable name and scoring URL whose traffic is split among deployments.

    ``traffic`` maps deployment names to whole percentages adding up to 0 or 100;
    ``mirror_traffic`` copies a percentage of live requests to one more deployment. Both follow
    :func:`tiffin.specs.traffic.traffic_problem`, as the control plane's traffic route does.
    """

    kind_label: ClassVar[str] = "online endpoint"
    LOCAL_IGNORED = frozenset({"compute", "identity", "public_network_access", "kind"})
    AZURE_READ_ONLY = _ENDPOINT_READ_ONLY
    # Endpoint files of Azure's earlier CLI v2 carry `type: online` (azureml-examples' managed identity ones).
    AZURE_UNMODELLED = frozenset({"type"})

    name: Name
    description: str | None = None
    tags: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    auth_mode: Annotated[OnlineAuthMode, BeforeValidator(choice_of(OnlineAuthMode))] = "key"
    # The Kubernetes compute an Azure Arc endpoint runs on.
    compute: str | None = None
    traffic: dict[str, Percent] = Field(default_factory=dict)
    mirror_traffic: dict[str, Percent] = Field(default_factory=dict)
    identity: dict[str, Any] | None = None
    public_network_access: NetworkAccess | None = None
    kind: str | None = None

    @model_validator(mode="after")
    def _traffic_rules(self) -> OnlineEndpoint:
        # The same rules the control plane's traffic route applies (with the deployments, which a file does
        # not know), so a map accepted there is never refused by a later PATCH, nor the other way round.
        problem = traffic_problem(self.traffic, self.mirror_traffic)
        if problem is not None:
            raise PydanticCustomError(
                "traffic_rule", "{message}", {"message": problem.message, "field_suffix": problem.field}
            )
        return self


class OnlineDeployment(SpecModel):
    """A model plus scoring code served by ``instance_count`` replicas behind an online endpoint.

    ``model`` and ``environment`` are either reference strings (``azureml:name:version``) or inline
    specs. ``endpoint_name`` may be left out of the file when the caller supplies it (as
    ``az ml online-deployment create --endpoint-name`` does), so callers must check it.
    """

    kind_label: ClassVar[str] = "online deployment"
    LOCAL_IGNORED = frozenset(
        {
            "model_mount_path",
            "instance_type",
            "resources",
            "data_collector",
            "egress_public_network_access",
            "private_network_connection",
        }
    )
    REFERENCE_IGNORED = frozenset({"environment"})
    AZURE_READ_ONLY = _DEPLOYMENT_READ_ONLY

    name: Name
    endpoint_name: Name | None = None
    type: Annotated[DeploymentType, BeforeValidator(choice_of(DeploymentType))] = "managed"
    description: str | None = None
    tags: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    model: ModelRef | None = None
    model_mount_path: str | None = None
    code_configuration: CodeConfiguration | None = None
    environment: EnvironmentRef | None = None
    environment_variables: EnvVars = Field(default_factory=dict)
    instance_type: str | None = None
    instance_count: Int = Field(1, ge=1)
    app_insights_enabled: bool = False
    scale_settings: ScaleSettings = Field(default_factory=DefaultScaleSettings)
    request_settings: RequestSettings = Field(default_factory=RequestSettings)
    liveness_probe: ProbeSettings = Field(default_factory=ProbeSettings)
    readiness_probe: ProbeSettings = Field(default_factory=ProbeSettings)
    # Kubernetes container requests/limits (cpu, memory, nvidia.com/gpu).
    resources: dict[str, Any] | None = None
    data_collector: dict[str, Any] | None = None
    egress_public_network_access: NetworkAccess | None = None
    private_network_connection: bool | None = None

    def ignored_here(self) -> list[str]:
        """As :meth:`SpecModel.ignored_here`, less a custom container's model_mount_path."""
        out = super().ignored_here()
        env = self.environment
        if isinstance(env, Environment) and env.inference_config and (env.image or env.build) and not env.command:
            # A custom container, run on a container engine, has its model mounted there (tiffin.containers.run).
            out = [name for name in out if name != "model_mount_path"]
        # scale_settings are honoured: tiffin serve autoscales (tiffin.autoscale).
        return out
