"""``tiffin model|environment|data ...``: ``az ml``'s asset commands, verbs and flags.

A YAML file's relative paths (``--set`` values too) resolve against the file's folder, a flag's (``--path``,
``--conda-file``, ``--build-context``) against the current directory, as Azure's CLI resolves them; the
spec is sent with absolute paths to ``tiffin serve``, which copies the files into its content store.
"""

# No `from __future__ import annotations`: the show/list/update/archive/restore commands are built per kind
# below, and Typer reads their options' types from the annotations, which must be objects, not strings.

import copy
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tiffin.cli.options import InstantNoWaitOpt, OptionalFileOpt, OutputOpt, QueryOpt, SetOpt, err, warn
from tiffin.cli.output import OutputFormat, emit
from tiffin.cli.shared import connect
from tiffin.errors import SpecError, TiffinError
from tiffin.specs import (
    DataAsset,
    EnvironmentAsset,
    LoadedSpec,
    ModelAsset,
    SpecModel,
    apply_overrides,
    is_remote_path,
    load_spec,
    parse_spec,
)

__all__ = ["data_app", "environment_app", "load_asset", "model_app", "parse_tags", "remove_fields"]

S = TypeVar("S", bound=SpecModel)

model_app = typer.Typer(help="Manage registered models (as `az ml model`).", no_args_is_help=True)
environment_app = typer.Typer(help="Manage registered environments (as `az ml environment`).", no_args_is_help=True)
data_app = typer.Typer(help="Manage registered data assets (as `az ml data`).", no_args_is_help=True)

# az takes `--tags a=b c=d` (several values after one flag); Click gives an option one value, so the
# others arrive as extra arguments, which these commands accept and read as more tags.
EXTRA_ARGS = {"allow_extra_args": True}

OptionalNameOpt = Annotated[str | None, typer.Option("--name", "-n", help="Name (overrides the file's).")]
OptionalVersionOpt = Annotated[
    str | None, typer.Option("--version", "-v", help="Version (default: the file's, else the next integer one).")
]
DescriptionOpt = Annotated[str | None, typer.Option("--description", help="Description.")]
TagsOpt = Annotated[
    list[str] | None, typer.Option("--tags", help="Space-separated KEY=VALUE pairs: --tags team=a stage=dev.")
]
RemoveOpt = Annotated[
    list[str] | None, typer.Option("--remove", help="Remove a field or a key: --remove tags.team (repeatable).")
]
DatastoreOpt = Annotated[
    str | None,
    typer.Option("--datastore", help="Accepted as az accepts it; tiffin keeps the files in its own store."),
]
# What a registered version lets change; the rest is immutable, as on Azure (tiffin.sdk's list, not imported:
# the SDK loads httpx, which commands that fail early need not).
MUTABLE_FIELDS = ("description", "tags", "stage")


# --- helpers -------------------------------------------------------------------------------------


def parse_tags(given: Sequence[str] | None, extra: Sequence[str] = ()) -> dict[str, str] | None:
    """``--tags a=b c=d`` as ``{"a": "b", "c": "d"}``: the flag's values and the extra arguments after it.

    A value without ``=`` is a tag with an empty value, as az makes it; an extra argument with no ``--tags``
    before it is a usage error.
    """
    if not given:
        if extra:
            raise typer.BadParameter(
                f"unexpected argument(s) {' '.join(extra)}: only --tags takes several values (--tags a=b c=d); "
                "give each --set its own flag (--set a=1 --set b=2)"
            )
        return None
    tags: dict[str, str] = {}
    for item in [*given, *extra]:
        key, _, value = item.partition("=")
        if not key:
            raise typer.BadParameter(f"expected KEY=VALUE pairs such as 'team=a', not {item!r}", param_hint="--tags")
        tags[key] = value
    return tags


