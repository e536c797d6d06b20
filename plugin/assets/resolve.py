"""Asset references in deployment specs, resolved against the store: pinned at create/update, inlined at run.

At create/update (online and batch) the control plane calls :func:`pin_references`: every reference in
``model`` and ``environment`` is looked up now, so a missing asset is refused (422) before anything is stored
or started, and it is stored pinned to the exact version it named at that moment, in the short form
``azureml:NAME:VERSION``: a later ``@latest`` never changes a deployment behind its back, and the store's
in-use check (``delete_asset``) finds it by that text. A curated environment is stored as its registry URI
(``azureml://registries/azureml/environments/NAME/versions/V``, or ``.../labels/latest``: tiffin ships one
definition of each, see :mod:`tiffin.assets.curated`).

Where something runs (a replica's spec file, a job frozen at invoke) :func:`inline_assets` turns each pinned
reference into the asset itself: a model's stored files' path, an environment's fields. Runners only ever see
local paths.

``code_configuration.code`` is a folder: Azure's code assets (``azureml:NAME:V``) are not one of tiffin's asset
groups, so such a reference is refused with a message saying to give the folder.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from tiffin.errors import NotFoundError, SpecError
from tiffin.resource_ids import asset_of_id
from tiffin.store.records import AssetRecord, ComputeRecord

from . import blobs
from .curated import CuratedEnvironment, curated_environment, is_curated
from .references import AssetKind, Reference, is_reference, parse_reference

__all__ = [
    "AssetStore",
    "ComputeStore",
    "asset_reference",
    "check_compute",
    "check_intact",
    "inline_assets",
    "pin_references",
    "resolve_reference",
]

# The deployment fields that may hold a reference, and the kind of asset each names.
_FIELDS: tuple[tuple[str, AssetKind], ...] = (("model", "model"), ("environment", "environment"))
# The fields of a registered asset's spec that go inline into a deployment (Azure's model and environment
# YAML fields; show-only keys such as id and creation_context stay behind).
_MODEL_FIELDS = ("name", "version", "description", "tags", "properties", "path", "type", "flavors", "stage")
_ENVIRONMENT_FIELDS = (
    "name", "version", "description", "tags", "properties", "image", "conda_file", "build", "inference_config",
    "os_type", "command",
)  # fmt: skip


class AssetStore(Protocol):
    """What resolving needs of :class:`tiffin.store.Store`."""

    def get_asset(self, kind: str, name: str, version: str) -> AssetRecord: ...

    def latest_asset(self, kind: str, name: str) -> AssetRecord: ...


class ComputeStore(Protocol):
    """What checking a batch deployment's compute needs of :class:`tiffin.store.Store`."""

    def get_compute(self, name: str) -> ComputeRecord: ...

    def list_computes(self) -> list[ComputeRecord]: ...


def asset_reference(value: Any, kind: AssetKind, field: str) -> Reference | None:
    """``value`` parsed as a reference to a ``kind`` asset, or None when it is no reference (a path, a URI, inline).

    Besides the ``azureml:`` forms of :func:`~tiffin.assets.references.parse_reference`, the bare resource id
    ``show --query id -o tsv`` prints (``/subscriptions/.../models/NAME/versions/V``) is one. A reference to
    another kind of asset (an environment's id in ``model``) is a :class:`SpecError` naming ``field``.
    """
    if not isinstance(value, str):
        return None
    if not is_reference(value):
        if asset_of_id(value) is None:
            return None
        value = f"azureml:{value}"
    reference = parse_reference(value, field)
    if reference.kind is not None and reference.kind != kind:
        raise SpecError(f"{value!r} names {_article(reference.kind)} {reference.kind}; give a {kind} here", field=field)
    return reference


def resolve_reference(
    store: AssetStore, reference: Reference, kind: AssetKind, field: str
) -> AssetRecord | CuratedEnvironment:
    """The asset ``reference`` names now; :class:`SpecError` (422) naming it and how to list what exists."""
    if kind == "environment" and is_curated(reference):
        return curated_environment(reference, field)
    if reference.registry is not None:
        raise SpecError(
            f"{reference.text!r} names registry '{reference.registry}', which tiffin does not have (it keeps "
            f"Azure's curated environments only); register the {kind} with `tiffin {kind} create` and give "
            f"azureml:{reference.name}:VERSION",
            field=field,
        )
    try:
        if reference.version is None:
            return store.latest_asset(kind, reference.name)
        return store.get_asset(kind, reference.name, reference.version)
    except NotFoundError as exc:
        # 422, not the store's 404: the deployment is what is wrong, and nothing of it was stored.
        listing = f"`tiffin {kind} list --name {reference.name}`"
        hint = "" if f"tiffin {kind} list" in exc.message else f"; see what exists with {listing}"
        raise SpecError(f"{reference.text} cannot be resolved: {exc.message}{hint}", field=field) from None


def pin_references(store: AssetStore, spec: Mapping[str, Any], *, source: str | None = None) -> dict[str, Any]:
    """A copy of the deployment ``spec`` (Azure's YAML shape) with each reference pinned to the exact version
    it names now (``azureml:NAME:VERSION``; a curated environment as its registry URI).

    Raises :class:`SpecError` (its message starting with ``source``) for a missing asset, a reference of the
    wrong kind, and a code asset reference.
    """
    pinned = copy.deepcopy(dict(spec))
    with _named(source):
        for field, kind in _FIELDS:
            reference = asset_reference(pinned.get(field), kind, field)
            if reference is not None:
                pinned[field] = _pinned(resolve_reference(store, reference, kind, field))
        _refuse_code_asset(pinned)
    return pinned


