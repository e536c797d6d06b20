"""``client.models``, ``client.environments``, ``client.data`` and ``client.compute``: registered assets, as
azure-ai-ml's ``MLClient`` groups of the same names (``create_or_update``, ``get``, ``list``, ``archive``,
``restore``, ``download``; computes ``begin_create_or_update``, ``begin_delete``).

Methods return plain dicts shaped as ``tiffin model show`` prints them (the spec, ``id``,
``creation_context``). Local paths are sent absolute: the server reads them (it runs on this machine).
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tiffin.errors import NotFoundError, TiffinError

from ._environments import EnvironmentBuilds
from ._poller import Poller
from ._transport import Transport, path

if TYPE_CHECKING:  # imported where used: get, list and download need no spec models (pydantic)
    from tiffin.specs import Compute, SpecModel

__all__ = [
    "ComputeOperations",
    "DataOperations",
    "EnvironmentOperations",
    "ModelOperations",
]

# azure-ai-ml's ListViewType values, accepted as plain strings.
_VIEWS = ("ActiveOnly", "ArchivedOnly", "All")
# What a registered version lets change (everything else is immutable, as on Azure).
MUTABLE_FIELDS = ("description", "tags", "stage")


class _SpecClass:
    """A class attribute naming a class of :mod:`tiffin.specs`, imported when first read (``ModelOperations.SPEC``
    is ``ModelAsset``, as before), so that a client that only reads loads no pydantic models."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type) -> type[SpecModel]:
        import tiffin.specs

        return getattr(tiffin.specs, self.name)


