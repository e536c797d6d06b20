"""Options every ``tiffin`` command group shares, spelled as ``az ml`` spells them, and the stderr console.

Messages, warnings and progress go to :data:`err`, so that stdout carries only the command's output
(one JSON document with ``-o json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tiffin.cli.output import OutputFormat

__all__ = ["FileOpt", "OutputOpt", "QueryOpt", "SetOpt", "err", "warn"]

err = Console(stderr=True, soft_wrap=True)

FileOpt = Annotated[Path, typer.Option("--file", "-f", help="Azure ML YAML file.", exists=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a field: --set instance_count=2 (repeatable), as az does."),
]
OutputOpt = Annotated[OutputFormat, typer.Option("--output", "-o", help="Output format.")]
QueryOpt = Annotated[str | None, typer.Option("--query", help="JMESPath query applied to the output.")]


def warn(line: str) -> None:
    """Print a warning on stderr."""
    err.print(f"[yellow]WARNING[/]: {line}", highlight=False)
