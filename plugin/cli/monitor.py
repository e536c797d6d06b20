"""``tiffin monitor autoscale ...``: ``az monitor autoscale``'s commands and flags, for online deployments.

Azure's how-to scales a managed online deployment with ``az monitor autoscale create --name N --resource
DEPLOYMENT_ID --min-count 2 --max-count 5 --count 2``, ``az monitor autoscale rule create --autoscale-name N
--condition "CpuUtilizationPercentage > 70 avg 5m" --scale out 2`` and ``az monitor autoscale profile create
--autoscale-name N --name weekend-profile ... --recurrence week sat sun --timezone "Pacific Standard Time"``; the
same lines work with ``tiffin monitor``. ``--resource`` is the deployment's id (``tiffin online-deployment show
--query id -o tsv``); ``--endpoint-name E --deployment-name D`` is tiffin's shorthand for it.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tiffin.cli.options import OutputOpt, QueryOpt, YesOpt
from tiffin.cli.output import OutputFormat, emit
from tiffin.cli.shared import confirm_delete, connect

__all__ = ["monitor_app"]

monitor_app = typer.Typer(help="Autoscale online deployments (as `az monitor autoscale`).", no_args_is_help=True)
autoscale_app = typer.Typer(help="Manage autoscale settings (as `az monitor autoscale`).", no_args_is_help=True)
rule_app = typer.Typer(help="Manage autoscale rules (as `az monitor autoscale rule`).", no_args_is_help=True)
profile_app = typer.Typer(help="Manage autoscale profiles (as `az monitor autoscale profile`).", no_args_is_help=True)
monitor_app.add_typer(autoscale_app, name="autoscale")
autoscale_app.add_typer(rule_app, name="rule")
autoscale_app.add_typer(profile_app, name="profile")

# `--recurrence week sat sun` takes several words, as az's does: the words after the first arrive as extra args.
_WORDS = {"allow_extra_args": True, "ignore_unknown_options": False}

SettingOpt = Annotated[str, typer.Option("--name", "-n", "--autoscale-name", help="Name of the autoscale setting.")]
AutoscaleNameOpt = Annotated[str, typer.Option("--autoscale-name", help="Name of the autoscale setting.")]
ProfileNameOpt = Annotated[str, typer.Option("--profile-name", help="Profile of the rules (default: default).")]
GroupOpt = Annotated[
    str | None, typer.Option("--resource-group", "-g", help="Accepted for az's scripts; tiffin has one.", hidden=True)
]
MinCountOpt = Annotated[int, typer.Option("--min-count", min=0, help="Fewest instances.")]
MaxCountOpt = Annotated[int, typer.Option("--max-count", min=0, help="Most instances.")]
CountOpt = Annotated[int, typer.Option("--count", min=0, help="Default instance count (used without metric data).")]


def _no_extra(ctx: typer.Context) -> None:
    if ctx.args:
        raise typer.BadParameter(f"unexpected words: {' '.join(ctx.args)}")


@autoscale_app.command("create")
def autoscale_create(
    name: SettingOpt,
    min_count: MinCountOpt,
    max_count: MaxCountOpt,
    count: CountOpt,
    resource: Annotated[
        str | None, typer.Option("--resource", help="The online deployment's id (.../onlineEndpoints/E/deployments/D).")
    ] = None,
    endpoint_name: Annotated[
        str | None, typer.Option("--endpoint-name", "-e", help="Endpoint of the deployment (instead of --resource).")
    ] = None,
    deployment_name: Annotated[
        str | None, typer.Option("--deployment-name", "-d", help="The deployment (with --endpoint-name).")
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled.")] = False,
    resource_group: GroupOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Create an autoscale setting for an online deployment, with a default profile of these counts."""
    with connect() as client:
        setting = client.autoscale.create(
            name,
            resource=resource,
            endpoint_name=endpoint_name,
            deployment_name=deployment_name,
            min_count=min_count,
            max_count=max_count,
            count=count,
            enabled=not disabled,
        )
    emit(setting, output, query)