class _AssetOperations:
    """What the three versioned kinds share; subclasses name the kind and its spec class."""

    KIND: ClassVar[str]
    COLLECTION: ClassVar[str]
    SPEC: ClassVar[type[SpecModel]]

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def _spec(self, asset: SpecModel | Mapping[str, Any]) -> dict[str, Any]:
        """The whole spec, validated here first. Relative paths are the current directory's, as azure-ai-ml takes
        them for entities built in code (a spec from :func:`~tiffin.specs.load_spec` has absolute ones already):
        the server, which copies the files, does not share this process's directory."""
        from tiffin.specs import SpecModel, parse_spec

        if isinstance(asset, SpecModel) and not isinstance(asset, self.SPEC):
            raise TiffinError(f"expected a {self.SPEC.__name__} or a mapping, not a {type(asset).__name__}")
        data = asset.to_yaml_dict() if isinstance(asset, SpecModel) else dict(asset)
        label = f"{self.KIND} '{data.get('name')}'" if isinstance(data.get("name"), str) else self.KIND
        return parse_spec(data, self.SPEC, label, Path.cwd()).spec.to_yaml_dict()

    def create_or_update(self, asset: SpecModel | Mapping[str, Any]) -> dict[str, Any]:
        """Register a version: the one the spec names, else the next integer one (as Azure when ``version`` is
        omitted). The same name and version again: with the same content, only its description, tags and
        stage are updated; with other content, :class:`ConflictError` (versions are immutable)."""
        spec = self._spec(asset)
        name, version = spec["name"], spec.get("version")
        if version is None:
            return self._t.request("POST", path(self.COLLECTION, name, "versions"), json=spec)
        registered = self._t.request("PUT", path(self.COLLECTION, name, "versions", version), json=spec)
        # Same content, other description/tags/stage: the store kept the first; Azure updates them.
        changes = {k: spec.get(k) for k in MUTABLE_FIELDS if k in spec and spec.get(k) != registered.get(k)}
        if changes:
            registered = self.update(name, version, **changes)
        return registered

    def get(self, name: str, version: str | None = None, label: str | None = None) -> dict[str, Any]:
        """One version, by ``version`` or by ``label="latest"`` (the highest version not archived)."""
        return self._t.request("GET", self._route(name, version, label))

    def list(
        self,
        name: str | None = None,
        *,
        list_view_type: str = "ActiveOnly",
        include_archived: bool = False,
    ) -> list[dict[str, Any]]:
        """The latest version of each name; with ``name``, that name's versions, newest first.

        ``list_view_type`` is azure-ai-ml's: ``ActiveOnly`` (default), ``ArchivedOnly`` or ``All``
        (``include_archived=True`` is the same as ``All``).
        """
        view = str(getattr(list_view_type, "value", list_view_type))
        view = {v.lower(): v for v in _VIEWS}.get(view.replace("_", "").lower(), view)
        if view not in _VIEWS:
            raise TiffinError(f"list_view_type must be one of {', '.join(_VIEWS)} (got {list_view_type!r})")
        archived = include_archived or view != "ActiveOnly"
        route = path(self.COLLECTION) if name is None else path(self.COLLECTION, name, "versions")
        items = self._t.request("GET", route, params={"include_archived": "true" if archived else "false"})
        if view == "ArchivedOnly":
            items = [item for item in items if item.get("archived")]
        return items

    def update(self, name: str, version: str, **changes: Any) -> dict[str, Any]:
        """Change ``description``, ``tags`` or ``stage`` of one version (the rest of a version is immutable)."""
        other = sorted(set(changes) - {*MUTABLE_FIELDS, "archived"})
        if other:
            raise TiffinError(
                f"a registered {self.KIND} version can change only its description, tags and stage, not "
                f"{', '.join(other)}; register a new version instead (create without a version, or with another one)"
            )
        return self._t.request("PATCH", path(self.COLLECTION, name, "versions", version), json=changes)

    def archive(self, name: str, version: str | None = None, label: str | None = None) -> None:
        """Hide a version (or, with neither ``version`` nor ``label``, every version) from ``list`` and from
        ``@latest``; an exact ``azureml:NAME:VERSION`` still resolves."""
        for item in self._targets(name, version, label, archived=False):
            self._t.request("PATCH", path(self.COLLECTION, name, "versions", item), json={"archived": True})

    def restore(self, name: str, version: str | None = None, label: str | None = None) -> None:
        """Undo :meth:`archive` for a version (or every archived version of the name)."""
        for item in self._targets(name, version, label, archived=True):
            self._t.request("PATCH", path(self.COLLECTION, name, "versions", item), json={"archived": False})

    def _route(self, name: str, version: str | None, label: str | None) -> str:
        if version is not None and label is not None:
            raise TiffinError(f"give the {self.KIND}'s version or its label, not both")
        if version is not None:
            return path(self.COLLECTION, name, "versions", str(version))
        if label is not None:
            if label != "latest":
                raise TiffinError(f"the only label a {self.KIND} has is 'latest' (got {label!r})")
            return path(self.COLLECTION, name, "labels", "latest")
        raise TiffinError(
            f"say which version of {self.KIND} '{name}': give a version, or the label 'latest' "
            f"(`tiffin {self.KIND} list --name {name}` lists them)"
        )

    def _targets(self, name: str, version: str | None, label: str | None, *, archived: bool) -> list[str]:
        """The versions that archive (``archived=False``: those not archived yet) or restore acts on."""
        if version is not None and label is not None:
            raise TiffinError(f"give the {self.KIND}'s version or its label, not both")
        if version is not None:
            return [str(version)]
        versions = self.list(name, include_archived=True)
        if not versions:
            raise NotFoundError(f"there is no {self.KIND} '{name}'; `tiffin {self.KIND} list` lists them")
        if label is not None:
            if label != "latest":
                raise TiffinError(f"the only label a {self.KIND} has is 'latest' (got {label!r})")
            # Restoring "latest" means the newest version, archived or not; archiving it, the newest shown.
            shown = versions if archived else [v for v in versions if not v.get("archived")]
            return [str(shown[0]["version"])] if shown else []
        return [str(v["version"]) for v in versions if bool(v.get("archived")) == archived]


