"""Building blocks shared by every spec model: the base class, lenient-but-typed field types, and
the walks that report what tiffin ignores or does not know.

Validators here only raise ``PydanticCustomError`` (never :class:`~tiffin.errors.SpecError`): the
loader turns every pydantic error into a ``SpecError`` in one place, so messages stay uniform.
A custom error may carry ``field_suffix`` in its context, which the loader appends to the field
path, for checks that run on a whole mapping but are about one key of it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, get_args

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError, PydanticUndefined

__all__ = [
    "UNION_TAGS",
    "EnvVars",
    "Int",
    "Name",
    "Percent",
    "SpecModel",
    "Version",
    "choice_key",
    "choice_of",
    "collect_ignored",
    "collect_unknown",
    "is_remote_path",
    "ref_or_inline",
    "ref_or_inline_tag",
    "resolve_paths",
    "unknown_fields",
]

# Tags of the tagged unions below. Pydantic puts a union member's tag into an error's location; the
# loader drops these from field paths. The angle brackets keep them apart from real keys (a
# deployment can well be called "default").
REFERENCE_TAG = "<reference>"
INLINE_TAG = "<inline>"
UNION_TAGS: frozenset[str] = frozenset({REFERENCE_TAG, INLINE_TAG, "<default>", "<target_utilization>"})


class SpecModel(BaseModel):
    """Base of every spec model: knows which fields tiffin cannot honour, and which keys are no field at all.

    Subclasses list in ``LOCAL_IGNORED`` the fields that only mean something on Azure (VM sizes,
    images, networking); a set, non-default value of one of them is reported by
    :func:`collect_ignored`. ``REFERENCE_IGNORED`` fields are reported when given as a reference
    string (a registered environment names an image tiffin does not run). ``AZURE_READ_ONLY``
    names keys Azure adds to ``az ml ... show`` output, and ``AZURE_UNMODELLED`` fields of Azure's
    schema that tiffin has no use for: both are kept and reported as ignored. Any other key is
    unknown (:func:`unknown_fields`), and the loader refuses it, as Azure's CLI does. ``PATH_FIELDS``
    are resolved against the YAML file's folder by :func:`resolve_paths`.
    """

    # extra="allow": Azure's keys that tiffin has no field for are kept (round trips, `show`), never dropped;
    # the loader refuses the keys that are not Azure's either. protected_namespaces=(): Azure's field names
    # include model_mount_path.
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    LOCAL_IGNORED: ClassVar[frozenset[str]] = frozenset()
    REFERENCE_IGNORED: ClassVar[frozenset[str]] = frozenset()
    AZURE_READ_ONLY: ClassVar[frozenset[str]] = frozenset()
    AZURE_UNMODELLED: ClassVar[frozenset[str]] = frozenset()
    PATH_FIELDS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def field_names(cls) -> list[str]:
        """The keys a user may write in this mapping, for "did you mean" suggestions (not the read-only ones)."""
        return [*cls.model_fields, *sorted(cls.AZURE_UNMODELLED)]

    @classmethod
    def _azure_extra(cls) -> frozenset[str]:
        return cls.AZURE_READ_ONLY | cls.AZURE_UNMODELLED

    def to_yaml_dict(self) -> dict[str, Any]:
        """This spec as a plain dict in Azure's YAML shape (no ``$schema``, ``None`` fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_yaml(self) -> str:
        """This spec as YAML text, keys in Azure's order, for ``show``-style output."""
        return yaml.safe_dump(self.to_yaml_dict(), sort_keys=False, allow_unicode=True)

    def ignored_here(self) -> list[str]:
        """Names of this model's own fields (not nested ones) that tiffin cannot honour locally."""
        out: list[str] = []
        for name, info in type(self).model_fields.items():
            value = getattr(self, name)
            if name in self.REFERENCE_IGNORED and isinstance(value, str):
                out.append(name)
            if name not in self.LOCAL_IGNORED:
                continue
            default = None if info.default is PydanticUndefined else info.default
            # Only a value that asks for something different from "nothing special" is dropped.
            if value is None or value == default:
                continue
            out.append(name)
        out.extend(key for key in (self.model_extra or {}) if key in self._azure_extra())
        return out

    def unknown_here(self) -> list[str]:
        """Keys of this mapping that are neither tiffin's fields nor Azure's (often typos)."""
        return [str(key) for key in (self.model_extra or {}) if key not in self._azure_extra()]


def _children(model: SpecModel) -> Iterator[tuple[str, SpecModel]]:
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SpecModel):
            yield name, value


def collect_ignored(model: SpecModel, prefix: str = "") -> list[str]:
    """Dotted names of every field in ``model`` (nested too) that tiffin ignores locally."""
    own = model.ignored_here()
    out = [prefix + name for name in own]
    for name, child in _children(model):
        # A field reported as a whole is not reported again piece by piece.
        if name not in own:
            out.extend(collect_ignored(child, f"{prefix}{name}."))
    return out


