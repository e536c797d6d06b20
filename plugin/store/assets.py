"""Registered assets and computes: the part of the :class:`~tiffin.store.Store` behind ``tiffin model|environment|
data|compute`` (migration 0005).

Versions are kept as Azure keeps them: immutable once written (but for ``description``, ``tags``, ``stage`` and
``archived``), numbered ``1, 2, ...`` when the caller gives none, ``latest`` being the highest version not archived.
Nothing here looks at files: the content store (:mod:`tiffin.assets.blobs`) is the caller's.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tiffin.assets.references import ASSET_KINDS, is_reference, parse_reference
from tiffin.errors import ConflictError, NotFoundError, SpecError

from .core import StoreCore, now_utc
from .models import Asset, Compute, Deployment
from .records import AssetRecord, ComputeRecord

__all__ = ["MUTABLE_ASSET_FIELDS", "AssetRepository", "version_order"]

MUTABLE_ASSET_FIELDS = frozenset({"description", "tags", "stage"})
"""The fields of a registered version that may change; the rest make the version what it is."""

# The deployment field that names an asset of each kind (stored pinned: azureml:NAME:VERSION). Data assets are
# a job's inputs, never a deployment's.
_REFERENCE_FIELDS: dict[str, str | None] = {"model": "model", "environment": "environment", "data": None}

# How many times an auto-numbered create retries when another writer took the number first.
_AUTO_VERSION_TRIES = 20


def _check_kind(kind: str) -> None:
    if kind not in ASSET_KINDS:
        raise ValueError(f"kind must be one of {ASSET_KINDS}, not {kind!r}")


def version_order(version: str, created_at: datetime) -> tuple[int, int, datetime]:
    """Sort key of a version, highest last: all-digit versions as integers, above any other; others by age."""
    if version.isdigit():
        return (1, int(version), created_at)
    return (0, 0, created_at)


def _record(row: Asset) -> AssetRecord:
    return AssetRecord(
        kind=row.kind,
        name=row.name,
        version=row.version,
        spec=dict(row.spec),
        digest=row.digest,
        archived=bool(row.archived),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _compute_record(row: Compute) -> ComputeRecord:
    return ComputeRecord(name=row.name, spec=dict(row.spec), created_at=row.created_at, updated_at=row.updated_at)


def _identity(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What makes a version what it is: its spec without the fields that may change."""
    return {key: value for key, value in spec.items() if key not in MUTABLE_ASSET_FIELDS}


def _list_hint(kind: str, name: str) -> str:
    return f"list its versions with `tiffin {kind} list --name {name}`"


