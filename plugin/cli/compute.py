"""``tiffin compute create|show|list|update|delete``: ``az ml compute``'s commands and flags.

A compute is a record here: its ``max_instances`` caps the instances of a batch deployment that names it
(``compute: azureml:NAME``), and ``min_instances: 0`` means that deployment's workers exist only while jobs run.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tiffin.cli.assets import EXTRA_ARGS, DescriptionOpt, RemoveOpt, load_asset, parse_tags, remove_fields
from tiffin.cli.options import InstantNoWaitOpt, OptionalFileOpt, OutputOpt, QueryOpt, SetOpt, YesOpt, warn
from tiffin.cli.output import OutputFormat, emit
from tiffin.cli.shared import confirm_delete, connect
from tiffin.specs import Compute, apply_overrides

__all__ = ["compute_app"]

compute_app = typer.Typer(help="Manage computes (as `az ml compute`).", no_args_is_help=True)

NameOpt = Annotated[str, typer.Option("--name", "-n", help="Name of the compute.")]
MinOpt = Annotated[int | None, typer.Option("--min-instances", min=0, help="Fewest instances (0: none while idle).")]
MaxOpt = Annotated[
    int | None, typer.Option("--max-instances", min=1, help="Most instances a batch deployment on it may use.")
]
IdleOpt = Annotated[
    int | None,
    typer.Option("--idle-time-before-scale-down", "-d", min=0, help="Seconds idle before scaling down (kept)."),
]
TagsOpt = Annotated[
    list[str] | None, typer.Option("--tags", help="Space-separated KEY=VALUE pairs: --tags team=a stage=dev.")
]
# Fields `show` adds that are no input: they never count as a change.
_READ_ONLY = frozenset({"id", "provisioning_state", "created_on", "creation_context", "state", "last_operation"})


@compute_app.command("create", context_settings=EXTRA_ARGS)
def compute_create(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Name (overrides the file's).")] = None,
    file: OptionalFileOpt = None,
    type_: Annotated[
        str | None, typer.Option("--type", "-t", help="AmlCompute (default), ComputeInstance or Kubernetes.")
    ] = None,
    size: Annotated[str | None, typer.Option("--size", help="VM size (kept; not used locally).")] = None,
    min_instances: MinOpt = None,
    max_instances: MaxOpt = None,
    idle_time_before_scale_down: IdleOpt = None,
    tier: Annotated[str | None, typer.Option("--tier", help="dedicated or low_priority (kept).")] = None,
    location: Annotated[str | None, typer.Option("--location", "-l", help="Location (kept).")] = None,
    description: DescriptionOpt = None,
    tags: TagsOpt = None,
    no_wait: InstantNoWaitOpt = False,
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Create a compute (or replace the one of that name): from -f compute.yml, or from flags."""
    if name is None and file is None:
        raise typer.BadParameter("name the compute with --name, or give its YAML file with --file", param_hint="--name")
    flags = {
        "name": name, "type": type_, "size": size, "min_instances": min_instances, "max_instances": max_instances,
        "idle_time_before_scale_down": idle_time_before_scale_down, "tier": tier, "location": location,
        "description": description, "tags": parse_tags(tags, ctx.args),
    }  # fmt: skip
    spec = load_asset(Compute, file, set_, flags=flags).spec
    with connect() as client:
        emit(client.compute.create_or_update(spec), output, query)


@compute_app.command("show")
def compute_show(name: NameOpt, output: OutputOpt = OutputFormat.json, query: QueryOpt = None) -> None:
    """Show a compute: type, min_instances, max_instances..."""
    with connect() as client:
        emit(client.compute.get(name), output, query)


@compute_app.command("list")
def compute_list(
    type_: Annotated[
        str | None, typer.Option("--type", "-t", help="Only this type: AmlCompute, ComputeInstance or Kubernetes.")
    ] = None,
    max_results: Annotated[int | None, typer.Option("--max-results", "-r", min=1, help="At most this many.")] = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """List the computes."""
    with connect() as client:
        items = client.compute.list(type_)
    emit(items[:max_results] if max_results else items, output, query)


@compute_app.command("update", context_settings=EXTRA_ARGS)
def compute_update(
    ctx: typer.Context,
    name: NameOpt,
    min_instances: MinOpt = None,
    max_instances: MaxOpt = None,
    idle_time_before_scale_down: IdleOpt = None,
    tags: TagsOpt = None,
    no_wait: InstantNoWaitOpt = False,
    set_: SetOpt = None,
    remove: RemoveOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Change a compute: --min-instances, --max-instances, --idle-time-before-scale-down, --tags (added to its
    tags), --set FIELD=VALUE, or --remove tags.KEY."""
    with connect() as client:
        current = client.compute.get(name)
        source = f"compute '{name}'"
        changed: dict[str, Any] = apply_overrides(current, set_ or (), source=source, kind=Compute)
        changed = remove_fields(changed, remove, source)
        flags = {
            "min_instances": min_instances, "max_instances": max_instances,
            "idle_time_before_scale_down": idle_time_before_scale_down,
        }  # fmt: skip
        changed.update({k: v for k, v in flags.items() if v is not None})
        new_tags = parse_tags(tags, ctx.args)
        if new_tags:
            changed["tags"] = {**(changed.get("tags") or {}), **new_tags}
        changes = {
            k: changed.get(k) for k in {*current, *changed} if k not in _READ_ONLY and current.get(k) != changed.get(k)
        }
        if not changes:
            warn(
                f"nothing changes on compute '{name}': give --min-instances, --max-instances, --tags, --set or --remove"
            )
            emit(current, output, query)
            return
        emit(client.compute.update(name, **changes), output, query)


@compute_app.command("delete")
def compute_delete(name: NameOpt, yes: YesOpt = False, no_wait: InstantNoWaitOpt = False) -> None:
    """Delete a compute (refused while a batch deployment uses it: the message names them)."""
    with connect() as client:
        client.compute.get(name)  # a missing one is reported before the prompt
        confirm_delete(f"compute '{name}'", yes)
        client.compute.delete(name)