def unknown_fields(model: SpecModel, prefix: str = "") -> list[tuple[str, SpecModel]]:
    """Every key in ``model`` (nested too) that is not in Azure's schema: its dotted name, and the mapping
    it sits in (whose :meth:`SpecModel.field_names` are what it may have meant)."""
    out = [(prefix + name, model) for name in model.unknown_here()]
    for name, child in _children(model):
        out.extend(unknown_fields(child, f"{prefix}{name}."))
    return out


def collect_unknown(model: SpecModel, prefix: str = "") -> list[str]:
    """Dotted names of every key in ``model`` (nested too) that is not in Azure's schema."""
    return [name for name, _ in unknown_fields(model, prefix)]


_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def is_remote_path(value: str) -> bool:
    """Whether ``value`` is a URI (``https://``, MLflow's ``runs:/`` and ``models:/``) or an ``azureml:``
    reference rather than a local path. Two letters at least before the colon: ``C:\\`` is a path."""
    # "file:relative/path" (older Azure examples) is a local path, not a URI.
    return bool(_URI_SCHEME.match(value)) and not value.startswith("file:")


def resolve_paths(model: SpecModel, base_dir: Path) -> None:
    """Make the local paths in ``model`` (nested too) absolute, relative to ``base_dir``, in place.

    Only the string is rewritten; nothing is looked up on disk, so a missing folder is the
    caller's error to report, with its own message.
    """
    for name in model.PATH_FIELDS:
        value = getattr(model, name)
        if not isinstance(value, str) or not value or is_remote_path(value):
            continue
        # Older Azure examples spell local files as "file:relative/path".
        local = value[len("file:") :] if value.startswith("file:") else value
        # normpath, not resolve(): stays pure (no symlink lookups) yet folds "../" away.
        setattr(model, name, os.path.normpath(base_dir / local))
    for _, child in _children(model):
        resolve_paths(child, base_dir)


# --- field types -------------------------------------------------------------------------------


def choice_key(value: Any) -> str | None:
    """``value`` folded the way Azure's CLI compares enum values, or ``None`` if not a string.

    Case, ``_`` and ``-`` do not count, so ``AppendRow``, ``APPEND_ROW`` and ``append-row`` are all
    ``append_row``, and ``AMLToken`` is ``aml_token``.
    """
    if not isinstance(value, str):
        return None
    return value.strip().replace("_", "").replace("-", "").lower()


def choice_of(choices: Any) -> Callable[[Any], Any]:
    """A before-validator mapping Azure's spellings of a ``Literal``'s values onto the exact ones.

    A value that matches none is passed on unchanged, so the error shows what the user wrote.
    """
    by_key = {choice_key(choice): choice for choice in get_args(choices)}

    def normalise(value: Any) -> Any:
        return by_key.get(choice_key(value), value)

    return normalise


def _reject_bool(value: Any) -> Any:
    # YAML turns yes/no/true/false into bools, and pydantic would quietly read them as 1/0.
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


def _scalar_to_str(value: Any) -> Any:
    # YAML reads `version: 1` or `WORKERS: 4` as numbers; Azure treats them as strings.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}")


def _check_name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise PydanticCustomError(
            "name",
            "must start with a letter and hold only letters, digits, '-' and '_', at most 63 characters (got {got})",
            {"got": repr(value)},
        )
    return value


Int = Annotated[int, BeforeValidator(_reject_bool)]
"""An integer that refuses YAML booleans."""


def _whole_number(value: Any) -> Any:
    # Stricter than Int: a percentage sent as "90" or 90.5 is a client's mistake, refused as the traffic
    # route's rules (tiffin.specs.traffic) refuse it, rather than read as 90.
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


Percent = Annotated[int, BeforeValidator(_whole_number), Field(ge=0, le=100)]
"""A whole percentage, 0 to 100: an integer, never a string, float or boolean."""

Version = Annotated[str, BeforeValidator(_scalar_to_str)]
"""An asset version: YAML numbers are kept as their text."""

Name = Annotated[str, AfterValidator(_check_name)]
"""An endpoint or deployment name, safe in URLs and file names."""

EnvVars = dict[
    Annotated[str, BeforeValidator(_scalar_to_str)],
    Annotated[str, BeforeValidator(_scalar_to_str)],
]
"""Environment variables: numbers and booleans are turned into their text."""


def ref_or_inline(what: str, example: str) -> Callable[[Any], Any]:
    """A before-validator for fields that take a string reference or an inline mapping."""

    def check(value: Any) -> Any:
        if isinstance(value, str | dict | BaseModel):
            return value
        raise PydanticCustomError(
            "ref_or_inline",
            "must be a reference like '{example}' or a mapping describing the {what} (got {got})",
            {"example": example, "what": what, "got": repr(value)},
        )

    return check


def ref_or_inline_tag(value: Any) -> str:
    """Discriminator for reference-or-inline unions: strings are references, the rest inline."""
    return REFERENCE_TAG if isinstance(value, str) else INLINE_TAG
