"""``-o/--output json|tsv|table|yaml|none`` and ``--query`` (JMESPath), as ``az`` prints them."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Any

from tiffin.errors import TiffinError

__all__ = ["OutputFormat", "emit"]


class OutputFormat(StrEnum):
    """The formats ``az`` offers (jsonc is left out); ``none`` prints nothing, for scripts that want only the
    exit code."""

    json = "json"
    tsv = "tsv"
    table = "table"
    yaml = "yaml"
    none = "none"


def emit(value: Any, output: OutputFormat = OutputFormat.json, query: str | None = None) -> None:
    """Print ``value`` on stdout in ``output`` format after applying the JMESPath ``query``."""
    if query:
        import jmespath  # this module's imports stay light: every command imports it, few print tables or YAML

        try:
            value = jmespath.search(query, value)
        except jmespath.exceptions.JMESPathError as exc:
            raise TiffinError(f"--query '{query}' is not valid JMESPath: {exc}") from None
    if output is OutputFormat.none:
        return
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
    elif output is OutputFormat.yaml:
        import yaml

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
    """A table that stays readable in the terminal's width (80 columns when not a terminal, or $COLUMNS).

    One object prints as field/value rows, values wrapped; a list prints one row per item with the
    scalar fields as columns, as many whole columns as fit: the rest are named on stderr rather than cut
    into ellipses.
    """
    from rich.console import Console
    from rich.table import Table

    console = Console(markup=False)  # cells are data: "[/x]" in a description is text, not a closing tag
    items = value if isinstance(value, list) else [value]
    if not isinstance(value, list) and isinstance(value, dict):
        table = Table(show_edge=False, header_style="bold")
        table.add_column("Field", no_wrap=True)
        table.add_column("Value", overflow="fold")
        for key, item in value.items():
            if not isinstance(item, (dict, list)):
                table.add_row(_title(key), _scalar(item))
        console.print(table)
        return
    columns: list[str] = []
    for item in items:
        if isinstance(item, dict):
            columns += [k for k, v in item.items() if k not in columns and not isinstance(v, (dict, list))]
    if not columns:
        columns = ["Result"]
        items = [{"Result": item} for item in items]
    shown: list[str] = []
    used = 0
    for column in columns:
        width = max(len(_title(column)), *(len(_scalar(i.get(column))) for i in items if isinstance(i, dict)))
        if shown and used + width + 3 > console.width:
            break
        shown.append(column)
        used += width + 3  # the separator and padding around each column
    table = Table(show_edge=False, header_style="bold")
    for column in shown:
        table.add_column(_title(column), overflow="fold")
    for item in items:
        table.add_row(*(_scalar(item.get(c)) if isinstance(item, dict) else "" for c in shown))
    console.print(table)
    if len(shown) < len(columns):
        from tiffin.cli.options import err

        left_out = ", ".join(columns[len(shown) :])
        err.print(
            f"not shown at {console.width} columns: {left_out} (see them with -o json or --query)",
            highlight=False,
        )


def _title(column: str) -> str:
    return column[:1].upper() + column[1:]
