"""Reading spec files: YAML parsing, kind detection from ``$schema``, ``--set`` overrides, path
resolution, and the one translation of pydantic's errors into :class:`~tiffin.errors.SpecError`.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import pydantic
import yaml

from ..errors import SpecError
from ._base import UNION_TAGS, SpecModel, collect_ignored, is_remote_path, resolve_paths, unknown_fields
from .assets import ASSET_SPEC_KINDS, Compute, DataAsset, EnvironmentAsset, ModelAsset
from .batch import SETTINGS_KEYS, BatchDeployment, BatchEndpoint
from .online import OnlineDeployment, OnlineEndpoint

__all__ = [
    "SPEC_KINDS",
    "LoadedSpec",
    "Spec",
    "apply_overrides",
    "kind_from_schema",
    "load_spec",
    "parse_spec",
    "read_yaml",
    "refuse_unknown",
    "translate_validation_error",
]

Spec = OnlineEndpoint | OnlineDeployment | BatchEndpoint | BatchDeployment
"""Any of the four spec kinds."""

T = TypeVar("T", bound=SpecModel)

SPEC_KINDS: tuple[type[SpecModel], ...] = (OnlineEndpoint, OnlineDeployment, BatchEndpoint, BatchDeployment)
"""The spec classes :func:`load_spec` and :func:`parse_spec` accept as ``kind``."""

# Last part of Azure's $schema URLs (lower-cased, ".schema.json" cut off) -> spec class.
# "OnlineDeployment" is the `http://azureml/sdk-2-0/OnlineDeployment.json` form some docs use.
_SCHEMA_KINDS: dict[str, type[SpecModel]] = {
    "managedonlineendpoint": OnlineEndpoint,
    "kubernetesonlineendpoint": OnlineEndpoint,
    "onlineendpoint": OnlineEndpoint,
    "managedonlinedeployment": OnlineDeployment,
    "kubernetesonlinedeployment": OnlineDeployment,
    "onlinedeployment": OnlineDeployment,
    "batchendpoint": BatchEndpoint,
    "batchdeployment": BatchDeployment,
    "modelbatchdeployment": BatchDeployment,
    # Registered assets and computes (issue 12): Azure's model, environment, data and compute schemas.
    "model": ModelAsset,
    "environment": EnvironmentAsset,
    "data": DataAsset,
    "amlcompute": Compute,
    "kubernetescompute": Compute,
    "computeinstance": Compute,
}
_COMPUTE_TYPES = {"amlcompute": "amlcompute", "kubernetescompute": "kubernetes", "computeinstance": "computeinstance"}
_PIPELINE_SCHEMA = "pipelinecomponentbatchdeployment"
_KNOWN_SCHEMAS = (
    "managedOnlineEndpoint, kubernetesOnlineEndpoint, managedOnlineDeployment, kubernetesOnlineDeployment, "
    "batchEndpoint, batchDeployment, modelBatchDeployment, model, environment, data, amlCompute, "
    "kubernetesCompute or computeInstance schemas"
)
_SCHEMA_EXAMPLE = "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json"

# The VS Code form of a schema hint, a comment Azure's own examples sometimes use instead of $schema.
_SCHEMA_COMMENT = re.compile(r"^\s*#\s*yaml-language-server:\s*\$schema=(\S+)", re.MULTILINE)


@dataclass
class LoadedSpec(Generic[T]):
    """A validated spec and what the caller should tell the user about it.

    ``ignored`` lists dotted names of fields that are valid on Azure but that tiffin cannot honour
    locally (``instance_type``, ``environment.image``...); they are kept on the spec, never dropped.
    ``unknown`` is always empty: a key that is not in Azure's schema at all (most often a typo) is
    refused by the loader with a "did you mean" (see :func:`refuse_unknown`). It stays for callers
    that read it.
    """

    spec: T
    source: Path
    ignored: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    schema_url: str | None = None

    def warnings(self) -> list[str]:
        """One line per kind of problem, ready to print; empty when there is nothing to say."""
        lines = []
        if self.ignored:
            lines.append("ignored locally: " + ", ".join(self.ignored))
        return lines


def _schema_key(url: str) -> str:
    last = url.strip().rstrip("/").rsplit("/", 1)[-1].lower()
    for suffix in (".json", ".schema", ".yaml", ".yml"):
        last = last.removesuffix(suffix)
    return last


def kind_from_schema(url: str) -> type[SpecModel] | None:
    """The spec class an Azure ``$schema`` URL stands for, or ``None`` if it is not one of ours."""
    return _SCHEMA_KINDS.get(_schema_key(url))


# --- YAML ----------------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate keys (plain YAML would keep the last one silently) and
    aliases that expand past :data:`MAX_EXPANDED_NODES` values."""

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node)
        return node


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[tuple[str, str]] = set()
    for key_node, _ in node.value:
        # Merge keys (<<) may legitimately be overridden, and only scalar keys are comparable here.
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = (key_node.tag, key_node.value)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping",
                node.start_mark,
                f"found the key {key_node.value!r} twice",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

