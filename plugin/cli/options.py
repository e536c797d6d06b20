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

__all__ = [
    "DeploymentNameOpt",
    "EndpointOpt",
    "FileOpt",
    "InstantNoWaitOpt",
    "NameOpt",
    "OptionalEndpointOpt",
    "OptionalFileOpt",
    "OptionalNameOpt",
    "OutputOpt",
    "QueryOpt",
    "SetOpt",
    "YesOpt",
    "err",
    "warn",
]

err = Console(stderr=True, soft_wrap=True)

FileOpt = Annotated[Path, typer.Option("--file", "-f", help="Azure ML YAML file.", exists=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a field: --set instance_count=2 (repeatable), as az does."),
]
OutputOpt = Annotated[OutputFormat, typer.Option("--output", "-o", help="Output format.")]
QueryOpt = Annotated[str | None, typer.Option("--query", help="JMESPath query applied to the output.")]
NameOpt = Annotated[str, typer.Option("--name", "-n", help="Name of the endpoint.")]
OptionalNameOpt = Annotated[str | None, typer.Option("--name", "-n", help="Name (overrides the file's).")]
DeploymentNameOpt = Annotated[str, typer.Option("--name", "-n", help="Name of the deployment.")]
EndpointOpt = Annotated[str, typer.Option("--endpoint-name", "-e", "--endpoint", help="Name of the endpoint.")]
OptionalEndpointOpt = Annotated[
    str | None,
    typer.Option("--endpoint-name", "-e", "--endpoint", help="Name of the endpoint (overrides the file's)."),
]
OptionalFileOpt = Annotated[Path | None, typer.Option("--file", "-f", help="Azure ML YAML file.")]
# az's --no-wait skips waiting for a long-running operation. These operations have ended when the server
# answers (a deleted deployment's replicas are stopped by the supervisor after), so it changes nothing here.
InstantNoWaitOpt = Annotated[
    bool,
    typer.Option("--no-wait", help="Accepted as az accepts it: this operation has ended when tiffin answers, so "
                 "there is nothing to wait for."),
]  # fmt: skip
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not prompt for confirmation.")]


def warn(line: str) -> None:
    """Print a warning on stderr."""
    err.print(f"[yellow]WARNING[/]: {line}", highlight=False)
