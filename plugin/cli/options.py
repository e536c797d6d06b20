"""Options every ``tiffin`` command group shares, spelled as ``az ml`` spells them, and the stderr console.

Messages, warnings and progress go to :data:`err`, so that stdout carries only the command's output
(one JSON document with ``-o json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

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

if TYPE_CHECKING:
    from rich.console import Console


class _Stderr:
    """Rich's console on stderr, made when first used: importing Rich's console costs ~15 ms that a command which
    prints nothing on stderr (``show``, ``list``) need not pay."""

    def __init__(self) -> None:
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            # No markup by default: messages carry paths and user text ("[/data]" would be read as a tag); the
            # two styled prefixes (ERROR, WARNING) ask for it and escape what follows.
            self._console = Console(stderr=True, soft_wrap=True, markup=False)
        return getattr(self._console, name)


err: Console = _Stderr()  # type: ignore[assignment]  # a Console in all but when it is made

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
    from rich.markup import escape  # a path like [/data] in the line is text, not markup

    err.print(f"[yellow]WARNING[/]: {escape(line)}", highlight=False, markup=True)
