"""``-o/--output json|tsv|table|yaml`` and ``--query`` (JMESPath), as ``az`` prints them."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Any

import jmespath
import yaml
from rich.console import Console
from rich.table import Table

from tiffin.errors import TiffinError

__all__ = ["OutputFormat", "emit"]


class OutputFormat(StrEnum):
    """The formats ``az`` offers (jsonc and none are left out)."""

    json = "json"
    tsv = "tsv"
    table = "table"
    yaml = "yaml"


def emit(value: Any, output: OutputFormat = OutputFormat.json, query: str | None = None) -> None:
    """Print ``value`` on stdout in ``output`` format after applying the JMESPath ``query``."""
    if query:
        try:
            value = jmespath.search(query, value)
        except jmespath.exceptions.JMESPathError as exc:
            raise TiffinError(f"--query '{query}' is not valid JMESPath: {exc}") from None
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    elif output is OutputFormat.yaml:
        sys.stdout.write(yaml.safe_dump(value, sort_keys=False, default_flow_style=False))
    elif output is OutputFormat.tsv:
        for row in _rows(value):
            sys.stdout.write("\t".join(_scalar(v) for v in row) + "\n")
    else:
        _table(value)


def _rows(value: Any) -> list[list[Any]]:
    # az's tsv: one line per list item, the values of each object's scalar fields in order.
    items = value if isinstance(value, list) else [value]
    rows = []
    for item in items:
        if isinstance(item, dict):
            rows.append([v for v in item.values() if not isinstance(v, (dict, list))])
        elif isinstance(item, list):
            rows.append(item)
        else:
            rows.append([item])
    return rows


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _table(value: Any) -> None:
    items = value if isinstance(value, list) else [value]
    table = Table(show_edge=False, header_style="bold")
    columns: list[str] = []
    for item in items:
        if isinstance(item, dict):
            columns += [k for k, v in item.items() if k not in columns and not isinstance(v, (dict, list))]
    if not columns:
        columns = ["Result"]
        items = [{"Result": item} for item in items]
    for column in columns:
        table.add_column(column[:1].upper() + column[1:])
    for item in items:
        table.add_row(*(_scalar(item.get(c)) for c in columns))
    Console(soft_wrap=True).print(table)
