"""az-style ``--set dotted.path=value`` overrides, applied to a spec's data before it is validated."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from ..errors import SpecError
from ._base import SpecModel
from .batch import SETTINGS_KEYS, BatchDeployment
from .problems import describe_value
from .strict_yaml import load_yaml

__all__ = ["apply_overrides"]


def _override_keys(data: Mapping[str, Any], keys: list[str], kind: type[SpecModel] | None) -> list[str]:
    # A batch setting can be overridden by its short name or as settings.<name>, whichever shape
    # the file uses; the override lands where the file has it, so it replaces rather than clashes.
    if kind is not BatchDeployment:
        return keys
    nested = isinstance(data.get("settings"), dict)
    if keys[0] in SETTINGS_KEYS and nested:
        return ["settings", *keys]
    if keys[0] == "settings" and len(keys) > 1 and keys[1] in SETTINGS_KEYS and not nested:
        return keys[1:]
    return keys


def apply_overrides(
    data: Mapping[str, Any],
    overrides: Sequence[str],
    *,
    source: str = "<inline>",
    kind: type[SpecModel] | None = None,
) -> dict[str, Any]:
    """A copy of ``data`` with az-style ``--set dotted.path=value`` overrides applied in order.

    The value is read as YAML, so ``instance_count=2`` gives an int, ``traffic.blue=90`` an int in
    a mapping, and ``'tags={a: b}'`` a mapping; missing mappings on the way are created.
    """
    result = copy.deepcopy(dict(data))
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise SpecError(
                f"malformed override {item!r}: expected dotted.path=value, for example instance_count=2",
                source=source,
            )
        path, _, text = item.partition("=")
        keys = [key.strip() for key in path.split(".")]
        if not all(keys):
            raise SpecError(
                f"malformed override {item!r}: the field path before '=' has an empty part",
                source=source,
            )
        try:
            value = load_yaml(text) if text.strip() else ""
        except yaml.YAMLError:
            raise SpecError(
                f"malformed override {item!r}: the value is not valid YAML; quote it",
                source=source,
                field=path.strip(),
            ) from None
        keys = _override_keys(result, keys, kind)
        node = result
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                where = ".".join(keys[: depth + 1])
                raise SpecError(
                    f"cannot apply override {item!r}: '{where}' is {describe_value(child)}, not a mapping",
                    source=source,
                    field=where,
                )
            node = child
        node[keys[-1]] = value
    return result
