"""``tiffin environment build|prune|list-built``: environments built on the server ahead of deployments (issue 13).

``build`` resolves an environment exactly as a deployment's replicas would have it and builds it under the
server's ``$TIFFIN_HOME/envs`` (the server owns that folder), so the first deployment of it starts at once. It
takes a deployment YAML (online or batch), an environment YAML as ``tiffin environment create -f`` takes it, or a
bare conda file (``-f``), or a registered environment (``-n NAME -v V`` or ``-l latest``); ``--set`` changes the
YAML (or the registered environment's fields) first, as elsewhere. uv's output streams to stderr as it comes;
the result (the key, where it is, what was skipped) goes to stdout.

``prune`` removes the built environments that nothing uses (no stored deployment, no queued or running batch
job, no live process); ``list-built`` lists them.
"""

# No `from __future__ import annotations`: Typer reads the options' types from the annotations.

from pathlib import Path
from typing import Annotated, Any

import typer

from tiffin.cli.assets import environment_app, load_asset
from tiffin.cli.options import OptionalFileOpt, OutputOpt, QueryOpt, SetOpt, YesOpt, err, warn
from tiffin.cli.output import OutputFormat, emit
from tiffin.cli.shared import confirm_delete, connect, load_with_flags
from tiffin.errors import SpecError
from tiffin.specs import (
    BatchDeployment,
    EnvironmentAsset,
    OnlineDeployment,
    apply_overrides,
    kind_from_schema,
    parse_spec,
)
from tiffin.specs.problems import article
from tiffin.specs.strict_yaml import read_yaml

__all__ = ["build_request", "file_kind"]

# Fields only a batch deployment has: a deployment YAML without $schema is batch when it sets one of them.
_BATCH_FIELDS = frozenset({
    "compute", "mini_batch_size", "max_concurrency_per_instance", "output_action", "output_file_name",
    "retry_settings", "error_threshold", "logging_level", "settings",
})  # fmt: skip
# What the server adds to a registered environment that is not one of the environment's own fields.
_SHOWN_ONLY = ("id", "creation_context", "archived", "latest_version")


def file_kind(data: dict[str, Any], hint: str | None, source: str) -> str:
    """What a YAML file given to ``build -f`` is: ``online`` or ``batch`` (a deployment), ``environment`` (an
    environment YAML) or ``conda`` (a conda file). Its ``$schema`` decides where it has one; else its fields."""
    schema = data.get("$schema") or hint
    if isinstance(schema, str) and schema:
        kind = kind_from_schema(schema)
        if kind is OnlineDeployment:
            return "online"
        if kind is BatchDeployment:
            return "batch"
        if kind is EnvironmentAsset:
            return "environment"
        label = getattr(kind, "kind_label", None) or "file of another kind"
        raise SpecError(
            f"describes {article(label)} {label} (per its $schema); give a deployment YAML (online or batch), an "
            "environment YAML or a conda file",
            source=source,
            field="$schema",
        )
    keys = set(data)
    if keys & {"endpoint_name", "model", "code_configuration"}:
        return "batch" if keys & _BATCH_FIELDS or data.get("type") in ("model", "pipeline") else "online"
    if keys & {"conda_file", "image", "build"}:
        return "environment"
    if keys & {"dependencies", "channels"}:
        return "conda"
    raise SpecError(
        "is neither a deployment (model, code_configuration, environment), an environment (conda_file, image) nor a "
        "conda file (channels, dependencies); add a $schema line if it is one of them",
        source=source,
    )


def build_request(
    file: Path | None, name: str | None, version: str | None, label: str | None, overrides: list[str] | None
) -> tuple[dict[str, Any], str]:
    """The body of the server's build route for these flags, and what is being built, for messages. A file's
    relative paths resolve against its folder, as ``create -f`` resolves them."""
    if (file is None) == (name is None):
        raise typer.BadParameter(
            "give the deployment, environment or conda file with --file, or a registered environment with --name "
            "(and --version V or --label latest)",
            param_hint="--file/--name",
        )
    if file is not None:
        if version is not None or label is not None:
            raise typer.BadParameter("--version and --label go with --name (a registered environment), not --file")
        data, hint = read_yaml(file)
        kind = file_kind(data, hint, str(file))
        if kind in ("online", "batch"):
            model = OnlineDeployment if kind == "online" else BatchDeployment
            loaded = load_with_flags(model, file, overrides)
            return {"deployment": loaded.spec.to_yaml_dict(), "kind": kind}, f"{kind} deployment '{loaded.spec.name}'"
        if kind == "environment":
            environment = load_asset(EnvironmentAsset, file, overrides).spec
            return {"environment": environment.to_yaml_dict()}, f"environment '{environment.name}'"
        if overrides:
            raise typer.BadParameter(
                f"{file} is a conda file: --set changes a deployment or environment YAML; edit the conda file, or "
                "name it from an environment YAML (conda_file: FILE) and --set that",
                param_hint="--set",
            )
        return {"environment": {"conda_file": str(file.expanduser().absolute())}}, f"conda file {file}"
    if version is not None and label is not None:
        raise typer.BadParameter("give --version or --label, not both")
    if version is None and label is None:
        raise typer.BadParameter(
            f"give --version V or --label latest (`tiffin environment list --name {name}` lists the versions)"
        )
    if label is not None and label != "latest":
        raise typer.BadParameter(f"the only label an environment has is 'latest' (got {label!r})", param_hint="--label")
    reference = f"azureml:{name}:{version}" if version is not None else f"azureml:{name}@latest"
    if not overrides:
        return {"environment": reference}, f"environment {reference}"
    # --set on a registered environment: its fields as registered, changed here, built as an inline environment.
    with connect() as client:
        current = client.environments.get(name, version, label)
    source = f"environment '{name}' version {current.get('version')}"
    changed = apply_overrides({k: v for k, v in current.items() if k not in _SHOWN_ONLY}, overrides, source=source)
    # A path given with --set is the current directory's (the server does not share it), as `update` reads it.
    spec = parse_spec(changed, EnvironmentAsset, source, Path.cwd()).spec
    return {"environment": spec.to_yaml_dict()}, f"{source}, changed by --set"