def remove_fields(data: Mapping[str, Any], paths: Sequence[str] | None, source: str) -> dict[str, Any]:
    """A copy of ``data`` without the dotted ``paths`` (az's ``--remove tags.team``); a path that is not there is
    an error naming it, so a typo does not pass for a removal."""
    result = copy.deepcopy(dict(data))
    for dotted in paths or ():
        *parents, last = dotted.split(".")
        node: Any = result
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node:
            raise SpecError(f"cannot remove '{dotted}': {source} has no such field", source=source, field=dotted)
        del node[last]
    return result


def _absolute(value: str) -> str:
    # A flag's local path is the current directory's (the server does not share it); URIs stay as given.
    if is_remote_path(value):
        return value
    local = value.removeprefix("file:")
    return os.path.normpath(os.path.abspath(os.path.expanduser(local)))


def load_asset(
    kind: type[S],
    file: Path | None,
    overrides: Sequence[str] | None,
    *,
    flags: Mapping[str, Any] | None = None,
    paths: Mapping[str, str | None] | None = None,
) -> LoadedSpec[S]:
    """The spec from ``file`` (or from flags alone), ``--set`` overrides applied, then the flags.

    Relative paths in the file and in ``--set`` values resolve against the file's folder (against the current
    directory without a file); ``paths`` (flag values such as ``--path``) against the current directory.
    Flags go through the override mechanism JSON-quoted, so YAML keeps ``--version 1`` a string; ``tags``
    adds to the file's tags, as az's ``--tags`` does.
    """
    given: list[str] = []
    for key, value in (paths or {}).items():
        if value is not None:
            given.append(f"{key}={json.dumps(_absolute(value))}")
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key == "tags":
            given += [f"tags.{tag}={json.dumps(text)}" for tag, text in value.items()]
        else:
            given.append(f"{key}={json.dumps(value)}")
    every = [*(overrides or ()), *given]
    if file is not None:
        loaded = load_spec(file, kind, every)
    else:
        loaded = parse_spec({}, kind, "<command line>", Path.cwd(), overrides=every)
    for line in loaded.warnings():
        warn(line)
    return loaded


def _need_name(name: str | None, file: Path | None, noun: str) -> None:
    if name is None and file is None:
        raise typer.BadParameter(f"name the {noun} with --name, or give its YAML file with --file", param_hint="--name")


def _ignored_flag(flag: str, value: object) -> None:
    if value:
        warn(f"{flag} is ignored: tiffin keeps registered files in its own store under $TIFFIN_HOME")


def _register(operations: str, spec: SpecModel) -> dict[str, Any]:
    with connect() as client:
        return getattr(client, operations).create_or_update(spec)


# --- create, per kind ----------------------------------------------------------------------------


