"""What the command groups share besides their options: the client for ``tiffin serve``, a spec read from
``--file``, ``--set`` and flags such as ``-n``, a stored spec changed with ``--set``, and the confirmation a delete
asks for.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from tiffin.cli.options import warn
from tiffin.errors import TiffinError

if TYPE_CHECKING:
    from tiffin.sdk import TiffinClient
    from tiffin.specs import LoadedSpec, SpecModel

__all__ = ["changed_here", "confirm_delete", "connect", "load_with_flags"]

S = TypeVar("S", bound="SpecModel")


def connect() -> TiffinClient:
    """A client for the ``tiffin serve`` that ``TIFFIN_URL`` names (``with connect() as client: ...``)."""
    from tiffin.sdk import TiffinClient  # httpx is only needed once a command talks to the server

    return TiffinClient()


def load_with_flags(
    kind: type[S], file: Path | None, overrides: list[str] | None, **flags: str | None
) -> LoadedSpec[S]:
    """The spec from ``file`` (or from flags alone), ``--set`` overrides applied, then flags such as -n.

    Flags go through the same override mechanism, JSON-quoted so that YAML keeps them as strings
    (a deployment called ``yes`` stays a name, not a boolean).
    """
    from tiffin.specs import load_spec, parse_spec  # pydantic: only for commands that read a spec

    given = [f"{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]
    every = [*(overrides or ()), *given]
    loaded = (
        load_spec(file, kind, every) if file is not None else parse_spec({}, kind, "<command line>", overrides=every)
    )
    for line in loaded.warnings():
        warn(line)
    return loaded


def confirm_delete(what: str, yes: bool) -> None:
    """Ask before deleting, as az does; with no terminal to ask on, refuse unless --yes."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise TiffinError(f"not deleting {what} without confirmation, and there is no terminal to ask on: pass --yes")
    typer.confirm(f"Are you sure you want to delete {what}?", abort=True, err=True)


def changed_here(current: dict[str, Any], overrides: list[str] | None, kind: type[S], source: str) -> dict[str, Any]:
    """A deployment's spec as the server has it, ``--set`` overrides applied and relative paths among them made
    absolute against the current directory, as Azure's CLI reads flag values without a file (the server would
    read them from its own directory). The server drops the fields it added (state, times)."""
    from tiffin.specs import parse_spec

    return parse_spec(current, kind, source, Path.cwd(), overrides=overrides or ()).spec.to_yaml_dict()
