"""The :class:`Store`: tiffin's desired state (endpoints, deployments, keys, jobs) in one database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tiffin.auth import new_key, new_token_secret
from tiffin.errors import ConflictError, NotFoundError, StoreError
from tiffin.paths import safe_name
from tiffin.routing import check_traffic

from . import engine as _engine
from .models import Counter, Deployment, Endpoint, Job, MiniBatch
from .records import (
    DEPLOYMENT_STATES,
    ENDPOINT_KINDS,
    JOB_STATUSES,
    PROVISIONING_STATES,
    TERMINAL_JOB_STATUSES,
    DeploymentRecord,
    EndpointRecord,
    JobRecord,
    MiniBatchRecord,
)
from .sealing import SECRET_COLUMNS, SecretBox, find_secret_box, is_sealed, seal_plaintext

__all__ = ["Store"]

ROUTING_COUNTER = "routing"

# Columns that update_endpoint / update_job may change; the rest are identity or bookkeeping.
_ENDPOINT_MUTABLE = frozenset(
    {
        "spec",
        "traffic",
        "mirror_traffic",
        "auth_mode",
        "primary_key",
        "secondary_key",
        "token_secret",
        "provisioning_state",
    }
)
# A sealed value must fit the 255-character columns: generated keys are 43 characters, token secrets 64.
_MAX_SECRET = 100
_JOB_MUTABLE = frozenset({"deployment_name", "status", "outputs", "error", "started_at", "finished_at", "progress"})
_MINI_BATCH_MUTABLE = frozenset({"status", "attempts", "rows", "failed_items", "error"})
MINI_BATCH_STATUSES = ("pending", "running", "done", "failed")


def _now() -> datetime:
    return datetime.now(UTC)


def _check_kind(kind: str) -> None:
    if kind not in ENDPOINT_KINDS:
        raise ValueError(f"kind must be one of {ENDPOINT_KINDS}, not {kind!r}")


def _check_state(state: str, allowed: tuple[str, ...], what: str) -> None:
    if state not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, not {state!r}")


def _a(kind: str) -> str:
    """``kind`` with its indefinite article: "an online", "a batch"."""
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def _endpoint_not_found(name: str, kind: str | None) -> NotFoundError:
    if kind is None:
        return NotFoundError(
            f"endpoint '{name}' not found; list them with `tiffin online-endpoint list` or `tiffin batch-endpoint list`"
        )
    return NotFoundError(f"{kind} endpoint '{name}' not found; list them with `tiffin {kind}-endpoint list`")


def _deployment_not_found(endpoint: Endpoint, name: str) -> NotFoundError:
    return NotFoundError(
        f"{endpoint.kind} deployment '{name}' not found on endpoint '{endpoint.name}'; list them with "
        f"`tiffin {endpoint.kind}-deployment list --endpoint-name {endpoint.name}`"
    )


def _no_box(value: str | None) -> str | None:
    if is_sealed(value):
        raise StoreError(
            "this Store was made without its secret key and cannot read endpoint keys; open it with "
            "Store.open(), which reads TIFFIN_SECRET_KEY or $TIFFIN_HOME/secret-key"
        )
    return value


def _endpoint_record(row: Endpoint, box: SecretBox | None) -> EndpointRecord:
    unseal = box.open if box is not None else _no_box
    return EndpointRecord(
        name=row.name,
        kind=row.kind,  # type: ignore[arg-type]  # the CHECK constraint guarantees the literal
        spec=dict(row.spec),
        traffic=dict(row.traffic),
        mirror_traffic=dict(row.mirror_traffic),
        auth_mode=row.auth_mode,
        provisioning_state=row.provisioning_state,
        created_at=row.created_at,
        updated_at=row.updated_at,
        generation=row.generation,
        primary_key=unseal(row.primary_key),
        secondary_key=unseal(row.secondary_key),
        token_secret=unseal(row.token_secret),
    )


def _deployment_record(row: Deployment) -> DeploymentRecord:
    return DeploymentRecord(
        id=row.id,
        endpoint_name=row.endpoint_name,
        name=row.name,
        kind=row.kind,  # type: ignore[arg-type]
        spec=dict(row.spec),
        state=row.state,
        reason=row.reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        generation=row.generation,
    )


def _job_record(row: Job) -> JobRecord:
    return JobRecord(
        name=row.name,
        endpoint_name=row.endpoint_name,
        deployment_name=row.deployment_name,
        status=row.status,
        inputs=dict(row.inputs),
        outputs=None if row.outputs is None else dict(row.outputs),
        error=row.error,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        progress=None if row.progress is None else dict(row.progress),
        spec=None if row.spec is None else dict(row.spec),
    )


def _mini_batch_record(row: MiniBatch) -> MiniBatchRecord:
    return MiniBatchRecord(
        job_name=row.job_name,
        index=row.index,
        items=list(row.items),
        status=row.status,
        attempts=row.attempts,
        rows=row.rows,
        failed_items=row.failed_items,
        error=row.error,
    )


class Store:
    """Repository over the state database; hands out plain records, never ORM objects.

    Every method runs one short transaction. Writes to endpoints and deployments also bump the
    ``routing`` counter (:meth:`routing_generation`) in the same transaction, so readers polling it
    never miss a change. Open stores with :meth:`open`, which applies pending migrations; the
    constructor takes explicit values and touches neither the environment nor the schema.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        busy_timeout_ms: int = _engine.DEFAULT_BUSY_TIMEOUT_MS,
        secret_box: SecretBox | None = None,
    ) -> None:
        """Connect to ``url`` (a SQLAlchemy URL) without migrating; see :meth:`open`.

        ``secret_box`` seals endpoint keys and token secrets; without one (tests, tools reading jobs) they are
        written as plaintext and sealed ones cannot be read. :meth:`open` always gives one.
        """
        self.url: URL = make_url(url)
        self._box = secret_box
        self._busy_timeout_ms = busy_timeout_ms
        self.engine: Engine = _engine.make_engine(self.url, busy_timeout_ms=busy_timeout_ms)
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        # BEGIN IMMEDIATE takes SQLite's write lock up front. A deferred transaction that reads
        # first and writes later fails at once with SQLITE_BUSY when another process committed in
        # between, without waiting for the busy timeout. Other backends ignore the option.
        writer = self.engine.execution_options(**{_engine.SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        self._writes = sessionmaker(writer, expire_on_commit=False)

    # --- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str | None = None,
        home: Path | None = None,
        *,
        revision: str = "head",
        busy_timeout_ms: int = _engine.DEFAULT_BUSY_TIMEOUT_MS,
    ) -> Store:
        """Open the store and upgrade its schema to ``revision`` (normally the newest).

        ``url`` wins; else ``$TIFFIN_STORE_URL``; else SQLite at ``<home>/tiffin.db`` where ``home``
        defaults to ``$TIFFIN_HOME`` or ``~/.tiffin``. This is the one place the store reads the
        environment. Safe to call from several processes at once on a fresh database.
        """
        resolved = url or os.environ.get("TIFFIN_STORE_URL") or _engine.default_url(home)
        store = cls(resolved, busy_timeout_ms=busy_timeout_ms)
        try:
            store.upgrade(revision)
            if _engine.is_sqlite_memory(store.url):  # a throwaway database: a throwaway key
                store._box = SecretBox([Fernet.generate_key()], "a key made for this in-memory store")
            else:
                store._box = find_secret_box(store.session, _engine.home_of(home), os.environ)
            seal_plaintext(store.session, store._box)
        except BaseException:
            store.close()
            raise
        return store

    def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations up to ``revision``; a no-op when the schema is there already."""
        try:
            if _engine.is_sqlite_memory(self.url):
                # An in-memory database lives only in this engine's one connection, so migrate on
                # it, foreign keys on. Such stores are throwaway (tests), not worth a separate path.
                _engine.run_migrations(self.engine, revision)
            else:
                _engine.upgrade(self.url, revision, busy_timeout_ms=self._busy_timeout_ms)
        except OperationalError as exc:
            raise _engine.wrap_db_error(exc, self.url, "upgrading the schema") from exc

    def _sealed(self, value: str | None) -> str | None:
        if value is not None and len(value) > _MAX_SECRET:
            raise ValueError(f"an endpoint key or token secret is at most {_MAX_SECRET} characters")
        return self._box.seal(value) if self._box is not None else value

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (e.g. ``"0002"``), None if it has no schema."""
        return _engine.current_revision(self.engine)

    def close(self) -> None:
        """Release the store's connections."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """One short transaction as an ORM session; committed on success, rolled back on error.

        Low level: other modules should use the repository methods, which return plain records.
        """
        factory = self._writes if write else self._reads
        try:
            with factory.begin() as session:
                yield session
        except OperationalError as exc:
            raise _engine.wrap_db_error(exc, self.url, "a write" if write else "a read") from exc

    @contextmanager
    def _routing_write(self) -> Iterator[Session]:
        """A write session that has already bumped the routing counter.

        Bumping first also serialises writers on PostgreSQL (they queue on the counter's row lock),
        so the checks a method does before writing cannot go stale.
        """
        with self.session(write=True) as session:
            session.execute(update(Counter).where(Counter.name == ROUTING_COUNTER).values(value=Counter.value + 1))
            yield session

    def routing_generation(self) -> int:
        """A number that grows with every change to any endpoint, deployment, traffic or key.

        One primary-key lookup: cheap enough for a gateway to poll every second.
        """
        with self.session() as session:
            value = session.scalar(select(Counter.value).where(Counter.name == ROUTING_COUNTER))
        return int(value or 0)

    # --- endpoints ---------------------------------------------------------------------------------

    def create_endpoint(
        self,
        kind: str,
        name: str,
        spec: Mapping[str, Any],
        auth_mode: str = "key",
        *,
        primary_key: str | None = None,
        secondary_key: str | None = None,
        token_secret: str | None = None,
        provisioning_state: str = "Creating",
    ) -> EndpointRecord:
        """Create an endpoint; keys and token secret left out are generated.

        Raises :class:`ConflictError` if an endpoint of either kind has that name (online and batch
        endpoints share one namespace, as they share the gateway's URL space).
        """
        _check_kind(kind)
        _check_state(provisioning_state, PROVISIONING_STATES, "provisioning_state")
        now = _now()
        try:
            with self._routing_write() as session:
                existing = session.get(Endpoint, name)
                if existing is not None:
                    raise self._exists(existing, kind)
                row = Endpoint(
                    name=name,
                    kind=kind,
                    spec=dict(spec),
                    traffic={},
                    mirror_traffic={},
                    auth_mode=auth_mode,
                    primary_key=self._sealed(primary_key or new_key()),
                    secondary_key=self._sealed(secondary_key or new_key()),
                    token_secret=self._sealed(token_secret or new_token_secret()),
                    provisioning_state=provisioning_state,
                    created_at=now,
                    updated_at=now,
                    generation=1,
                )
                session.add(row)
                session.flush()
                return _endpoint_record(row, self._box)
        except IntegrityError as exc:  # a concurrent create on a backend without the counter lock
            raise ConflictError(f"{kind} endpoint '{name}' already exists; pick another name") from exc

    @staticmethod
    def _exists(existing: Endpoint, kind: str) -> ConflictError:
        if existing.kind != kind:
            return ConflictError(
                f"the name '{existing.name}' is taken by {_a(existing.kind)} endpoint; online and batch "
                "endpoints share names, so pick another name"
            )
        return ConflictError(
            f"{kind} endpoint '{existing.name}' already exists; pick another name, or change it with "
            f"`tiffin {kind}-endpoint update --name {existing.name}`"
        )

    def get_endpoint(self, name: str, kind: str | None = None) -> EndpointRecord:
        """The endpoint ``name``; with ``kind``, an endpoint of the other kind counts as missing."""
        with self.session() as session:
            return _endpoint_record(self._endpoint(session, name, kind), self._box)

    @staticmethod
    def _endpoint(session: Session, name: str, kind: str | None = None) -> Endpoint:
        row = session.get(Endpoint, name)
        if row is None or (kind is not None and row.kind != kind):
            raise _endpoint_not_found(name, kind)
        return row

    def list_endpoints(self, kind: str | None = None) -> list[EndpointRecord]:
        """All endpoints (of ``kind`` if given), by name."""
        query = select(Endpoint).order_by(Endpoint.name)
        if kind is not None:
            _check_kind(kind)
            query = query.where(Endpoint.kind == kind)
        with self.session() as session:
            return [_endpoint_record(row, self._box) for row in session.scalars(query)]

    def update_endpoint(self, name: str, /, *, kind: str | None = None, **changes: Any) -> EndpointRecord:
        """Change some fields of an endpoint and bump its ``generation``.

        Updatable: ``spec``, ``traffic``, ``mirror_traffic``, ``auth_mode``, ``primary_key``,
        ``secondary_key``, ``token_secret``, ``provisioning_state``. Traffic changes are checked as
        in :meth:`set_traffic`. With ``kind``, an endpoint of the other kind counts as missing.
        """
        unknown = set(changes) - _ENDPOINT_MUTABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}; updatable: {sorted(_ENDPOINT_MUTABLE)}")
        if not changes:  # nothing to write: no generation bump, so pollers do not reload for nothing
            return self.get_endpoint(name, kind)
        if "provisioning_state" in changes:
            _check_state(changes["provisioning_state"], PROVISIONING_STATES, "provisioning_state")
        with self._routing_write() as session:
            row = self._endpoint(session, name, kind)
            if "traffic" in changes or "mirror_traffic" in changes:
                traffic = dict(changes.get("traffic", row.traffic))
                mirror = dict(changes.get("mirror_traffic", row.mirror_traffic))
                check_traffic(traffic, mirror, self._deployment_names(session, name))
            for key, value in changes.items():
                if key in SECRET_COLUMNS:
                    value = self._sealed(value)
                setattr(row, key, dict(value) if isinstance(value, Mapping) else value)
            self._touch(row)
            session.flush()
            return _endpoint_record(row, self._box)

    def delete_endpoint(self, name: str, kind: str | None = None) -> None:
        """Delete the endpoint and, by ``ON DELETE CASCADE``, its deployments."""
        with self._routing_write() as session:
            self._endpoint(session, name, kind)
            session.execute(delete(Endpoint).where(Endpoint.name == name))

    def set_traffic(
        self,
        name: str,
        traffic: Mapping[str, int],
        mirror: Mapping[str, int] | None = None,
        kind: str | None = None,
    ) -> EndpointRecord:
        """Replace the live traffic split (and the mirror split, if given).

        Raises :class:`SpecError` unless every named deployment exists, live shares add up to 100
        (or are all 0) and mirror shares to at most 50.
        """
        changes: dict[str, Any] = {"traffic": dict(traffic)}
        if mirror is not None:
            changes["mirror_traffic"] = dict(mirror)
        return self.update_endpoint(name, kind=kind, **changes)

    def set_keys(
        self, name: str, primary: str | None = None, secondary: str | None = None, kind: str | None = None
    ) -> EndpointRecord:
        """Replace the primary and/or secondary key; None (or empty) leaves that key unchanged."""
        changes = {key: value for key, value in (("primary_key", primary), ("secondary_key", secondary)) if value}
        return self.update_endpoint(name, kind=kind, **changes)

    @staticmethod
    def _touch(row: Endpoint | Deployment) -> None:
        row.updated_at = _now()
        row.generation = row.generation + 1

    @staticmethod
    def _deployment_names(session: Session, endpoint_name: str) -> set[str]:
        return set(session.scalars(select(Deployment.name).where(Deployment.endpoint_name == endpoint_name)))

    # --- deployments -------------------------------------------------------------------------------

    def put_deployment(self, endpoint_name: str, name: str, kind: str, spec: Mapping[str, Any]) -> DeploymentRecord:
        """Create the deployment (state ``Creating``) or replace its spec (state ``Updating``).

        Bumps the deployment's and the endpoint's ``generation``. The endpoint must exist
        (:class:`NotFoundError`) and be of the same ``kind`` (:class:`ConflictError`).
        """
        _check_kind(kind)
        now = _now()
        with self._routing_write() as session:
            endpoint = session.get(Endpoint, endpoint_name)
            if endpoint is None:
                raise _endpoint_not_found(endpoint_name, kind)
            if endpoint.kind != kind:
                raise ConflictError(
                    f"endpoint '{endpoint_name}' is {_a(endpoint.kind)} endpoint and cannot hold {kind} "
                    f"deployment '{name}'; create {_a(endpoint.kind)} deployment or use {_a(kind)} endpoint"
                )
            row = self._find_deployment(session, endpoint_name, name)
            if row is None:
                row = Deployment(
                    id=uuid.uuid4().hex,
                    endpoint_name=endpoint_name,
                    name=name,
                    kind=kind,
                    spec=dict(spec),
                    state="Creating",
                    reason=None,
                    created_at=now,
                    updated_at=now,
                    generation=1,
                )
                session.add(row)
            else:
                row.spec = dict(spec)
                row.state = "Updating"
                row.reason = None
                self._touch(row)
            self._touch(endpoint)
            session.flush()
            return _deployment_record(row)

    @staticmethod
    def _find_deployment(session: Session, endpoint_name: str, name: str) -> Deployment | None:
        return session.scalar(
            select(Deployment).where(Deployment.endpoint_name == endpoint_name, Deployment.name == name)
        )

    def _deployment(self, session: Session, endpoint_name: str, name: str) -> tuple[Endpoint, Deployment]:
        endpoint = self._endpoint(session, endpoint_name)
        row = self._find_deployment(session, endpoint_name, name)
        if row is None:
            raise _deployment_not_found(endpoint, name)
        return endpoint, row

    def get_deployment(self, endpoint_name: str, name: str) -> DeploymentRecord:
        """The deployment ``name`` of endpoint ``endpoint_name``."""
        with self.session() as session:
            return _deployment_record(self._deployment(session, endpoint_name, name)[1])

    def list_deployments(self, endpoint_name: str | None = None) -> list[DeploymentRecord]:
        """Deployments of one endpoint (which must exist), or of all, by endpoint and name."""
        query = select(Deployment).order_by(Deployment.endpoint_name, Deployment.name)
        with self.session() as session:
            if endpoint_name is not None:
                self._endpoint(session, endpoint_name)
                query = query.where(Deployment.endpoint_name == endpoint_name)
            return [_deployment_record(row) for row in session.scalars(query)]

    def set_deployment_state(
        self,
        endpoint_name: str,
        name: str,
        state: str,
        reason: str | None = None,
        *,
        expected_generation: int | None = None,
    ) -> DeploymentRecord | None:
        """Record the deployment's observed provisioning state (and why, for ``Failed``).

        The state is observed, not desired, so generations do not move. With ``expected_generation`` the
        write happens only if the deployment is still at that generation (compare-and-set in one
        statement), so a state computed for an older spec never overwrites what a newer
        ``put_deployment`` wrote; None is returned when it did not apply.
        """
        _check_state(state, DEPLOYMENT_STATES, "state")
        with self.session(write=True) as session:
            _, row = self._deployment(session, endpoint_name, name)
            condition = [Deployment.id == row.id]
            if expected_generation is not None:
                condition.append(Deployment.generation == expected_generation)
            result = session.execute(
                update(Deployment).where(*condition).values(state=state, reason=reason, updated_at=_now())
            )
            if result.rowcount == 0:
                return None
            session.expire(row)
            return _deployment_record(row)

    def delete_deployment(self, endpoint_name: str, name: str) -> None:
        """Delete a deployment that receives no traffic (zero-percent entries are dropped with it).

        Raises :class:`ConflictError` while it still gets live or mirrored traffic, as Azure ML does:
        otherwise the gateway would route requests to nothing.
        """
        with self._routing_write() as session:
            endpoint, row = self._deployment(session, endpoint_name, name)
            if endpoint.traffic.get(name, 0) > 0 or endpoint.mirror_traffic.get(name, 0) > 0:
                raise ConflictError(
                    f"deployment '{name}' still receives traffic on endpoint '{endpoint_name}'; set its "
                    f"traffic to 0 first with `tiffin {endpoint.kind}-endpoint update --name "
                    f"{endpoint_name} --traffic ...`"
                )
            endpoint.traffic = {k: v for k, v in endpoint.traffic.items() if k != name}
            endpoint.mirror_traffic = {k: v for k, v in endpoint.mirror_traffic.items() if k != name}
            self._touch(endpoint)
            session.delete(row)

    # --- jobs --------------------------------------------------------------------------------------

    def create_job(
        self,
        name: str,
        endpoint_name: str,
        deployment_name: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        spec: Mapping[str, Any] | None = None,
    ) -> JobRecord:
        """Queue a job for a batch endpoint (which must exist); :class:`ConflictError` if the name is used.

        ``spec`` is the deployment spec the job runs with: later changes to the deployment do not change
        a job already invoked, as on Azure.
        """
        safe_name(name, "job name")  # it names the job's folder (tiffin.paths)
        try:
            with self.session(write=True) as session:
                self._endpoint(session, endpoint_name, "batch")
                if session.get(Job, name) is not None:
                    raise ConflictError(f"job '{name}' already exists; job names are unique, pick another")
                row = Job(
                    name=name,
                    endpoint_name=endpoint_name,
                    deployment_name=deployment_name,
                    status="Queued",
                    inputs=dict(inputs or {}),
                    outputs=None,
                    error=None,
                    created_at=_now(),
                    started_at=None,
                    finished_at=None,
                    progress=None,
                    spec=None if spec is None else dict(spec),
                )
                session.add(row)
                session.flush()
                return _job_record(row)
        except IntegrityError as exc:  # lost a race with a concurrent create (PostgreSQL)
            raise ConflictError(f"job '{name}' already exists; job names are unique, pick another") from exc

    def get_job(self, name: str) -> JobRecord:
        """The job ``name``."""
        with self.session() as session:
            return _job_record(self._job(session, name))

    @staticmethod
    def _job(session: Session, name: str) -> Job:
        row = session.get(Job, name)
        if row is None:
            raise NotFoundError(
                f"job '{name}' not found; list a batch endpoint's jobs with "
                "`tiffin batch-endpoint list-jobs --name <endpoint>`"
            )
        return row

    def list_jobs(
        self, endpoint_name: str | None = None, status: str | None = None, *, deployment_name: str | None = None
    ) -> list[JobRecord]:
        """Jobs, oldest first, optionally of one endpoint, one of its deployments and/or in one status."""
        query = select(Job).order_by(Job.created_at, Job.name)
        if endpoint_name is not None:
            query = query.where(Job.endpoint_name == endpoint_name)
        if deployment_name is not None:
            query = query.where(Job.deployment_name == deployment_name)
        if status is not None:
            _check_state(status, JOB_STATUSES, "status")
            query = query.where(Job.status == status)
        with self.session() as session:
            return [_job_record(row) for row in session.scalars(query)]

    def update_job(self, name: str, /, *, expected_status: str | None = None, **changes: Any) -> JobRecord | None:
        """Change a job's ``status``, ``outputs``, ``error``, ``progress``, ``deployment_name`` or times.

        Moving to ``Running`` stamps ``started_at`` and to a final status stamps ``finished_at``,
        unless given. With ``expected_status``, the change is made only if the job is in that status
        (compare-and-set: a job canceled meanwhile stays canceled); None is returned when it is not.
        """
        unknown = set(changes) - _JOB_MUTABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}; updatable: {sorted(_JOB_MUTABLE)}")
        status = changes.get("status")
        if status is not None:
            _check_state(status, JOB_STATUSES, "status")
        for key in ("started_at", "finished_at"):
            value = changes.get(key)
            if isinstance(value, datetime) and value.tzinfo is None:
                raise ValueError(f"{key} must be timezone-aware (UTC), not naive {value!r}")
        with self.session(write=True) as session:
            row = self._job(session, name)
            if expected_status is not None and row.status != expected_status:
                return None
            now = _now()
            if status == "Running" and row.started_at is None:
                changes.setdefault("started_at", now)
            if status in TERMINAL_JOB_STATUSES and row.finished_at is None:
                changes.setdefault("finished_at", now)
            for key, value in changes.items():
                setattr(row, key, dict(value) if isinstance(value, Mapping) else value)
            session.flush()
            return _job_record(row)

    # --- mini-batches ------------------------------------------------------------------------------

    def plan_job(self, name: str, batches: list[list[Any]]) -> list[MiniBatchRecord]:
        """Record a job's mini-batches (their items, in order) once; a job planned already keeps its plan.

        Returns the job's mini-batches as stored, so a resumed job sees what was done before.
        """
        with self.session(write=True) as session:
            self._job(session, name)
            query = select(MiniBatch).where(MiniBatch.job_name == name).order_by(MiniBatch.index)
            rows = list(session.scalars(query))
            if not rows:
                now = _now()
                rows = [
                    MiniBatch(job_name=name, index=i, items=list(items), status="pending", attempts=0, rows=None,
                              failed_items=0, error=None, updated_at=now)
                    for i, items in enumerate(batches)
                ]  # fmt: skip
                session.add_all(rows)
                session.flush()
            return [_mini_batch_record(row) for row in rows]

    def mini_batches(self, name: str) -> list[MiniBatchRecord]:
        """A job's mini-batches, in order (empty until the job is planned)."""
        query = select(MiniBatch).where(MiniBatch.job_name == name).order_by(MiniBatch.index)
        with self.session() as session:
            return [_mini_batch_record(row) for row in session.scalars(query)]

    def update_mini_batch(self, name: str, index: int, /, **changes: Any) -> None:
        """Change a mini-batch's ``status``, ``attempts``, ``rows``, ``failed_items`` or ``error``."""
        unknown = set(changes) - _MINI_BATCH_MUTABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}; updatable: {sorted(_MINI_BATCH_MUTABLE)}")
        if "status" in changes:
            _check_state(changes["status"], MINI_BATCH_STATUSES, "status")
        with self.session(write=True) as session:
            result = session.execute(
                update(MiniBatch)
                .where(MiniBatch.job_name == name, MiniBatch.index == index)
                .values(**changes, updated_at=_now())
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFoundError(f"mini-batch {index} of job '{name}' not found")
