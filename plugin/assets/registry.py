"""Registering assets and computes: what ``tiffin model create`` (and its siblings) does on the server.

A registration validates the asset's Azure YAML fields, copies a local ``path`` (a model's or data asset's
files, an environment's build context) into the content store (:mod:`tiffin.assets.blobs`), reads an
environment's conda file into the record (as Azure's ``show`` prints it), and writes the version to the store,
whose rules decide between new, no-op and conflict. A new model version is also saved into BentoML's model
store (:mod:`tiffin.assets.bento_models`). Answers are plain JSON, as ``az ml model show`` prints them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tiffin.config import assets_root
from tiffin.errors import ConflictError, NotFoundError, SpecError
from tiffin.resource_ids import asset_id, compute_id
from tiffin.specs import Compute, DataAsset, EnvironmentAsset, ModelAsset, SpecModel, is_remote_path, parse_spec
from tiffin.specs.strict_yaml import read_yaml
from tiffin.store import AssetRecord, ComputeRecord, Store

from . import blobs

__all__ = ["SPECS", "AssetRegistry", "asset_json", "compute_json"]

SPECS: dict[str, type[SpecModel]] = {"model": ModelAsset, "environment": EnvironmentAsset, "data": DataAsset}
"""The spec class of each asset kind."""

_CHANGEABLE = ("description", "tags", "stage")
_PATCH_FIELDS = frozenset({*_CHANGEABLE, "archived"})
# Keys `show` adds (an answer fed back, as azure-ai-ml users do with `get` results): dropped, never stored.
# What `compute show` answers besides the spec (current_node_count and jobs: its running jobs, now), dropped on put.
_COMPUTE_ANSWER_FIELDS = frozenset(
    {"id", "provisioning_state", "provisioning_errors", "created_on", "state", "current_node_count", "jobs"}
)
_MAX_CONDA_BYTES = 1 << 20


def asset_json(record: AssetRecord) -> dict[str, Any]:
    """A version as ``az ml model show`` prints it: its fields, ``id``, ``creation_context`` (and ``archived``)."""
    # name and version first: a table (`-o table`) shows the first columns that fit.
    out: dict[str, Any] = {
        "name": record.name,
        "version": record.version,
        **{key: value for key, value in record.spec.items() if key not in ("name", "version")},
        "id": asset_id(record.kind, record.name, record.version),
        "creation_context": {
            "created_at": record.created_at.isoformat(),
            "last_modified_at": record.updated_at.isoformat(),
        },
    }
    if record.archived:
        out["archived"] = True
    return out


def compute_json(record: ComputeRecord) -> dict[str, Any]:
    """A compute as ``az ml compute show`` prints it (a record: ``Succeeded`` from the start)."""
    return {
        "name": record.name,
        **{key: value for key, value in record.spec.items() if key != "name"},
        "id": compute_id(record.name),
        "provisioning_state": "Succeeded",
        "created_on": record.created_at.isoformat(),
    }


def _label(kind: str, name: str) -> str:
    return f"{kind} '{name}'"


def _same_or_absent(body: Mapping[str, Any], field: str, expected: str) -> None:
    value = body.get(field, expected)
    if value is not None and str(value) != expected:
        raise SpecError(f"is {value!r} but the URL names {expected!r}; make them agree", field=field)


class AssetRegistry:
    """Registered assets and computes over one :class:`Store`, their files under ``home`` (``TIFFIN_HOME``)."""

    def __init__(self, store: Store, home: Path) -> None:
        self.store = store
        self.home = home

    def scratch_dir(self) -> Path:
        """Where downloads are assembled before they are sent (inside ``TIFFIN_HOME``, private)."""
        return self.home / "assets" / "scratch"

    # --- assets ------------------------------------------------------------------------------------------

    def register(
        self, kind: str, name: str, version: str | None, body: Mapping[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Register a version from its Azure YAML fields; the answer and whether the version is new."""
        spec_class = SPECS[kind]
        fields = {key: value for key, value in body.items() if key not in spec_class.AZURE_READ_ONLY}
        _same_or_absent(fields, "name", name)
        if version is not None:
            _same_or_absent(fields, "version", version)
        else:
            fields.pop("version", None)  # POST .../versions: the store numbers it
        fields["name"] = name
        if version is not None:
            fields["version"] = version
        spec = parse_spec(fields, spec_class, _label(kind, name)).spec
        existed = version is not None and self._exists(kind, name, version)
        stored, digest = self._store_files(kind, spec)
        try:
            record = self.store.create_asset(kind, name, stored, version=version, digest=digest)
        except BaseException:
            self._release(digest)
            raise
        created = not existed
        if created and kind == "model":
            from .bento_models import save_bento_model  # BentoML is imported only when a model is registered

            save_bento_model(record)
        return asset_json(record), created

    def _exists(self, kind: str, name: str, version: str) -> bool:
        try:
            self.store.get_asset(kind, name, version)
        except NotFoundError:
            return False
        return True

    def _store_files(self, kind: str, spec: SpecModel) -> tuple[dict[str, Any], str | None]:
        """The spec to store (its local files replaced by their stored copy) and the copy's digest."""
        out = spec.to_yaml_dict()
        out.pop("name", None)
        out.pop("version", None)
        if isinstance(spec, ModelAsset | DataAsset):
            if is_remote_path(spec.path):
                return out, None  # an https:// or azureml://datastores/ URI, an MLflow models:/ URI: kept as is
            source = self._local(spec.path, "path")
            if isinstance(spec, DataAsset):
                _check_data_shape(spec.type, source)
            digest, stored = blobs.store_tree(self.home, source)
            out["path"] = str(stored)
            return out, digest
        assert isinstance(spec, EnvironmentAsset)
        if isinstance(spec.conda_file, str):
            out["conda_file"] = self._conda(spec.conda_file)
        if spec.build is not None and not is_remote_path(spec.build.path):
            digest, stored = blobs.store_tree(self.home, self._local(spec.build.path, "build.path"))
            out["build"] = {**out["build"], "path": str(stored)}
            return out, digest
        return out, None

    def _local(self, value: str, field: str) -> Path:
        path = Path(value)
        if not path.is_absolute():
            raise SpecError(
                f"is {value!r}, a relative path; send an absolute path on the server's machine (the tiffin CLI "
                "and SDK do)",
                field=field,
            )
        path = Path(os.path.normpath(path))
        home = self.home.resolve()
        real = path.resolve()
        if real == Path(real.anchor):
            raise SpecError("is the file system's root; give the model's or data's own file or folder", field=field)
        for own, what in ((home, "TIFFIN_HOME"), (assets_root(self.home).resolve(), "TIFFIN_ASSETS_DIR")):
            if real.is_relative_to(own) or own.is_relative_to(real):
                raise SpecError(
                    f"is {path}, which holds or is inside tiffin's own folder ({what} {own}); give the model's or "
                    "data's own file or folder",
                    field=field,
                )
        return path

    def _conda(self, value: str) -> dict[str, Any]:
        """A conda file's content, as Azure's ``show`` prints an environment's ``conda_file``."""
        path = self._local(value, "conda_file")
        try:
            size = path.stat().st_size
        except OSError:
            raise SpecError(
                f"{path} does not exist; give the path of the environment's conda YAML", field="conda_file"
            ) from None
        if size > _MAX_CONDA_BYTES:
            raise SpecError(f"{path} is {size} bytes; a conda file is a few KiB of YAML", field="conda_file")
        data, _ = read_yaml(path)
        return data

    def _release(self, digest: str | None) -> None:
        if digest is not None and not self.store.digest_in_use(digest):
            blobs.release(self.home, digest)

    def get(self, kind: str, name: str, version: str) -> dict[str, Any]:
        return asset_json(self.store.get_asset(kind, name, version))

    def latest(self, kind: str, name: str) -> dict[str, Any]:
        return asset_json(self.store.latest_asset(kind, name))

    def list(self, kind: str, name: str | None, include_archived: bool) -> list[dict[str, Any]]:
        return [asset_json(r) for r in self.store.list_assets(kind, name, include_archived=include_archived)]

    def update(self, kind: str, name: str, version: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Change ``description``, ``tags``, ``stage`` and ``archived``; anything else is refused."""
        other = sorted(set(body) - _PATCH_FIELDS)
        if other:
            raise ConflictError(
                f"{kind} '{name}' version {version} can change only its description, tags, stage and archived, not "
                f"{', '.join(other)}: a version is immutable; register a new version instead"
            )
        changes: dict[str, Any] = {}
        for field in _CHANGEABLE:
            if field in body:
                value = body[field]
                wanted = dict if field == "tags" else str
                if value is not None and not isinstance(value, wanted):
                    raise SpecError(f"must be {'a mapping' if field == 'tags' else 'a string'}", field=field)
                changes[field] = value if value is not None else ({} if field == "tags" else "")
        archived = body.get("archived")
        if archived is not None and not isinstance(archived, bool):
            raise SpecError("must be true or false", field="archived")
        return asset_json(self.store.update_asset(kind, name, version, archived=archived, **changes))

    def delete(self, kind: str, name: str, version: str) -> None:
        record = self.store.get_asset(kind, name, version)
        self.store.delete_asset(kind, name, version)
        self._release(record.digest)
        if kind == "model" and record.digest is not None:
            from .bento_models import delete_bento_model

            delete_bento_model(name, version)

    def model_files(self, name: str, version: str) -> Path:
        """The stored files of a model version (:class:`ConflictError` for a model registered as a URI)."""
        record = self.store.get_asset("model", name, version)
        path = str(record.spec.get("path", ""))
        if record.digest is None or is_remote_path(path):
            raise ConflictError(f"model '{name}' version {version} is the URI {path!r}; tiffin holds no files of it")
        stored = Path(path)
        if not stored.exists():
            raise NotFoundError(f"the files of model '{name}' version {version} are missing from {stored}")
        return stored

    # --- computes ----------------------------------------------------------------------------------------

    def list_computes(self) -> list[dict[str, Any]]:
        return [compute_json(record) for record in self.store.list_computes()]

    def get_compute(self, name: str) -> dict[str, Any]:
        return compute_json(self.store.get_compute(name))

    def put_compute(self, name: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        fields = {key: value for key, value in body.items() if key not in _COMPUTE_ANSWER_FIELDS}
        _same_or_absent(fields, "name", name)
        fields["name"] = name
        spec = parse_spec(fields, Compute, f"compute '{name}'").spec
        try:
            self.store.get_compute(name)
            created = False
        except NotFoundError:
            created = True
        return compute_json(self.store.put_compute(name, spec.to_yaml_dict())), created

    def update_compute(self, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        current = self.store.get_compute(name)
        changes = {key: value for key, value in body.items() if key not in _COMPUTE_ANSWER_FIELDS}
        _same_or_absent(changes, "name", name)
        merged = {key: value for key, value in {**current.spec, **changes}.items() if value is not None}
        spec = parse_spec(merged, Compute, f"compute '{name}'").spec
        return compute_json(self.store.put_compute(name, spec.to_yaml_dict()))

    def delete_compute(self, name: str) -> None:
        self.store.delete_compute(name)


def _check_data_shape(data_type: str, source: Path) -> None:
    """``uri_file`` is one file; ``uri_folder`` and ``mltable`` a folder (an MLTable one holding ``MLTable``)."""
    if not source.exists():
        raise SpecError(f"{source} does not exist; give the data's file or folder", field="path")
    if data_type == "uri_file" and not source.is_file():
        raise SpecError(f"{source} is a folder but type is uri_file; use type uri_folder", field="path")
    if data_type != "uri_file" and not source.is_dir():
        raise SpecError(f"{source} is a file but type is {data_type}; use type uri_file", field="path")
    if data_type == "mltable" and not (source / "MLTable").is_file():
        raise SpecError(f"{source} holds no MLTable file, which an mltable data asset needs", field="path")
