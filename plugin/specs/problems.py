"""How a spec's problems are told: pydantic's validation errors as one :class:`~tiffin.errors.SpecError`
naming field and rule, and a key that is in neither tiffin's nor Azure's schema refused with a "did you mean".
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

import pydantic

from ..errors import SpecError
from ._base import UNION_TAGS, SpecModel, unknown_fields

__all__ = ["article", "describe_value", "refuse_unknown", "translate_validation_error"]


def describe_value(value: Any) -> str:
    """``value`` as a message shows what was given instead: "a mapping", "a list", "nothing" or its repr."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "nothing"
    return repr(value)


_NOUNS = {
    ("int_type", "int_parsing", "int_from_float"): "must be a whole number",
    ("float_type", "float_parsing", "finite_number"): "must be a number",
    ("bool_type", "bool_parsing"): "must be true or false",
    ("string_type", "string_unicode"): "must be a string",
    ("dict_type", "model_type", "model_attributes_type", "mapping_type"): "must be a mapping",
    ("list_type", "tuple_type"): "must be a list",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least"),
    "greater_than": ("gt", "must be more than"),
    "less_than_equal": ("le", "must be at most"),
    "less_than": ("lt", "must be less than"),
}


def _field_path(error: Mapping[str, Any], raw: Mapping[str, Any]) -> str:
    loc = [part for part in error["loc"] if part not in UNION_TAGS and part != "[key]"]
    suffix = (error.get("ctx") or {}).get("field_suffix")
    if suffix:
        loc.extend(str(suffix).split("."))
    # Batch settings given at the top level (older shape) are validated under settings.<key>;
    # name them the way the user wrote them.
    if len(loc) > 1 and loc[0] == "settings" and "settings" not in raw and loc[1] in raw:
        loc = loc[1:]
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _error_message(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = ctx.get("got", error.get("input"))
    shown = describe_value(got)
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        choices = re.findall(r"'((?:[^'\\]|\\.)*)'", str(ctx.get("expected", "")))
        allowed = f"one of {', '.join(choices)}" if len(choices) > 1 else ", ".join(choices)
        return f"must be {allowed} (got {shown})"
    for kinds, noun in _NOUNS.items():
        if kind in kinds:
            return f"{noun} (got {shown})"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"{words} {ctx.get(key)} (got {shown})"
    message = str(error.get("msg", "is invalid"))
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    # tiffin's own custom errors are written as "must ..."/"is ..." already; pydantic's start with
    # a capital ("Input should be ...").
    return message[:1].lower() + message[1:] if message[:2].istitle() else message


def translate_validation_error(exc: pydantic.ValidationError, source: str, raw: Mapping[str, Any]) -> SpecError:
    """The one place pydantic errors become a :class:`SpecError` naming file, field and rule.

    The first error gives the ``SpecError``'s ``field``; any others are appended to its message.
    """
    described = [(_field_path(error, raw), _error_message(error)) for error in exc.errors()]
    first_field, first_message = described[0]
    rest = [f"field '{path}': {message}" if path else message for path, message in described[1:]]
    message = first_message + "".join(f"; also {item}" for item in rest)
    return SpecError(message, source=source, field=first_field or None)


def article(noun: str) -> str:
    """The indefinite article ``noun`` takes: "a" or "an"."""
    return "an" if noun[:1].lower() in "aeiou" else "a"


def _unknown_message(name: str, where: SpecModel, others: list[str]) -> str:
    key = name.rsplit(".", 1)[-1]
    parent = name.rpartition(".")[0]
    label = parent or getattr(where, "kind_label", type(where).__name__)
    owner = f"'{parent}'" if parent else f"{article(label)} {label}"
    choices = where.field_names()
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    message = f"is not a field of {owner}"
    if others:
        message += f" (and neither is {', '.join(others)})"
    if close:
        return message + f"; did you mean '{close[0]}'?"
    return message + f"; its fields are {', '.join(choices)}"


def _as_written(name: str, raw: Mapping[str, Any]) -> str:
    # Batch settings given at the top level (older shape) sit under settings.<key> once validated; name them
    # the way the user wrote them, as _field_path does for validation errors.
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "settings" and "settings" not in raw and parts[1] in raw:
        return ".".join(parts[1:])
    return name


def refuse_unknown(spec: SpecModel, source: str, raw: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`SpecError` naming the first key of ``spec`` (nested too) that is neither tiffin's field nor
    Azure's, with the field it most likely means (``modle`` → ``model``), as ``az ml`` refuses unknown fields.

    Such a key used to be kept with a warning, and a ``modle:`` made a deployment without a model that failed
    only once its replicas started. Azure's own fields that tiffin does not use are not refused: they are
    reported as ignored.
    """
    unknown = [(_as_written(name, raw or {}), where) for name, where in unknown_fields(spec)]
    if unknown:
        (name, where), others = unknown[0], [n for n, _ in unknown[1:]]
        raise SpecError(_unknown_message(name, where, others), source=source, field=name)
