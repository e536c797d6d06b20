"""The ``tiffin`` command groups, imported only when one of them runs (issue 14: CLI start-up).

Typer turns the whole tree of sub-apps into click commands before it parses anything, so every command module
(and what it imports: the spec models, pydantic, Rich's progress bars) was loaded for ``tiffin --help`` and for
``tiffin online-endpoint show``. The root group here lists the groups by name and one-line help, and imports a
group's module when the command line names it (click's lazy-group pattern: ``resolve_command``).
"""

from __future__ import annotations

import importlib
from typing import Any, NamedTuple

import typer
from typer.core import TyperGroup

__all__ = ["LAZY_GROUPS", "LazyGroup", "LazySpec"]


class LazySpec(NamedTuple):
    """Where a group's Typer app lives, and its help as the root's ``--help`` lists it (a test checks that this
    is the app's own help)."""

    module: str
    attribute: str
    help: str


# In the order `tiffin --help` lists them, after the commands and groups of tiffin.cli.main.
LAZY_GROUPS: dict[str, LazySpec] = {
    # tiffin.cli.rollout adds rollout (guarded traffic shifts) to tiffin.cli.online's endpoint group.
    "online-endpoint": LazySpec(
        "tiffin.cli.rollout", "online_endpoint_app", "Manage online endpoints (as `az ml online-endpoint`)."
    ),
    # tiffin.cli.containers adds package (a deployment's OCI image) to tiffin.cli.online's deployment group.
    "online-deployment": LazySpec(
        "tiffin.cli.containers", "online_deployment_app", "Manage online deployments (as `az ml online-deployment`)."
    ),
    "batch-endpoint": LazySpec(
        "tiffin.cli.batch", "batch_endpoint_app", "Manage batch endpoints (as `az ml batch-endpoint`)."
    ),
    "batch-deployment": LazySpec(
        "tiffin.cli.batch", "batch_deployment_app", "Manage batch deployments (as `az ml batch-deployment`)."
    ),
    "job": LazySpec("tiffin.cli.batch", "job_app", "Follow and manage batch jobs (as `az ml job`)."),
    "model": LazySpec("tiffin.cli.assets", "model_app", "Manage registered models (as `az ml model`)."),
    # tiffin.cli.environments adds build, prune and list-built to tiffin.cli.assets' environment group.
    "environment": LazySpec(
        "tiffin.cli.environments", "environment_app", "Manage registered environments (as `az ml environment`)."
    ),
    "data": LazySpec("tiffin.cli.assets", "data_app", "Manage registered data assets (as `az ml data`)."),
    "compute": LazySpec("tiffin.cli.compute", "compute_app", "Manage computes (as `az ml compute`)."),
    "containerize": LazySpec(
        "tiffin.cli.containers",
        "containerize_app",
        "Build a deployment's OCI image (its code, model and environment on tiffin's replica server).",
    ),
    "monitor": LazySpec(
        "tiffin.cli.monitor", "monitor_app", "Autoscale online deployments (as `az monitor autoscale`)."
    ),
    "export": LazySpec(
        "tiffin.cli.export", "export_app", "Write what tiffin serves in another system's format (Kubernetes)."
    ),
}


def load_group(name: str) -> TyperGroup:
    """The click group of the lazy group ``name``, its module imported."""
    spec = LAZY_GROUPS[name]
    sub_app = getattr(importlib.import_module(spec.module), spec.attribute)
    group = typer.main.get_group(sub_app)
    group.name = name
    return group


class _Placeholder(TyperGroup):
    """What a group not imported yet shows in its parent's help: its name and its help."""


class LazyGroup(TyperGroup):
    """The root group: the lazy groups are placeholders (listed in ``--help``, offered as typo suggestions) until
    the command line names one, which is then imported and takes the placeholder's place."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, spec in LAZY_GROUPS.items():
            self.commands.setdefault(name, _Placeholder(name=name, help=spec.help, no_args_is_help=True))

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:
        # The help listing reads placeholders; anything that runs goes through resolve_command.
        return self.commands.get(cmd_name)

    def resolve_command(self, ctx: typer.Context, args: list[str]) -> Any:
        if args and isinstance(self.commands.get(args[0]), _Placeholder):
            self.commands[args[0]] = load_group(args[0])
        return super().resolve_command(ctx, args)
