"""Reading a spec file's YAML strictly: duplicate keys and alias bombs refused, every problem a
:class:`~tiffin.errors.SpecError` with line and column, and the ``$schema`` a VS Code comment gives.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import SpecError
from .problems import describe_value

__all__ = ["MAX_EXPANDED_NODES", "load_yaml", "read_yaml"]

# The VS Code form of a schema hint, a comment Azure's own examples sometimes use instead of $schema.
_SCHEMA_COMMENT = re.compile(r"^\s*#\s*yaml-language-server:\s*\$schema=(\S+)", re.MULTILINE)


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


def load_yaml(text: str) -> Any:
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
        data = load_yaml(text)
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
        raise SpecError(f"must hold a YAML mapping of fields (got {describe_value(data)})", source=label)
    hint = _SCHEMA_COMMENT.search(text)
    return data, hint.group(1) if hint else None