@model_app.command("create", context_settings=EXTRA_ARGS)
def model_create(
    ctx: typer.Context,
    name: OptionalNameOpt = None,
    version: OptionalVersionOpt = None,
    file: OptionalFileOpt = None,
    path: Annotated[
        str | None, typer.Option("--path", "-p", help="The model's file or folder (or a URI such as runs:/...).")
    ] = None,
    type_: Annotated[
        str | None, typer.Option("--type", "-t", help="custom_model (default), mlflow_model or triton_model.")
    ] = None,
    description: DescriptionOpt = None,
    tags: TagsOpt = None,
    stage: Annotated[str | None, typer.Option("--stage", help="Stage, such as Development or Production.")] = None,
    datastore: DatastoreOpt = None,
    no_wait: InstantNoWaitOpt = False,
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Register a model version: its files are copied into tiffin's store (the source may change after)."""
    _need_name(name, file, "model")
    if file is None and path is None:
        raise typer.BadParameter(
            "give the model's files with --path, or its YAML file with --file", param_hint="--path"
        )
    _ignored_flag("--datastore", datastore)
    flags = {"name": name, "version": version, "type": type_, "description": description, "stage": stage}
    spec = load_asset(ModelAsset, file, set_, flags={**flags, "tags": parse_tags(tags, ctx.args)}, paths={"path": path})
    emit(_register("models", spec.spec), output, query)


@environment_app.command("create", context_settings=EXTRA_ARGS)
def environment_create(
    ctx: typer.Context,
    name: OptionalNameOpt = None,
    version: OptionalVersionOpt = None,
    file: OptionalFileOpt = None,
    image: Annotated[str | None, typer.Option("--image", "-i", help="Docker image (kept; not run locally).")] = None,
    conda_file: Annotated[str | None, typer.Option("--conda-file", "-c", help="A conda YAML file.")] = None,
    build_context: Annotated[
        str | None, typer.Option("--build-context", "-b", "--build", help="A Docker build context folder.")
    ] = None,
    dockerfile_path: Annotated[
        str | None,
        typer.Option("--dockerfile-path", "-d", help="The Dockerfile, relative to the build context (Dockerfile)."),
    ] = None,
    os_type: Annotated[str | None, typer.Option("--os-type", help="linux (default) or windows.")] = None,
    description: DescriptionOpt = None,
    tags: TagsOpt = None,
    datastore: DatastoreOpt = None,
    no_wait: InstantNoWaitOpt = False,
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Register an environment version (an image, a conda file or a build context); built in a later step."""
    _need_name(name, file, "environment")
    if dockerfile_path is not None and build_context is None and file is None:
        raise typer.BadParameter("--dockerfile-path needs --build-context (the folder it is in)")
    _ignored_flag("--datastore", datastore)
    flags = {
        "name": name, "version": version, "image": image, "os_type": os_type, "description": description,
        "build.dockerfile_path": dockerfile_path, "tags": parse_tags(tags, ctx.args),
    }  # fmt: skip
    paths = {"conda_file": conda_file, "build.path": build_context}
    spec = load_asset(EnvironmentAsset, file, set_, flags=flags, paths=paths)
    emit(_register("environments", spec.spec), output, query)


@data_app.command("create", context_settings=EXTRA_ARGS)
def data_create(
    ctx: typer.Context,
    name: OptionalNameOpt = None,
    version: OptionalVersionOpt = None,
    file: OptionalFileOpt = None,
    path: Annotated[
        str | None,
        typer.Option(
            "--path", "-p", help="A local file or folder, an azureml://datastores/... path or an http(s) URL."
        ),
    ] = None,
    type_: Annotated[
        str | None, typer.Option("--type", "-t", help="uri_folder (default), uri_file or mltable.")
    ] = None,
    description: DescriptionOpt = None,
    tags: TagsOpt = None,
    datastore: DatastoreOpt = None,
    skip_validation: Annotated[bool, typer.Option("--skip-validation", help="Accepted as az accepts it.")] = False,
    no_wait: InstantNoWaitOpt = False,
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Register a data asset version: local files are copied into tiffin's store, URIs kept as they are."""
    _need_name(name, file, "data asset")
    if file is None and path is None:
        raise typer.BadParameter("give the data with --path, or its YAML file with --file", param_hint="--path")
    _ignored_flag("--datastore", datastore)
    flags = {"name": name, "version": version, "type": type_, "description": description}
    spec = load_asset(DataAsset, file, set_, flags={**flags, "tags": parse_tags(tags, ctx.args)}, paths={"path": path})
    emit(_register("data", spec.spec), output, query)


@model_app.command("download")
def model_download(
    name: Annotated[str, typer.Option("--name", "-n", help="Name of the model.")],
    version: Annotated[str, typer.Option("--version", "-v", help="Version of the model.")],
    download_path: Annotated[
        Path, typer.Option("--download-path", "-p", help="Folder to download into (default: the current one).")
    ] = Path("."),
) -> None:
    """Download a model version's files into DOWNLOAD_PATH/NAME/, as az does."""
    with connect() as client:
        target = client.models.download(name, version, download_path)
    err.print(f"model '{name}' version {version} downloaded into {target}", highlight=False)


# --- show, list, update, archive, restore: the same for the three kinds --------------------------


def _add_version_commands(app: typer.Typer, kind: str, operations: str, noun: str) -> None:
    """Add az's show/list/update/archive/restore of one asset kind to ``app``."""
    name_opt = Annotated[str, typer.Option("--name", "-n", help=f"Name of the {noun}.")]
    version_opt = Annotated[str | None, typer.Option("--version", "-v", help=f"Version of the {noun}.")]
    label_opt = Annotated[
        str | None, typer.Option("--label", "-l", help="Label: latest (the highest version not archived).")
    ]

    @app.command("show", help=f"Show a {noun} version (--version V, or --label latest).")
    def show(
        name: name_opt,
        version: version_opt = None,
        label: label_opt = None,
        output: OutputOpt = OutputFormat.json,
        query: QueryOpt = None,
    ) -> None:
        if version is None and label is None:
            raise typer.BadParameter(
                f"give --version V or --label latest (`tiffin {kind} list --name {name}` lists the versions)"
            )
        with connect() as client:
            emit(getattr(client, operations).get(name, version, label), output, query)

    @app.command(
        "list", help=f"List the latest version of each {noun}; with --name, that {noun}'s versions, newest first."
    )
    def list_(
        name: Annotated[str | None, typer.Option("--name", "-n", help=f"List this {noun}'s versions.")] = None,
        include_archived: Annotated[
            bool, typer.Option("--include-archived", help="List archived versions too.")
        ] = False,
        archived_only: Annotated[bool, typer.Option("--archived-only", help="List archived versions only.")] = False,
        max_results: Annotated[
            int | None, typer.Option("--max-results", "-r", min=1, help="At most this many.")
        ] = None,
        output: OutputOpt = OutputFormat.json,
        query: QueryOpt = None,
    ) -> None:
        view = "ArchivedOnly" if archived_only else ("All" if include_archived else "ActiveOnly")
        with connect() as client:
            items = getattr(client, operations).list(name, list_view_type=view)
        emit(items[:max_results] if max_results else items, output, query)

    @app.command(
        "update",
        help=f"Change a {noun} version's description, tags or stage: --set description=... --set tags.KEY=VALUE, "
        "--remove tags.KEY.",
    )
    def update(
        name: name_opt,
        version: version_opt = None,
        label: label_opt = None,
        set_: SetOpt = None,
        remove: RemoveOpt = None,
        output: OutputOpt = OutputFormat.json,
        query: QueryOpt = None,
    ) -> None:
        if not set_ and not remove:
            raise typer.BadParameter(
                "nothing to update: give --set description=TEXT, --set tags.KEY=VALUE or --remove tags.KEY"
            )
        with connect() as client:
            assets = getattr(client, operations)
            current = assets.get(name, version, label)
            source = f"{noun} '{name}' version {current['version']}"
            changed = remove_fields(apply_overrides(current, set_ or (), source=source), remove, source)
            other = sorted(
                k for k in {*current, *changed} if k not in MUTABLE_FIELDS and current.get(k) != changed.get(k)
            )
            if other:
                raise TiffinError(
                    f"a registered {noun} version can change only its description, tags and stage, not "
                    f"{', '.join(other)}; register a new version instead: `tiffin {kind} create -f FILE` "
                    "without --version (the next one), or with --version N"
                )
            changes = {k: changed.get(k) for k in MUTABLE_FIELDS if current.get(k) != changed.get(k)}
            # A field removed is sent empty: the server leaves a field it gets as null as it is.
            changes = {k: ({} if k == "tags" else "") if v is None else v for k, v in changes.items()}
            emit(assets.update(name, current["version"], **changes) if changes else current, output, query)

    @app.command(
        "archive",
        help=f"Hide a {noun} version (--version or --label latest; all its versions without either) from list "
        "and @latest; azureml:NAME:VERSION still resolves.",
    )
    def archive(name: name_opt, version: version_opt = None, label: label_opt = None) -> None:
        with connect() as client:
            getattr(client, operations).archive(name, version, label)

    @app.command("restore", help=f"Restore an archived {noun} version (all archived versions without --version).")
    def restore(name: name_opt, version: version_opt = None, label: label_opt = None) -> None:
        with connect() as client:
            getattr(client, operations).restore(name, version, label)


_add_version_commands(model_app, "model", "models", "model")
_add_version_commands(environment_app, "environment", "environments", "environment")
_add_version_commands(data_app, "data", "data", "data asset")
