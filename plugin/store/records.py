"""Plain records the store hands out: frozen dataclasses, detached from any database session.

Callers never see ORM objects, so nothing they hold can lazily hit the database after its session
closed, and nothing they change is written back by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

__all__ = [
    "DEPLOYMENT_STATES",
    "ENDPOINT_KINDS",
    "JOB_STATUSES",
    "PROVISIONING_STATES",
    "TERMINAL_JOB_STATUSES",
    "DeploymentRecord",
    "DeploymentState",
    "EndpointKind",
    "EndpointRecord",
    "JobRecord",
    "JobStatus",
    "MiniBatchRecord",
]

EndpointKind = Literal["online", "batch"]
DeploymentState = Literal["Creating", "Updating", "Succeeded", "Failed", "Deleting"]
JobStatus = Literal["Queued", "Running", "Completed", "Failed", "Canceled"]

ENDPOINT_KINDS: tuple[EndpointKind, ...] = ("online", "batch")
#: Endpoints and deployments share Azure ML's provisioning states.
PROVISIONING_STATES: tuple[DeploymentState, ...] = ("Creating", "Updating", "Succeeded", "Failed", "Deleting")
DEPLOYMENT_STATES = PROVISIONING_STATES
JOB_STATUSES: tuple[JobStatus, ...] = ("Queued", "Running", "Completed", "Failed", "Canceled")
TERMINAL_JOB_STATUSES: frozenset[str] = frozenset({"Completed", "Failed", "Canceled"})


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    """One endpoint's desired state.

    ``traffic`` and ``mirror_traffic`` map deployment names to percentages. ``generation`` grows on
    every change to the endpoint *or to one of its deployments*, so a gateway can compare one
    integer to know whether its routing table for this endpoint is stale. The secrets are left out
    of ``repr`` so that logging a record does not leak them.
    """

    name: str
    kind: EndpointKind
    spec: dict[str, Any]
    traffic: dict[str, int]
    mirror_traffic: dict[str, int]
    auth_mode: str
    provisioning_state: str
    created_at: datetime
    updated_at: datetime
    generation: int
    primary_key: str | None = field(default=None, repr=False)
    secondary_key: str | None = field(default=None, repr=False)
    token_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    """One deployment's desired state and its last reported provisioning state."""

    id: str
    endpoint_name: str
    name: str
    kind: EndpointKind
    spec: dict[str, Any]
    state: str
    reason: str | None
    created_at: datetime
    updated_at: datetime
    generation: int
    owner: str | None = None
    """The node (``tiffin serve``) running its replicas; None until one takes it."""


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One batch-scoring job."""

    name: str
    endpoint_name: str
    deployment_name: str | None
    status: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    progress: dict[str, Any] | None
    spec: dict[str, Any] | None = None
    """The deployment spec the job runs with, fixed when it was created."""
    owner: str | None = None
    """The node (``tiffin serve``) running it, once one started it."""


@dataclass(frozen=True, slots=True)
class MiniBatchRecord:
    """One mini-batch of a job: its input items (file paths), status and outcome."""

    job_name: str
    index: int
    items: list[Any]
    status: str
    """``pending``, ``running``, ``done`` (its output part is written) or ``failed`` (out of retries)."""
    attempts: int
    rows: int | None
    failed_items: int
    error: str | None


@dataclass(frozen=True, slots=True)
class AssetRecord:
    """One version of a registered model, environment or data asset (migration 0005).

    ``spec`` holds the asset's fields as Azure's YAML has them (``name``, ``version``, ``type``, ``path``,
    ``description``, ``tags``, ``properties``; an environment's ``image``, ``conda_file`` content, ``build``);
    a model's or data asset's local ``path`` is the copy in tiffin's content store, never the user's source.
    ``digest`` names that content (None for environments and for remote data such as ``https://`` URLs).
    A version is immutable: only ``description``, ``tags``, ``stage`` and ``archived`` change.
    """

    kind: str  # "model" | "environment" | "data"
    name: str
    version: str
    spec: dict[str, Any]
    digest: str | None
    archived: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class ComputeRecord:
    """A registered compute (migration 0005): ``spec`` as Azure's compute YAML has it (``type``, ``size``,
    ``min_instances``, ``max_instances``, ``idle_time_before_scale_down``, ``description``, ``tags``)."""

    name: str
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime
