"""Asset references as Azure ML writes them, parsed (pure).

Every form Azure's YAML, ``--set`` values and ``--input`` flags use::

    azureml:NAME:VERSION                     azureml:NAME@latest            azureml:NAME (latest, for data inputs)
    azureml:/subscriptions/S/resourceGroups/G/providers/Microsoft.MachineLearningServices/workspaces/W/models/NAME/versions/V
    azureml://registries/azureml/environments/NAME/versions/V        .../environments/NAME/labels/latest
    azureml://locations/L/workspaces/W/models/NAME/versions/V        (the asset-id form `show` prints in places)

A reference says which asset it names; resolving it against the store is :mod:`tiffin.assets.resolve`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from tiffin.errors import SpecError

__all__ = ["ASSET_KINDS", "AssetKind", "Reference", "is_reference", "parse_reference"]

AssetKind = Literal["model", "environment", "data"]
ASSET_KINDS: tuple[AssetKind, ...] = ("model", "environment", "data")

# Azure's resource-id collection names, and the CLI's singular kinds.
_COLLECTIONS: dict[str, AssetKind] = {"models": "model", "environments": "environment", "data": "data"}
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}"
_VERSION = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
_SHORT = re.compile(rf"azureml:(?P<name>{_NAME}?)(?::(?P<version>{_VERSION})|@(?P<label>[A-Za-z0-9_-]+))?")
_RESOURCE_ID = re.compile(
    rf"azureml:/subscriptions/[^/]+/resource[gG]roups/[^/]+/providers/Microsoft\.MachineLearningServices/"
    rf"workspaces/[^/]+/(?P<collection>models|environments|data)/(?P<name>{_NAME})"
    rf"(?:/versions/(?P<version>{_VERSION})|/labels/(?P<label>[A-Za-z0-9_-]+))?"
)
_REGISTRY = re.compile(
    rf"azureml://registries/(?P<registry>[A-Za-z0-9_-]+)/(?P<collection>models|environments|data)/(?P<name>{_NAME})"
    rf"(?:/versions/(?P<version>{_VERSION})|/labels/(?P<label>[A-Za-z0-9_-]+))?"
)
_LOCATION = re.compile(
    rf"azureml://locations/[^/]+/workspaces/[^/]+/(?P<collection>models|environments|data)/(?P<name>{_NAME})"
    rf"(?:/versions/(?P<version>{_VERSION})|/labels/(?P<label>[A-Za-z0-9_-]+))?"
)


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed reference: ``version`` or ``label`` (``latest``) or neither (latest, where Azure allows it).

    ``registry`` is set for ``azureml://registries/NAME/...`` (Azure's shared registries; ``azureml`` holds the
    curated environments). ``kind`` is None for the short form, which does not say (the field it is in does).
    """

    text: str
    name: str
    kind: AssetKind | None = None
    version: str | None = None
    label: str | None = None
    registry: str | None = None

    @property
    def latest(self) -> bool:
        """Whether it names the latest version (``@latest``, ``/labels/latest``, or no version at all)."""
        return self.version is None


def is_reference(value: object) -> bool:
    """Whether ``value`` is an ``azureml:`` asset reference (not a datastore URI ``azureml://datastores/...``)."""
    return (
        isinstance(value, str)
        and value.startswith("azureml:")
        and not value.startswith(("azureml://datastores/", "azureml://subscriptions/"))
    )


def parse_reference(text: str, field: str | None = None) -> Reference:
    """``text`` parsed; :class:`SpecError` naming ``field`` and the accepted forms when it is none of them."""
    for pattern in (_RESOURCE_ID, _REGISTRY, _LOCATION):
        match = pattern.fullmatch(text)
        if match:
            label = match.group("label")
            _check_label(label, text, field)
            return Reference(
                text=text,
                name=match.group("name"),
                kind=_COLLECTIONS[match.group("collection")],
                version=match.group("version"),
                label=label,
                registry=match.groupdict().get("registry"),
            )
    match = _SHORT.fullmatch(text)
    if match and match.group("name"):
        label = match.group("label")
        _check_label(label, text, field)
        return Reference(text=text, name=match.group("name"), version=match.group("version"), label=label)
    raise SpecError(
        f"{text!r} is not an asset reference tiffin knows; write azureml:NAME:VERSION, azureml:NAME@latest, "
        "or an Azure resource id (azureml:/subscriptions/.../workspaces/W/models/NAME/versions/V)",
        field=field,
    )


def _check_label(label: str | None, text: str, field: str | None) -> None:
    if label is not None and label != "latest":
        raise SpecError(
            f"{text!r} names the label {label!r}; the only label assets have is 'latest' (azureml:NAME@latest)",
            field=field,
        )