class ModelOperations(_AssetOperations):
    """Registered models (``az ml model``)."""

    KIND = "model"
    COLLECTION = "models"
    SPEC = _SpecClass("ModelAsset")

    def download(self, name: str, version: str, download_path: str | os.PathLike[str] = ".") -> Path:
        """Write the model's files into ``download_path/NAME/`` (as ``az ml model download``); that folder."""
        target = Path(download_path).expanduser() / name
        route = path(self.COLLECTION, name, "versions", str(version), "download")
        # Streamed through a temporary file: a model may be larger than this process's memory.
        with tempfile.TemporaryFile() as archive:
            self._t.stream_to("GET", route, archive)
            archive.seek(0)
            target.mkdir(parents=True, exist_ok=True)
            try:
                with tarfile.open(fileobj=archive, mode="r:gz") as tar:
                    # filter="data" refuses absolute names, '..', links out of the folder and device files, and
                    # leaves the files writable (the store's folders are read-only), so a second download works.
                    tar.extractall(target, filter="data")
            except (tarfile.TarError, OSError) as exc:
                raise TiffinError(f"cannot unpack model '{name}' version {version} into {target}: {exc}") from None
        return target


class EnvironmentOperations(EnvironmentBuilds, _AssetOperations):
    """Registered environments (``az ml environment``); and environments built on the server (``build``,
    ``prune``, ``list_built``: :class:`~tiffin.sdk._environments.EnvironmentBuilds`)."""

    KIND = "environment"
    COLLECTION = "environments"
    SPEC = _SpecClass("EnvironmentAsset")


class DataOperations(_AssetOperations):
    """Registered data assets (``az ml data``): local files copied into tiffin's store, or remote URIs."""

    KIND = "data"
    COLLECTION = "data"
    SPEC = _SpecClass("DataAsset")


class ComputeOperations:
    """Computes (``az ml compute``): records whose ``max_instances`` caps a batch deployment's instances."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    def _spec(self, compute: Compute | Mapping[str, Any]) -> dict[str, Any]:
        from tiffin.specs import Compute, parse_spec

        if isinstance(compute, Compute):
            return compute.to_yaml_dict()
        label = f"compute '{compute.get('name')}'" if isinstance(compute.get("name"), str) else "compute"
        return parse_spec(dict(compute), Compute, label).spec.to_yaml_dict()

    def create_or_update(self, compute: Compute | Mapping[str, Any]) -> dict[str, Any]:
        """Create the compute, or replace the spec of the one of that name."""
        spec = self._spec(compute)
        return self._t.request("PUT", path("computes", spec["name"]), json=spec)

    def begin_create_or_update(self, compute: Compute | Mapping[str, Any]) -> Poller[dict[str, Any]]:
        """As :meth:`create_or_update` (a compute record is ready at once); ``.result()`` gives it."""
        result = self.create_or_update(compute)
        return Poller(lambda: result)

    def update(self, name: str, **changes: Any) -> dict[str, Any]:
        """Change some fields (``min_instances``, ``max_instances``, ``idle_time_before_scale_down``, ``tags``...)."""
        return self._t.request("PATCH", path("computes", name), json=changes)

    def begin_update(self, compute: Compute | Mapping[str, Any]) -> Poller[dict[str, Any]]:
        """Change the fields the compute sets (as azure-ai-ml's ``begin_update``); ``.result()`` gives it."""
        from tiffin.specs import Compute

        given = compute.model_dump(mode="json", exclude_unset=True) if isinstance(compute, Compute) else dict(compute)
        name = given.pop("name", None)
        if not isinstance(name, str):
            raise TiffinError("say which compute to update: its name is missing")
        result = self.update(name, **given)
        return Poller(lambda: result)

    def get(self, name: str) -> dict[str, Any]:
        """One compute (:class:`NotFoundError` if there is none)."""
        return self._t.request("GET", path("computes", name))

    def list(self, compute_type: str | None = None) -> list[dict[str, Any]]:
        """Every compute, or those of one ``type`` (``amlcompute``, ``kubernetes``, ``computeinstance``)."""
        items = self._t.request("GET", "/computes")
        if compute_type is not None:
            wanted = compute_type.replace("_", "").lower()
            items = [c for c in items if str(c.get("type", "")).replace("_", "").lower() == wanted]
        return items

    def delete(self, name: str) -> None:
        """Delete the compute (:class:`ConflictError` naming the batch deployments that use it)."""
        self._t.request("DELETE", path("computes", name))

    def begin_delete(self, name: str) -> Poller[None]:
        """As :meth:`delete`, which completes at once."""
        self.delete(name)
        return Poller(lambda: None)