@environment_app.command(
    "build",
    help="Build on the server the environment a deployment runs in (-f deployment.yml, online or batch), or an "
    "environment (-f environment.yml, -f conda.yml, or -n NAME with -v V or -l latest), as its replicas would have "
    "it, so they start at once; built already: reused.",
)
def environment_build(
    file: OptionalFileOpt = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="A registered environment's name.")] = None,
    version: Annotated[str | None, typer.Option("--version", "-v", help="Its version.")] = None,
    label: Annotated[
        str | None, typer.Option("--label", "-l", help="Label: latest (the highest version not archived).")
    ] = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print uv's output, only the result.")] = False,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    body, what = build_request(file, name, version, label, set_)
    err.print(f"building environment of {what} on the server (uv's output follows; this may take minutes) ...")

    def show(line: str) -> None:
        if not quiet:
            err.print(line, markup=False, highlight=False)

    with connect() as client:
        result = client.environments.build(
            body.get("environment"), deployment=body.get("deployment"), kind=body.get("kind"), on_output=show
        )
    if result.get("key") is None:
        for note in result.get("notes") or ():
            warn(note)
    else:
        done = "reused" if result.get("reused") else f"built in {result.get('seconds', 0):.1f} s"
        err.print(f"environment {str(result['key'])[:12]} {done}: {result.get('path')} (log: {result.get('log')})")
        # pip itself is always skipped (uv installs without it): only the others are news.
        skipped = [package for package in result.get("skipped") or () if package != "pip"]
        if skipped:
            warn(f"skipped (conda's own, or bundled in pip's wheels; not installed): {', '.join(skipped)}")
    emit(result, output, query)


@environment_app.command(
    "prune",
    help="Remove the built environments (under the server's $TIFFIN_HOME/envs) that no online or batch deployment, "
    "queued or running batch job, or live process uses; one being built is left alone. Asks first unless --yes.",
)
def environment_prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only list what would be removed, and what is kept and why.")
    ] = False,
    shared: Annotated[
        bool,
        typer.Option(
            "--shared",
            help="Prune all the same when the server's environments are in a TIFFIN_ENVS_DIR other servers or "
            "homes may share (their stopped deployments' environments go too, rebuilt when they start).",
        ),
    ] = False,
    yes: YesOpt = False,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    with connect() as client:
        if not dry_run and not yes:
            preview = client.environments.prune(dry_run=True)
            if not preview["removed"]:
                _report(preview)
                emit(preview, output, query)
                return
            _report(preview)
            if not preview.get("shared") or shared:  # else the server refuses, saying why
                what = f"{len(preview['removed'])} unused environment(s), {_size(preview['freed_bytes'])}"
                confirm_delete(what, yes)
        result = client.environments.prune(dry_run=dry_run, shared=shared)
    _report(result)
    emit(result, output, query)


@environment_app.command(
    "list-built", help="List the environments built on the server: key, path, python, source, built_at, size_bytes."
)
def environment_list_built(output: OutputOpt = OutputFormat.json, query: QueryOpt = None) -> None:
    with connect() as client:
        emit(client.environments.list_built(), output, query)


def _report(result: dict[str, Any]) -> None:
    for item in result.get("unresolved") or ():
        warn(f"{item['user']}: its environment cannot be resolved, so it keeps none: {item['message']}")
    verb = "would remove" if result.get("dry_run") else "removed"
    err.print(
        f"{verb} {len(result['removed'])} environment(s), {_size(result['freed_bytes'])}; kept {len(result['kept'])}",
        highlight=False,
    )


def _size(size: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
