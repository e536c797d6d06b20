"""Autoscale settings: the part of the :class:`~tiffin.store.Store` behind ``tiffin monitor autoscale``
(migration 0006).

A setting is named (unique, as Azure's autoscale resource is) and targets one online deployment. Its ``spec`` is
the JSON ``az monitor autoscale show`` prints (:mod:`tiffin.autoscale.monitor`). As on Azure, deleting the
deployment or its endpoint leaves the setting in place: it is then listed with ``target_exists`` False, the
autoscale engine skips it, and ``tiffin monitor autoscale delete`` removes it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tiffin.errors import ConflictError, NotFoundError

from .core import StoreCore, now_utc
from .models import AutoscaleSetting, Deployment, Endpoint

__all__ = ["AutoscaleRecord", "AutoscaleRepository"]


@dataclass(frozen=True, slots=True)
class AutoscaleRecord:
    """One autoscale setting: its target deployment and its spec (Azure's JSON shape)."""

    name: str
    endpoint_name: str
    deployment_name: str
    spec: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    target_exists: bool = True
    """False once the target deployment (or its endpoint) was deleted; the setting then does nothing."""


def _not_found(name: str) -> NotFoundError:
    return NotFoundError(f"autoscale setting '{name}' not found; list them with `tiffin monitor autoscale list`")


def _target_exists(session: Session, endpoint_name: str, deployment_name: str) -> bool:
    query = (
        select(Deployment.name)
        .join(Endpoint, Endpoint.name == Deployment.endpoint_name)
        .where(Deployment.endpoint_name == endpoint_name, Deployment.name == deployment_name, Endpoint.kind == "online")
    )
    return session.scalar(query) is not None


def _record(session: Session, row: AutoscaleSetting) -> AutoscaleRecord:
    return AutoscaleRecord(
        name=row.name,
        endpoint_name=row.endpoint_name,
        deployment_name=row.deployment_name,
        spec=copy.deepcopy(row.spec),
        created_at=row.created_at,
        updated_at=row.updated_at,
        target_exists=_target_exists(session, row.endpoint_name, row.deployment_name),
    )


class AutoscaleRepository(StoreCore):
    """Autoscale settings by name; one of the bases of ``Store``."""

    def create_autoscale_setting(
        self, name: str, endpoint_name: str, deployment_name: str, spec: Mapping[str, Any], *, replace: bool = False
    ) -> AutoscaleRecord:
        """Create the setting ``name`` for an existing online deployment. An existing name is a
        :class:`ConflictError` unless ``replace``; another setting on the same deployment is one always (Azure
        allows one autoscale setting per resource)."""
        try:
            return self._create_autoscale_setting(name, endpoint_name, deployment_name, spec, replace)
        except IntegrityError:  # another writer created this name between our read and write (PostgreSQL)
            raise ConflictError(f"autoscale setting '{name}' was just created by another request; show it") from None

    def _create_autoscale_setting(
        self, name: str, endpoint_name: str, deployment_name: str, spec: Mapping[str, Any], replace: bool
    ) -> AutoscaleRecord:
        with self.session(write=True) as session:
            if not _target_exists(session, endpoint_name, deployment_name):
                raise NotFoundError(
                    f"online deployment '{deployment_name}' of endpoint '{endpoint_name}' not found; list them "
                    f"with `tiffin online-deployment list --endpoint-name {endpoint_name}`"
                )
            other = session.scalar(
                select(AutoscaleSetting.name).where(
                    AutoscaleSetting.endpoint_name == endpoint_name,
                    AutoscaleSetting.deployment_name == deployment_name,
                    AutoscaleSetting.name != name,
                )
            )
            if other is not None:
                raise ConflictError(
                    f"deployment '{endpoint_name}/{deployment_name}' already has autoscale setting '{other}'; "
                    f"change it with `tiffin monitor autoscale update --name {other}` or delete it first"
                )
            now = now_utc()
            row = session.get(AutoscaleSetting, name)
            if row is not None and not replace:
                raise ConflictError(
                    f"autoscale setting '{name}' exists; change it with `tiffin monitor autoscale update --name "
                    f"{name}` or delete it first"
                )
            if row is None:
                row = AutoscaleSetting(name=name, created_at=now)
                session.add(row)
            row.endpoint_name, row.deployment_name = endpoint_name, deployment_name
            row.spec, row.updated_at = {**spec, "name": name}, now
            session.flush()
            return _record(session, row)

    def modify_autoscale_setting(
        self, name: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> AutoscaleRecord:
        """Read the setting's spec, apply ``change`` to a copy and write the result, in one write transaction (two
        ``rule create`` at once both land). ``change`` may raise to write nothing."""
        with self.session(write=True) as session:
            # FOR UPDATE: on PostgreSQL two writers would both read the old spec (SQLite's BEGIN IMMEDIATE already
            # serialises them).
            row = session.get(AutoscaleSetting, name, with_for_update=True)
            if row is None:
                raise _not_found(name)
            # A deep copy: a change made in place to the loaded value would look like no change to the ORM.
            row.spec = {**change(copy.deepcopy(row.spec)), "name": name}
            row.updated_at = now_utc()
            session.flush()
            return _record(session, row)

    def get_autoscale_setting(self, name: str) -> AutoscaleRecord:
        """The setting ``name``."""
        with self.session() as session:
            row = session.get(AutoscaleSetting, name)
            if row is None:
                raise _not_found(name)
            return _record(session, row)

    def list_autoscale_settings(
        self, endpoint_name: str | None = None, deployment_name: str | None = None
    ) -> list[AutoscaleRecord]:
        """All settings by name, or those targeting one endpoint (and deployment); see ``target_exists``."""
        query = select(AutoscaleSetting).order_by(AutoscaleSetting.name)
        if endpoint_name is not None:
            query = query.where(AutoscaleSetting.endpoint_name == endpoint_name)
        if deployment_name is not None:
            query = query.where(AutoscaleSetting.deployment_name == deployment_name)
        with self.session() as session:
            return [_record(session, row) for row in session.scalars(query)]

    def delete_autoscale_setting(self, name: str) -> None:
        """Delete the setting ``name``; the deployment keeps its current instance count."""
        with self.session(write=True) as session:
            row = session.get(AutoscaleSetting, name)
            if row is None:
                raise _not_found(name)
            session.delete(row)
