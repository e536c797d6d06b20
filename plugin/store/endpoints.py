"""Endpoints, their deployments and keys: the part of the :class:`~tiffin.store.Store` that routing reads.

Every write here bumps the routing counter in its transaction (``_routing_write``), so a gateway polling
``routing_generation`` sees each change; only a deployment's observed state leaves it alone.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tiffin.auth import new_key, new_token_secret
from tiffin.errors import ConflictError, NotFoundError, StoreError
from tiffin.routing import check_traffic

from .core import StoreCore, check_state, endpoint_not_found, now_utc
from .models import Deployment, Endpoint
from .records import DEPLOYMENT_STATES, ENDPOINT_KINDS, PROVISIONING_STATES, DeploymentRecord, EndpointRecord
from .sealing import SECRET_COLUMNS, SecretBox, is_sealed

__all__ = ["EndpointRepository"]

# Columns that update_endpoint may change; the rest are identity or bookkeeping.
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


def _check_kind(kind: str) -> None:
    if kind not in ENDPOINT_KINDS:
        raise ValueError(f"kind must be one of {ENDPOINT_KINDS}, not {kind!r}")


def _a(kind: str) -> str:
    """``kind`` with its indefinite article: "an online", "a batch"."""
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


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
        owner=row.owner,
    )


class EndpointRepository(StoreCore):
    """Endpoints, deployments and endpoint keys, as plain records; one of the bases of ``Store``."""

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
        check_state(provisioning_state, PROVISIONING_STATES, "provisioning_state")
        now = now_utc()
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
            check_state(changes["provisioning_state"], PROVISIONING_STATES, "provisioning_state")
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
        row.updated_at = now_utc()
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
        now = now_utc()
        with self._routing_write() as session:
            endpoint = session.get(Endpoint, endpoint_name)
            if endpoint is None:
                raise endpoint_not_found(endpoint_name, kind)
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

        The state is observed, not desired, so generations do not move; the routing counter does when the state
        changes, since gateways of other servers sharing the store route to a deployment by its state there
        (:mod:`tiffin.gateway.peers`). With ``expected_generation`` the
        write happens only if the deployment is still at that generation (compare-and-set in one
        statement), so a state computed for an older spec never overwrites what a newer
        ``put_deployment`` wrote; None is returned when it did not apply.
        """
        check_state(state, DEPLOYMENT_STATES, "state")
        with self.session(write=True) as session:
            _, row = self._deployment(session, endpoint_name, name)
            condition = [Deployment.id == row.id]
            if expected_generation is not None:
                condition.append(Deployment.generation == expected_generation)
            moved = row.state != state
            result = session.execute(
                update(Deployment).where(*condition).values(state=state, reason=reason, updated_at=now_utc())
            )
            if result.rowcount == 0:
                return None
            if moved:
                self._bump_routing(session)
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