@autoscale_app.command("update")
def autoscale_update(
    name: SettingOpt,
    min_count: Annotated[int | None, typer.Option("--min-count", min=0, help="Fewest instances.")] = None,
    max_count: Annotated[int | None, typer.Option("--max-count", min=0, help="Most instances.")] = None,
    count: Annotated[int | None, typer.Option("--count", min=0, help="Default instance count.")] = None,
    enabled: Annotated[str | None, typer.Option("--enabled", help="true or false (as az's --enabled).")] = None,
    resource_group: GroupOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Change the default profile's counts, or enable/disable the setting (--enabled false)."""
    if enabled is not None and enabled.lower() not in ("true", "false"):
        raise typer.BadParameter(f"--enabled takes true or false, not {enabled!r}", param_hint="--enabled")
    on = None if enabled is None else enabled.lower() == "true"
    with connect() as client:
        emit(
            client.autoscale.update(name, min_count=min_count, max_count=max_count, count=count, enabled=on),
            output,
            query,
        )


@autoscale_app.command("show")
def autoscale_show(
    name: SettingOpt, resource_group: GroupOpt = None, output: OutputOpt = OutputFormat.json, query: QueryOpt = None
) -> None:
    """Show an autoscale setting: its target, profiles and rules."""
    with connect() as client:
        emit(client.autoscale.get(name), output, query)


@autoscale_app.command("list")
def autoscale_list(
    resource_group: GroupOpt = None, output: OutputOpt = OutputFormat.json, query: QueryOpt = None
) -> None:
    """List the autoscale settings (targetExists false: the deployment is gone, the setting does nothing)."""
    with connect() as client:
        emit(client.autoscale.list(), output, query)


@autoscale_app.command("delete")
def autoscale_delete(name: SettingOpt, resource_group: GroupOpt = None, yes: YesOpt = True) -> None:
    """Delete an autoscale setting; the deployment keeps its current instance count. (az does not prompt.)"""
    with connect() as client:
        client.autoscale.get(name)  # a missing one is reported before any prompt
        confirm_delete(f"autoscale setting '{name}'", yes)
        client.autoscale.delete(name)


@rule_app.command("create")
def rule_create(
    autoscale_name: AutoscaleNameOpt,
    condition: Annotated[
        str,
        typer.Option(
            "--condition", help='"METRIC OP THRESHOLD AGGREGATION WINDOW": "CpuUtilizationPercentage > 70 avg 5m".'
        ),
    ],
    scale: Annotated[tuple[str, str], typer.Option("--scale", help="out N, in N, out N%, in N% or to N.")],
    cooldown: Annotated[str, typer.Option("--cooldown", help="Minutes before another scale action.")] = "5",
    resource: Annotated[
        str | None, typer.Option("--resource", help="Endpoint or deployment id the metric is of (default: the target).")
    ] = None,
    profile_name: ProfileNameOpt = "default",
    resource_group: GroupOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Add a rule to a profile of an autoscale setting."""
    with connect() as client:
        setting = client.autoscale.create_rule(
            autoscale_name, condition, " ".join(scale), cooldown=cooldown, resource=resource, profile=profile_name
        )
    rules = _profile(setting, profile_name).get("rules", [])
    emit({**rules[-1], "index": len(rules) - 1}, output, query)


def _profile(setting: dict[str, Any], name: str) -> dict[str, Any]:
    for profile in setting.get("profiles", []):
        if profile.get("name") == name:
            return dict(profile)
    from tiffin.errors import NotFoundError

    known = ", ".join(str(p.get("name")) for p in setting.get("profiles", []))
    raise NotFoundError(f"profile '{name}' not found in autoscale setting '{setting.get('name')}'; it has: {known}")


@rule_app.command("list")
def rule_list(
    autoscale_name: AutoscaleNameOpt,
    profile_name: ProfileNameOpt = "default",
    resource_group: GroupOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """List a profile's rules, with the index `rule delete --index` takes."""
    with connect() as client:
        setting = client.autoscale.get(autoscale_name)
    rules = _profile(setting, profile_name).get("rules", [])
    emit([{**rule, "index": index} for index, rule in enumerate(rules)], output, query)


@rule_app.command("delete")
def rule_delete(
    autoscale_name: AutoscaleNameOpt,
    index: Annotated[list[str], typer.Option("--index", help="0-based index of a rule (repeatable), or '*' for all.")],
    profile_name: ProfileNameOpt = "default",
    resource_group: GroupOpt = None,
) -> None:
    """Delete rules by index (`rule list` shows them)."""
    with connect() as client:
        # Highest first, so that deleting one does not renumber the others still to delete.
        for one in sorted(index, key=lambda i: -1 if i == "*" else -int(i) if i.isdigit() else 0):
            client.autoscale.delete_rule(autoscale_name, one, profile=profile_name)


@profile_app.command("create", context_settings=_WORDS)
def profile_create(
    ctx: typer.Context,
    autoscale_name: AutoscaleNameOpt,
    name: Annotated[str, typer.Option("--name", "-n", help="Name of the profile.")],
    min_count: MinCountOpt,
    max_count: MaxCountOpt,
    count: CountOpt,
    recurrence: Annotated[
        str | None, typer.Option("--recurrence", "-r", help="week and days: --recurrence week sat sun.")
    ] = None,
    start: Annotated[str | None, typer.Option("--start", help="Start: HH:MM with --recurrence, else a date.")] = None,
    end: Annotated[str | None, typer.Option("--end", help="End: HH:MM with --recurrence, else a date.")] = None,
    timezone: Annotated[
        str | None, typer.Option("--timezone", help='"Pacific Standard Time" or an IANA name (default UTC).')
    ] = None,
    copy_rules: Annotated[str | None, typer.Option("--copy-rules", help="Copy this profile's rules.")] = None,
    resource_group: GroupOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Create or replace a profile: counts for a weekly recurrence or fixed dates, in a time zone."""
    if recurrence is None:
        _no_extra(ctx)
    words = " ".join([recurrence, *ctx.args]) if recurrence is not None else None
    with connect() as client:
        setting = client.autoscale.put_profile(
            autoscale_name,
            name,
            min_count=min_count,
            max_count=max_count,
            count=count,
            recurrence=words,
            start=start,
            end=end,
            timezone=timezone,
            copy_rules=copy_rules,
        )
    emit(_profile(setting, name), output, query)


@profile_app.command("list")
def profile_list(
    autoscale_name: AutoscaleNameOpt,
    resource_group: GroupOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """List a setting's profiles."""
    with connect() as client:
        emit(client.autoscale.get(autoscale_name).get("profiles", []), output, query)


@profile_app.command("show")
def profile_show(
    autoscale_name: AutoscaleNameOpt,
    name: Annotated[str, typer.Option("--name", "-n", help="Name of the profile.")],
    resource_group: GroupOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Show one profile."""
    with connect() as client:
        emit(_profile(client.autoscale.get(autoscale_name), name), output, query)


@profile_app.command("delete")
def profile_delete(
    autoscale_name: AutoscaleNameOpt,
    name: Annotated[str, typer.Option("--name", "-n", help="Name of the profile.")],
    resource_group: GroupOpt = None,
) -> None:
    """Delete a profile (not the default one)."""
    with connect() as client:
        client.autoscale.delete_profile(autoscale_name, name)