MAX_EXPANDED_NODES = 100_000
"""How many values a YAML document may hold once its aliases are expanded. PyYAML shares an aliased
value, but everything after it (overrides' deep copy, validation, JSON for the control plane) copies
it: ten levels of ten aliases each ("billion laughs") took 6 GB. A spec is a few hundred values; a
file may still use anchors and aliases modestly."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node, limit: int = MAX_EXPANDED_NODES) -> None:
    """Refuse a document whose aliases expand past ``limit`` values, or refer to a node holding them.

    Counted on the composed node graph, where an alias is the very node it names: each node's
    expanded size is computed once (iteratively: a deep document must not exhaust Python's stack).
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # the nodes on the path from the root to the one being counted
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > limit:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"its aliases (*name) expand to more than {limit} values; write repeated parts out or "
                    "use fewer aliases",
                    node.start_mark,
                )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise yaml.constructor.ConstructorError(
                None, None, "an alias (*name) refers to a value that contains the alias itself", node.start_mark
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _load_yaml(text: str) -> Any:
    """``text`` read as YAML by the strict loader; RecursionError becomes a YAML error of its own."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise yaml.YAMLError("it is nested too deeply; a spec needs a few levels") from None


def read_yaml(path: str | Path) -> tuple[dict[str, Any], str | None]:
    """Read a spec file into a dict, and the ``$schema`` a VS Code comment gives, if any.

    Raises :class:`SpecError` for a missing or unreadable file, invalid YAML (with line and column),
    duplicate keys, and a document that is not a mapping.
    """
    label = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SpecError("file not found", source=label) from None
    except IsADirectoryError:
        raise SpecError("is a folder; give the path of a YAML file", source=label) from None
    except UnicodeDecodeError:
        raise SpecError("is not UTF-8 text; is it a YAML file?", source=label) from None
    except OSError as exc:
        raise SpecError(f"cannot be read: {exc.strerror or exc}", source=label) from None
    try:
        data = _load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "cannot be parsed"
        raise SpecError(f"invalid YAML{where}: {problem}", source=label) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", source=label) from None
    if data is None:
        raise SpecError("is empty; expected a YAML mapping of fields such as name: ...", source=label)
    if not isinstance(data, dict):
        raise SpecError(f"must hold a YAML mapping of fields (got {_describe_value(data)})", source=label)
    hint = _SCHEMA_COMMENT.search(text)
    return data, hint.group(1) if hint else None


# --- overrides -----------------------------------------------------------------------------------


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
            value = _load_yaml(text) if text.strip() else ""
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
                    f"cannot apply override {item!r}: '{where}' is {_describe_value(child)}, not a mapping",
                    source=source,
                    field=where,
                )
            node = child
        node[keys[-1]] = value
    return result


# --- validation ----------------------------------------------------------------------------------


def _describe_value(value: Any) -> str:
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
    shown = _describe_value(got)
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


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


def _unknown_message(name: str, where: SpecModel, others: list[str]) -> str:
    key = name.rsplit(".", 1)[-1]
    parent = name.rpartition(".")[0]
    label = parent or getattr(where, "kind_label", type(where).__name__)
    owner = f"'{parent}'" if parent else f"{_article(label)} {label}"
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


def _guess_kind(data: Mapping[str, Any], source: str) -> type[SpecModel]:
    # Without $schema, Azure's CLI knows the kind from the command; the `type` key is the only hint
    # a file itself may carry (Azure's Kubernetes examples have no $schema line).
    kind = data.get("type")
    if isinstance(kind, str):
        kind = kind.strip().lower()
        if kind in ("managed", "kubernetes"):
            return OnlineDeployment
        if kind in ("model", "pipeline"):
            return BatchDeployment
    raise SpecError(
        "cannot tell whether this is an online or batch endpoint or deployment: "
        f"add a $schema line such as '$schema: {_SCHEMA_EXAMPLE}'",
        source=source,
    )


def _build(
    data: Mapping[str, Any],
    kind: type[SpecModel] | None,
    source: str,
    base_dir: Path | None,
    overrides: Sequence[str],
    schema_hint: str | None,
) -> tuple[SpecModel, list[str], list[str], str | None]:
    if kind is not None and kind not in SPEC_KINDS + ASSET_SPEC_KINDS:
        known = SPEC_KINDS + ASSET_SPEC_KINDS
        raise TypeError(f"kind must be one of {', '.join(k.__name__ for k in known)}, not {kind!r}")
    data = dict(data)
    schema = data.pop("$schema", None)
    if schema is None:
        schema = schema_hint
    if schema is not None and not isinstance(schema, str):
        raise SpecError(f"must be a URL (got {_describe_value(schema)})", source=source, field="$schema")
    inferred = None
    if schema:
        if _schema_key(schema) == _PIPELINE_SCHEMA:
            raise SpecError(
                "pipeline component deployments are not supported by tiffin; deploy a model instead",
                source=source,
                field="$schema",
            )
        inferred = kind_from_schema(schema)
        if inferred is None and kind is None:
            raise SpecError(
                f"is not a schema tiffin knows (got {schema!r}); expected one of Azure ML's {_KNOWN_SCHEMAS}",
                source=source,
                field="$schema",
            )
    if kind is None:
        kind = inferred or _guess_kind(data, source)
    elif inferred is not None and inferred is not kind:
        label = getattr(inferred, "kind_label", inferred.__name__)
        wanted = getattr(kind, "kind_label", kind.__name__)
        raise SpecError(
            f"this file describes {_article(label)} {label} (per its $schema), "
            f"but {_article(wanted)} {wanted} is expected here",
            source=source,
            field="$schema",
        )
    # A Kubernetes deployment schema implies type: kubernetes, as Azure's CLI infers it.
    if kind is OnlineDeployment and schema and _schema_key(schema).startswith("kubernetes"):
        data.setdefault("type", "kubernetes")
    # So does each compute schema its compute type.
    if kind is Compute and schema and _schema_key(schema) in _COMPUTE_TYPES:
        data.setdefault("type", _COMPUTE_TYPES[_schema_key(schema)])
    data = apply_overrides(data, overrides, source=source, kind=kind)
    try:
        spec = kind.model_validate(data)
    except pydantic.ValidationError as exc:
        raise translate_validation_error(exc, source, data) from None
    refuse_unknown(spec, source, data)
    if base_dir is not None:
        resolve_paths(spec, base_dir)
        _resolve_model_string(spec, base_dir)
    return spec, collect_ignored(spec), [], schema


def _resolve_model_string(spec: SpecModel, base_dir: Path) -> None:
    """A deployment's ``model: models`` (a bare local path, not a reference) made absolute against ``base_dir``,
    as ``model.path`` is: left relative it was read from wherever the server or replica happened to run."""
    model = getattr(spec, "model", None)
    if isinstance(model, str) and model and not is_remote_path(model):
        local = model.removeprefix("file:")
        # normpath, not resolve(): pure, as resolve_paths is.
        spec.model = os.path.normpath(base_dir / local)  # type: ignore[attr-defined]


@overload
def load_spec(path: str | Path, kind: type[T], overrides: Sequence[str] = ()) -> LoadedSpec[T]: ...
@overload
def load_spec(path: str | Path, kind: None = None, overrides: Sequence[str] = ()) -> LoadedSpec[Any]: ...
def load_spec(path: str | Path, kind: type[T] | None = None, overrides: Sequence[str] = ()) -> LoadedSpec[Any]:
    """Load and validate a spec file copied from Azure (``$schema`` line and all).

    ``kind`` is one of :data:`SPEC_KINDS` or :data:`~tiffin.specs.assets.ASSET_SPEC_KINDS`; when ``None`` it
    comes from the file's ``$schema`` URL
    (or, lacking one, a ``type: kubernetes``/``type: model`` key). ``overrides`` are az-style
    ``--set`` strings, applied before validation. Local paths in the spec become absolute,
    relative to the file's folder (overridden ones too, as in Azure's CLI).
    Raises :class:`SpecError` naming the file and the field for any problem.
    """
    data, hint = read_yaml(path)
    file = Path(path).absolute()
    spec, ignored, unknown, schema = _build(data, kind, str(path), file.parent, overrides, hint)
    return LoadedSpec(spec=spec, source=file, ignored=ignored, unknown=unknown, schema_url=schema)


@overload
def parse_spec(
    data: Mapping[str, Any],
    kind: type[T],
    source: str = "<inline>",
    base_dir: Path | None = None,
    *,
    overrides: Sequence[str] = (),
) -> LoadedSpec[T]: ...
@overload
def parse_spec(
    data: Mapping[str, Any],
    kind: None,
    source: str = "<inline>",
    base_dir: Path | None = None,
    *,
    overrides: Sequence[str] = (),
) -> LoadedSpec[Any]: ...
def parse_spec(
    data: Mapping[str, Any],
    kind: type[T] | None,
    source: str = "<inline>",
    base_dir: Path | None = None,
    *,
    overrides: Sequence[str] = (),
) -> LoadedSpec[Any]:
    """Validate a spec given as a dict (from a REST body or the SDK) the way :func:`load_spec` does.

    ``source`` names the origin in error messages. Relative paths are resolved against
    ``base_dir`` when given and left as they are otherwise. ``data`` is not modified.
    """
    if not isinstance(data, Mapping):
        raise SpecError(f"must be a mapping of fields (got {_describe_value(data)})", source=source)
    spec, ignored, unknown, schema = _build(data, kind, source, base_dir, overrides, None)
    return LoadedSpec(spec=spec, source=Path(source), ignored=ignored, unknown=unknown, schema_url=schema)