class AssetRepository(StoreCore):
    """Models, environments and data assets by name and version, and computes; one of the bases of ``Store``."""

    # --- assets ------------------------------------------------------------------------------------------

    def create_asset(
        self,
        kind: str,
        name: str,
        spec: Mapping[str, Any],
        *,
        version: str | None = None,
        digest: str | None = None,
    ) -> AssetRecord:
        """Register ``name`` at ``version`` (the next whole number when None, as ``az ml model create`` without
        ``--version``). The same version with the same content is a no-op returning the record there; with
        other content it is a :class:`ConflictError`, versions being immutable. ``spec``'s ``name`` and
        ``version`` are set to the record's.
        """
        _check_kind(kind)
        for _ in range(_AUTO_VERSION_TRIES if version is None else 1):
            try:
                with self.session(write=True) as session:
                    chosen = version if version is not None else self._next_version(session, kind, name)
                    existing = session.get(Asset, (kind, name, chosen))
                    full = {**spec, "name": name, "version": chosen}
                    if existing is not None and version is None:
                        continue  # another writer committed this number after we read the highest one: the next
                    if existing is not None:
                        return self._same_or_conflict(existing, full, digest)
                    now = now_utc()
                    row = Asset(
                        kind=kind,
                        name=name,
                        version=chosen,
                        spec=full,
                        digest=digest,
                        archived=False,
                        created_at=now,
                        updated_at=now,
                    )
                    session.add(row)
                    session.flush()
                    return _record(row)
            except IntegrityError:
                # Another writer registered this version between our read and write (PostgreSQL lets both
                # read): an explicit version is then compared with theirs, an automatic one takes the next.
                if version is not None:
                    with self.session() as session:
                        existing = session.get(Asset, (kind, name, version))
                        if existing is not None:
                            return self._same_or_conflict(existing, {**spec, "name": name, "version": version}, digest)
                    raise
        raise ConflictError(f"could not number a new version of {kind} '{name}': too many writers at once; retry")

    @staticmethod
    def _next_version(session: Session, kind: str, name: str) -> str:
        versions = session.scalars(select(Asset.version).where(Asset.kind == kind, Asset.name == name))
        numbers = [int(v) for v in versions if v.isdigit()]
        return str(max(numbers, default=0) + 1)

    @staticmethod
    def _same_or_conflict(existing: Asset, spec: Mapping[str, Any], digest: str | None) -> AssetRecord:
        if existing.digest == digest and _identity(existing.spec) == _identity(spec):
            return _record(existing)
        kind, name, version = existing.kind, existing.name, existing.version
        raise ConflictError(
            f"{kind} '{name}' version {version} exists already with other content, and a version never changes "
            f"once registered; register a new version instead: leave the version out to get the next number, "
            f"or give another with --version N (--set version=N); {_list_hint(kind, name)}"
        )

    def get_asset(self, kind: str, name: str, version: str) -> AssetRecord:
        """One version, archived ones too (an exact version always resolves); :class:`NotFoundError` otherwise."""
        _check_kind(kind)
        with self.session() as session:
            row = session.get(Asset, (kind, name, version))
            if row is not None:
                return _record(row)
            any_version = session.scalar(
                select(func.count()).select_from(Asset).where(Asset.kind == kind, Asset.name == name)
            )
        if any_version:
            raise NotFoundError(f"{kind} '{name}' has no version {version}; {_list_hint(kind, name)}")
        raise NotFoundError(
            f"{kind} '{name}' is not registered; list the registered ones with `tiffin {kind} list`, or register "
            f"it with `tiffin {kind} create`"
        )

    def latest_asset(self, kind: str, name: str) -> AssetRecord:
        """The highest version not archived (``@latest``); :class:`NotFoundError` when there is none."""
        _check_kind(kind)
        with self.session() as session:
            rows = session.execute(
                select(Asset.version, Asset.archived, Asset.created_at).where(Asset.kind == kind, Asset.name == name)
            ).all()
            live = [row for row in rows if not row.archived]
            if live:
                best = max(live, key=lambda row: version_order(row.version, row.created_at))
                found = session.get(Asset, (kind, name, best.version))
                assert found is not None  # read in this transaction
                return _record(found)
        if rows:
            newest = max(rows, key=lambda row: version_order(row.version, row.created_at)).version
            raise NotFoundError(
                f"every version of {kind} '{name}' is archived, so it has no latest version; name one exactly "
                f"(azureml:{name}:{newest}) or restore one with `tiffin {kind} restore --name {name} --version "
                f"{newest}`"
            )
        raise NotFoundError(
            f"{kind} '{name}' is not registered; list the registered ones with `tiffin {kind} list`, or register "
            f"it with `tiffin {kind} create`"
        )

    def list_assets(self, kind: str, name: str | None = None, *, include_archived: bool = False) -> list[AssetRecord]:
        """Without ``name``: the latest version of each name, by name (as ``az ml model list``). With it: its
        versions, newest first. Archived versions only with ``include_archived``."""
        _check_kind(kind)
        with self.session() as session:
            query = select(Asset.name, Asset.version, Asset.archived, Asset.created_at).where(Asset.kind == kind)
            if name is not None:
                query = query.where(Asset.name == name)
            rows = [row for row in session.execute(query).all() if include_archived or not row.archived]
            if name is None:
                best: dict[str, Any] = {}
                for row in rows:
                    held = best.get(row.name)
                    if held is None or version_order(row.version, row.created_at) > version_order(
                        held.version, held.created_at
                    ):
                        best[row.name] = row
                chosen = [best[key] for key in sorted(best)]
            else:
                chosen = sorted(rows, key=lambda row: version_order(row.version, row.created_at), reverse=True)
            if not chosen:
                return []
            wanted = {(row.name, row.version) for row in chosen}
            full_query = select(Asset).where(Asset.kind == kind)
            if name is not None:
                full_query = full_query.where(Asset.name == name)
            by_key = {
                (row.name, row.version): row for row in session.scalars(full_query) if (row.name, row.version) in wanted
            }
            return [_record(by_key[(row.name, row.version)]) for row in chosen]

    def update_asset(
        self,
        kind: str,
        name: str,
        version: str,
        *,
        description: str | None = None,
        tags: Mapping[str, Any] | None = None,
        stage: str | None = None,
        archived: bool | None = None,
    ) -> AssetRecord:
        """Change what may change of a version; ``None`` leaves a field as it is. ``tags`` replaces them all."""
        _check_kind(kind)
        with self.session(write=True) as session:
            row = session.get(Asset, (kind, name, version))
            if row is None:
                raise NotFoundError(f"{kind} '{name}' has no version {version}; {_list_hint(kind, name)}")
            spec = dict(row.spec)
            for field, value in (("description", description), ("tags", tags), ("stage", stage)):
                if value is not None:
                    spec[field] = dict(value) if isinstance(value, Mapping) else value
            row.spec = spec
            if archived is not None:
                row.archived = archived
            row.updated_at = now_utc()
            session.flush()
            return _record(row)

    def delete_asset(self, kind: str, name: str, version: str) -> None:
        """Delete a version; :class:`ConflictError` naming every deployment that uses it, which must move first."""
        _check_kind(kind)
        with self.session(write=True) as session:
            row = session.get(Asset, (kind, name, version))
            if row is None:
                raise NotFoundError(f"{kind} '{name}' has no version {version}; {_list_hint(kind, name)}")
            users = self._deployments_using(session, kind, name, version)
            if users:
                raise ConflictError(
                    f"{kind} '{name}' version {version} is in use by deployment {', '.join(users)} "
                    f"(ENDPOINT/DEPLOYMENT); update or delete {'those' if len(users) > 1 else 'it'} first, or archive "
                    f"the version instead (`tiffin {kind} archive --name {name} --version {version}`)"
                )
            session.delete(row)

    def digest_in_use(self, digest: str) -> bool:
        """Whether any registered version still holds the content ``digest`` (the content store may drop it)."""
        with self.session() as session:
            return bool(session.scalar(select(func.count()).select_from(Asset).where(Asset.digest == digest)))

    def _deployments_using(self, session: Session, kind: str, name: str, version: str) -> list[str]:
        """``ENDPOINT/DEPLOYMENT`` of every deployment whose spec names this version (or ``@latest`` while this is
        the latest: such a reference should have been pinned, but is not let dangle)."""
        field = _REFERENCE_FIELDS[kind]
        if field is None:
            return []
        latest: str | None = None
        out = []
        for row in session.scalars(select(Deployment).order_by(Deployment.endpoint_name, Deployment.name)):
            value = row.spec.get(field)
            if not is_reference(value):
                continue
            try:
                ref = parse_reference(value)
            except SpecError:
                continue
            if ref.name != name or ref.registry is not None or ref.kind not in (None, kind):
                continue
            if ref.version is None:
                if latest is None:
                    latest = self._latest_version(session, kind, name) or ""
                hit = latest == version
            else:
                hit = ref.version == version
            if hit:
                out.append(f"{row.endpoint_name}/{row.name}")
        return out

    @staticmethod
    def _latest_version(session: Session, kind: str, name: str) -> str | None:
        rows = session.execute(
            select(Asset.version, Asset.created_at).where(
                Asset.kind == kind, Asset.name == name, Asset.archived.is_(False)
            )
        ).all()
        return max(rows, key=lambda row: version_order(row.version, row.created_at)).version if rows else None

    # --- computes ----------------------------------------------------------------------------------------

    def put_compute(self, name: str, spec: Mapping[str, Any]) -> ComputeRecord:
        """Create or replace compute ``name`` (as ``az ml compute create`` on an existing name updates it)."""
        now = now_utc()
        with self.session(write=True) as session:
            row = session.get(Compute, name)
            if row is None:
                row = Compute(name=name, spec={**spec, "name": name}, created_at=now, updated_at=now)
                session.add(row)
            else:
                row.spec = {**spec, "name": name}
                row.updated_at = now
            session.flush()
            return _compute_record(row)

    def get_compute(self, name: str) -> ComputeRecord:
        with self.session() as session:
            row = session.get(Compute, name)
            if row is None:
                raise NotFoundError(
                    f"compute '{name}' not found; list them with `tiffin compute list`, or create it with "
                    f"`tiffin compute create --name {name} --type amlcompute --max-instances N`"
                )
            return _compute_record(row)

    def list_computes(self) -> list[ComputeRecord]:
        with self.session() as session:
            return [_compute_record(row) for row in session.scalars(select(Compute).order_by(Compute.name))]

    def update_compute(self, name: str, **changes: Any) -> ComputeRecord:
        """Merge ``changes`` into compute ``name``'s spec (the caller validates the result)."""
        with self.session(write=True) as session:
            row = session.get(Compute, name)
            if row is None:
                raise NotFoundError(f"compute '{name}' not found; list them with `tiffin compute list`")
            row.spec = {**row.spec, **changes, "name": name}
            row.updated_at = now_utc()
            session.flush()
            return _compute_record(row)

    def delete_compute(self, name: str) -> None:
        """Delete compute ``name``; :class:`ConflictError` naming the batch deployments that run on it."""
        with self.session(write=True) as session:
            row = session.get(Compute, name)
            if row is None:
                raise NotFoundError(f"compute '{name}' not found; list them with `tiffin compute list`")
            users = [
                f"{dep.endpoint_name}/{dep.name}"
                for dep in session.scalars(
                    select(Deployment)
                    .where(Deployment.kind == "batch")
                    .order_by(Deployment.endpoint_name, Deployment.name)
                )
                if isinstance(dep.spec.get("compute"), str) and dep.spec["compute"].removeprefix("azureml:") == name
            ]
            if users:
                raise ConflictError(
                    f"compute '{name}' is in use by batch deployment {', '.join(users)} (ENDPOINT/DEPLOYMENT); "
                    "update those to another compute or delete them first"
                )
            session.delete(row)
