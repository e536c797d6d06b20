"""SQLAlchemy ORM models of the state store (the schema at the newest migration).

The migrations in ``migrations/versions`` are the source of truth for the database; these classes
must describe the same tables. ``tests/test_store.py`` checks that with Alembic's autogenerate
comparison, so a model change without a migration fails the tests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = ["Asset", "Base", "Compute", "Counter", "Deployment", "Endpoint", "Job", "MiniBatch", "Node", "UTCDateTime"]

# Deterministic constraint names, so later migrations can refer to (and drop) them by name on every
# backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite has no timezone-aware type and hands back naive values; PostgreSQL hands back the
    session's time zone. Normalising here keeps both backends identical to callers.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the store; pass an aware UTC datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the store's tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class Counter(Base):
    """Named monotonic counters; ``routing`` grows with every endpoint/deployment/traffic write.

    A counter row (rather than ``max(generation)``) survives deletes: removing the newest row would
    make a maximum go backwards, and a sum can repeat.
    """

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Endpoint(Base):
    """An online or batch endpoint."""

    __tablename__ = "endpoints"
    __table_args__ = (CheckConstraint("kind IN ('online', 'batch')", name="kind"),)

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]]
    traffic: Mapped[dict[str, Any]]
    mirror_traffic: Mapped[dict[str, Any]]
    auth_mode: Mapped[str] = mapped_column(String(32))
    primary_key: Mapped[str | None] = mapped_column(String(255))
    secondary_key: Mapped[str | None] = mapped_column(String(255))
    token_secret: Mapped[str | None] = mapped_column(String(255))
    provisioning_state: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    generation: Mapped[int] = mapped_column(Integer)


class Deployment(Base):
    """A deployment under an endpoint; deleted with it (``ON DELETE CASCADE``)."""

    __tablename__ = "deployments"
    __table_args__ = (
        UniqueConstraint("endpoint_name", "name"),
        CheckConstraint("kind IN ('online', 'batch')", name="kind"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    endpoint_name: Mapped[str] = mapped_column(
        String(255), ForeignKey("endpoints.name", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    generation: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str | None] = mapped_column(String(255))
    """The node whose supervisor runs its replicas (migration 0004); None until one claims it."""


class Job(Base):
    """A batch-scoring job (migration 0002).

    No foreign key to ``endpoints`` on purpose: a job's record outlives its endpoint, as history.
    """

    __tablename__ = "jobs"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    endpoint_name: Mapped[str] = mapped_column(String(255), index=True)
    deployment_name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), index=True)
    inputs: Mapped[dict[str, Any]]
    outputs: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    progress: Mapped[dict[str, Any] | None]
    spec: Mapped[dict[str, Any] | None]
    """The deployment spec the job runs with, as it was when the job was created (migration 0003)."""
    owner: Mapped[str | None] = mapped_column(String(255), index=True)
    """The node running it (migration 0004): set when a node starts it, changed when another takes it over."""


class MiniBatch(Base):
    """One mini-batch of a job and how far it got (migration 0003): what makes a job resumable.

    ``status`` is ``done`` only once the mini-batch's output part is in place, so after a restart the
    done ones are skipped and the others run again.
    """

    __tablename__ = "mini_batches"
    __table_args__ = (CheckConstraint("status IN ('pending', 'running', 'done', 'failed')", name="status"),)

    job_name: Mapped[str] = mapped_column(String(255), ForeignKey("jobs.name", ondelete="CASCADE"), primary_key=True)
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    items: Mapped[list[Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int | None] = mapped_column(Integer)
    failed_items: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]


class Node(Base):
    """A ``tiffin serve`` sharing the store (migration 0004); its row lives while it runs.

    ``beat`` grows with every heartbeat. Other nodes judge liveness by watching it change on their own
    clocks, never by comparing ``heartbeat_at`` with theirs, so clock skew between machines cannot make a
    live node look dead.
    """

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    url: Mapped[str | None] = mapped_column(String(1024))
    incarnation: Mapped[str] = mapped_column(String(32))
    beat: Mapped[int] = mapped_column(BigInteger)
    heartbeat_at: Mapped[datetime]
    started_at: Mapped[datetime]


class Asset(Base):
    """One version of a registered model, environment or data asset (migration 0005).

    The primary key is what an ``azureml:NAME:VERSION`` reference names, with the kind. A version never changes
    once written, but for ``description``, ``tags`` and ``stage`` in ``spec``, and ``archived``.
    """

    __tablename__ = "assets"
    __table_args__ = (CheckConstraint("kind IN ('model', 'environment', 'data')", name="kind"),)

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[str] = mapped_column(String(128), primary_key=True)
    spec: Mapped[dict[str, Any]]
    digest: Mapped[str | None] = mapped_column(String(80))
    """The content store's name for its files (``sha256:...``); None for environments and remote data."""
    archived: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Compute(Base):
    """A registered compute (migration 0005): a record whose ``max_instances`` caps the batch deployments on it."""

    __tablename__ = "computes"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    spec: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class AutoscaleSetting(Base):
    """An Azure Monitor autoscale setting (migration 0006): profiles and rules (``spec``) for one online
    deployment, the ``--resource`` of ``tiffin monitor autoscale create``."""

    __tablename__ = "autoscale_settings"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    endpoint_name: Mapped[str] = mapped_column(String(255))
    deployment_name: Mapped[str] = mapped_column(String(255))
    spec: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Rollout(Base):
    """An endpoint's guarded rollout (migration 0006): what was asked (``spec``), where it is (``status``, and
    ``state``: step, traffic before, guard readings, why it stopped), written compare-and-set on ``generation``."""

    __tablename__ = "rollouts"

    endpoint_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(32))
    state: Mapped[dict[str, Any]]
    generation: Mapped[int]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
