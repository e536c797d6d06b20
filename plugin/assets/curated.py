"""Azure ML's curated environments, as tiffin ships them (``curated.json``: name → python version and packages).

Azure's deployment files name them two ways, both handled here::

    azureml://registries/azureml/environments/sklearn-1.5/versions/12     .../sklearn-1.5/labels/latest
    azureml:AzureML-sklearn-1.0-ubuntu20.04-py38-cpu@latest              azureml:AzureML-sklearn-1.5:3

The table is read from Azure's published definitions (github.com/Azure/azureml-assets, the
``conda_dependencies.yaml`` of each environment; the commit is in the file). Azure publishes them with
``version: auto``, so the table has no Azure version numbers: a reference's version is kept as written and
means the definition tiffin ships. Issue 13 builds them; here a reference resolves to a :class:`CuratedEnvironment`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from tiffin.errors import SpecError

from .references import Reference

__all__ = ["CURATED_PREFIX", "CURATED_REGISTRY", "CuratedEnvironment", "curated_environment", "is_curated", "known"]

CURATED_REGISTRY = "azureml"
"""Azure's registry of curated assets: ``azureml://registries/azureml/...``."""

CURATED_PREFIX = "AzureML-"
"""Azure reserves this prefix for curated environments in a workspace: a user cannot register one so named."""


@dataclass(frozen=True, slots=True)
class CuratedEnvironment:
    """One curated environment: what Azure's image holds, as a conda file would list it."""

    name: str
    version: str | None
    """As the reference gave it (None: ``latest``); the definition is tiffin's shipped one either way."""
    description: str
    python: str
    conda: tuple[str, ...]
    pip: tuple[str, ...]
    image: str
    gpu: bool

    @property
    def reference(self) -> str:
        """The registry URI a deployment stores it under (see :mod:`tiffin.assets.resolve`)."""
        tail = f"versions/{self.version}" if self.version else "labels/latest"
        return f"azureml://registries/{CURATED_REGISTRY}/environments/{self.name}/{tail}"

    def conda_file(self) -> dict[str, Any]:
        """The environment as the conda mapping Azure's environment YAML takes inline (``conda_file:``)."""
        return {
            "name": self.name,
            "channels": ["conda-forge", "anaconda"],
            "dependencies": [f"python={self.python}", "pip", *self.conda, {"pip": list(self.pip)}],
        }

    def as_environment(self) -> dict[str, Any]:
        """An inline environment (Azure's environment YAML fields) standing for it in a replica's spec."""
        return {
            "name": self.name,
            **({"version": self.version} if self.version else {}),
            "description": self.description,
            "image": self.image,
            "conda_file": self.conda_file(),
            "tags": {"curated": "true", **({"GPU": "true"} if self.gpu else {})},
        }


@cache
def _table() -> dict[str, dict[str, Any]]:
    text = resources.files("tiffin.assets").joinpath("curated.json").read_text(encoding="utf-8")
    return json.loads(text)["environments"]


@cache
def _by_name() -> dict[str, str]:
    """Every name a curated environment goes by, lower-cased, to its table name."""
    names: dict[str, str] = {}
    for name, entry in _table().items():
        for alias in (name, *entry.get("aliases", ())):
            names[alias.lower()] = name
    return names


def known() -> list[str]:
    """The curated environments' names, sorted."""
    return sorted(_table())


def is_curated(reference: Reference) -> bool:
    """Whether ``reference`` names a curated environment: Azure's ``azureml`` registry, or the reserved prefix."""
    if reference.kind not in (None, "environment"):
        return False
    if reference.registry is not None:
        return reference.registry == CURATED_REGISTRY
    return reference.name.startswith(CURATED_PREFIX)


def curated_environment(reference: Reference, field: str | None = None) -> CuratedEnvironment:
    """The curated environment ``reference`` names; :class:`SpecError` listing the known ones when none is."""
    name = reference.name.removeprefix(CURATED_PREFIX) if reference.registry is None else reference.name
    found = _by_name().get(name.lower())
    if found is None:
        raise SpecError(
            f"{reference.text!r} names the curated environment {name!r}, which tiffin does not know; the curated "
            f"environments it knows are {', '.join(known())} (azureml://registries/azureml/environments/NAME/"
            "labels/latest), or register your own with `tiffin environment create`",
            field=field,
        )
    entry = _table()[found]
    return CuratedEnvironment(
        name=found,
        version=reference.version,
        description=entry["description"],
        python=entry["python"],
        conda=tuple(entry["conda"]),
        pip=tuple(entry["pip"]),
        image=entry["image"],
        gpu=bool(entry["gpu"]),
    )