def inline_assets(store: AssetStore, spec: Mapping[str, Any], *, source: str | None = None) -> dict[str, Any]:
    """A copy of the deployment ``spec`` with each reference replaced by the asset itself, for what runs it: a
    model inline with its stored files' ``path``, an environment with its fields (a curated one with its
    python version and packages as ``conda_file``).

    Meant for pinned specs (:func:`pin_references`), where it looks up exact versions; an unpinned one is
    resolved as :func:`pin_references` would. :class:`SpecError` when an asset is gone.
    """
    inlined = copy.deepcopy(dict(spec))
    with _named(source):
        for field, kind in _FIELDS:
            reference = asset_reference(inlined.get(field), kind, field)
            if reference is None:
                continue
            asset = resolve_reference(store, reference, kind, field)
            if isinstance(asset, CuratedEnvironment):
                inlined[field] = asset.as_environment()
            else:
                keep = _MODEL_FIELDS if kind == "model" else _ENVIRONMENT_FIELDS
                inline = {key: asset.spec[key] for key in keep if asset.spec.get(key) is not None}
                if kind == "model" and isinstance(inline.get("path"), str):
                    check_intact(asset, Path(inline["path"]), field)
                inlined[field] = {**inline, "name": asset.name, "version": asset.version}
    return inlined


def check_intact(asset: AssetRecord, stored: Path, field: str) -> None:
    """:class:`SpecError` when a file of the registered ``asset`` that was hard-linked from its source has been
    rewritten in place since (see :mod:`tiffin.assets.blobs`): what would run is no longer what was registered."""
    changed = blobs.changed_links(stored)
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        raise SpecError(
            f"{asset.kind} {asset.name}:{asset.version} is no longer what was registered: {shown} (hard-linked "
            "from the file it was registered from) was rewritten in place since; register the files again as a new "
            "version "
            f"(`tiffin {asset.kind} create ...`) and point the deployment at it",
            field=field,
        )


@contextmanager
def _named(source: str | None) -> Iterator[None]:
    """SpecErrors raised inside start with ``source`` ("online deployment 'blue': field 'model': ..."), as the
    spec loader's do."""
    try:
        yield
    except SpecError as exc:
        if source is None or exc.source is not None:
            raise
        named = SpecError(exc.message, source=source)
        named.field = exc.field
        raise named from None


def _pinned(asset: AssetRecord | CuratedEnvironment) -> str:
    if isinstance(asset, CuratedEnvironment):
        return asset.reference
    return f"azureml:{asset.name}:{asset.version}"


def _refuse_code_asset(spec: Mapping[str, Any]) -> None:
    code = spec.get("code_configuration")
    value = code.get("code") if isinstance(code, Mapping) else None
    if not isinstance(value, str):
        return
    bare = value.removeprefix("azureml:")
    code_id = bare.startswith("/subscriptions/") and "/codes/" in bare
    if is_reference(value) or asset_of_id(value) is not None or code_id:
        raise SpecError(
            f"{value!r} is a code asset reference; tiffin keeps models, environments and data, not code assets: "
            "give the folder that holds the scoring script (code: ./src)",
            field="code_configuration.code",
        )


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


def check_compute(store: ComputeStore, compute: str | None, instance_count: int, *, source: str | None = None) -> None:
    """Refuse a batch deployment's ``compute`` (``azureml:NAME``, ``NAME`` or its resource id) that is not
    registered, and an ``instance_count`` above that compute's ``max_instances``, naming the fix.

    Azure refuses a compute that does not exist. Here the check starts once any compute is registered: a
    store without computes is a server that runs batch jobs on its own machine, where the compute Azure's
    samples name (``compute: azureml:batch-cluster``) means nothing and is reported as ignored, as before.
    """
    if not compute:
        return
    name = compute.removeprefix("azureml:").rstrip("/").rsplit("/computes/", 1)[-1]
    with _named(source):
        try:
            record = store.get_compute(name)
        except NotFoundError:
            registered = [c.name for c in store.list_computes()]
            if not registered:
                return
            raise SpecError(
                f"compute '{name}' is not registered (the registered ones: {', '.join(registered)}); name one of "
                f"them, or create it first: `tiffin compute create --name {name} --type amlcompute --min-instances "
                f"0 --max-instances {max(instance_count, 1)}`",
                field="compute",
            ) from None
        if record.spec.get("type", "amlcompute") != "amlcompute":
            return  # a Kubernetes compute or a compute instance has no node cap of its own here
        limit = int(record.spec.get("max_instances") or 1)  # Azure's default for an amlcompute
        if instance_count > limit:
            raise SpecError(
                f"instance_count ({instance_count}) is more than compute '{name}' can run: its max_instances "
                f"({limit}) is the most nodes a job may use; ask for at most {limit}, or raise it with `tiffin "
                f"compute update --name {name} --max-instances {instance_count}`",
                field="resources.instance_count",
            )
