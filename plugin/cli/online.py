"""``tiffin online-endpoint ...`` and ``tiffin online-deployment ...``: ``az ml``'s commands and flags.

Specs are read here with :func:`tiffin.specs.load_spec` (paths resolved against the YAML file's folder)
and sent to ``tiffin serve`` through :class:`tiffin.sdk.TiffinClient`. Output goes to stdout through
:func:`~tiffin.cli.output.emit`; warnings, prompts and progress go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tiffin.cli.logs import register as register_get_logs
from tiffin.cli.options import (
    DeploymentNameOpt,
    EndpointOpt,
    FileOpt,
    InstantNoWaitOpt,
    NameOpt,
    OptionalEndpointOpt,
    OptionalFileOpt,
    OptionalNameOpt,
    OutputOpt,
    QueryOpt,
    SetOpt,
    YesOpt,
    err,
)
from tiffin.cli.output import OutputFormat, emit
from tiffin.cli.shared import changed_here, confirm_delete, connect, load_with_flags
from tiffin.errors import ConflictError, NotFoundError, TiffinError

if TYPE_CHECKING:
    from tiffin.sdk import OnlineDeploymentOperations
    from tiffin.specs import OnlineDeployment

__all__ = ["online_deployment_app", "online_endpoint_app", "parse_traffic"]

online_endpoint_app = typer.Typer(help="Manage online endpoints (as `az ml online-endpoint`).", no_args_is_help=True)
online_deployment_app = typer.Typer(
    help="Manage online deployments (as `az ml online-deployment`).", no_args_is_help=True
)
register_get_logs(online_endpoint_app, online_deployment_app)  # tiffin.cli.logs

LocalOpt = Annotated[
    bool,
    typer.Option("--local", help="A local endpoint (Azure's semantics: no auth, one deployment taking all traffic)."),
]
NoWaitOpt = Annotated[
    bool, typer.Option("--no-wait", help="Return without waiting for the deployment to be ready (then `show` it).")
]
AllTrafficOpt = Annotated[
    bool, typer.Option("--all-traffic", help="Give the deployment all the endpoint's traffic once it is ready.")
]
DeploymentPinOpt = Annotated[
    str | None, typer.Option("--deployment-name", "-d", "--deployment", help="Name of one of its deployments.")
]

# --- helpers -------------------------------------------------------------------------------------


def parse_traffic(text: str, option: str = "--traffic") -> dict[str, int]:
    """``"blue=90 green=10"`` as ``{"blue": 90, "green": 10}``.

    Also the spellings older Azure docs use: commas between pairs, ``:`` instead of ``=``.
    """
    shares: dict[str, int] = {}
    for item in text.replace(",", " ").split():
        name, _, value = item.replace(":", "=", 1).partition("=")
        if not name or not value.isdigit():
            raise typer.BadParameter(
                f"expected DEPLOYMENT=PERCENT pairs such as 'blue=90 green=10', not {item!r}", param_hint=option
            )
        shares[name] = int(value)
    return shares


def _require_local(endpoint: dict[str, Any], local: bool) -> None:
    # With --local, az looks among local endpoints only; an endpoint that is not local is not there.
    if local and not endpoint.get("local"):
        name = endpoint["name"]
        raise NotFoundError(
            f"online endpoint '{name}' is not a local endpoint; drop --local, or create a local one with "
            f"`tiffin online-endpoint create --local -n NAME`"
        )


# --- online-endpoint -----------------------------------------------------------------------------


@online_endpoint_app.command("create")
def endpoint_create(
    name: OptionalNameOpt = None,
    file: OptionalFileOpt = None,
    auth_mode: Annotated[
        str | None, typer.Option("--auth-mode", help="key or aml_token (aad_token works too).")
    ] = None,
    local: LocalOpt = False,
    no_wait: InstantNoWaitOpt = False,
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Create an endpoint (ready at once; --no-wait is accepted for az compatibility)."""
    if name is None and file is None:
        raise typer.BadParameter(
            "name the endpoint with --name, or give its YAML file with --file", param_hint="--name"
        )
    from tiffin.specs import OnlineEndpoint  # pydantic: imported by the commands that read a spec, not by show

    loaded = load_with_flags(OnlineEndpoint, file, set_, name=name, auth_mode=auth_mode)
    with connect() as client:
        emit(client.online_endpoints.create(loaded.spec, local=local), output, query)


@online_endpoint_app.command("update")
def endpoint_update(
    name: OptionalNameOpt = None,
    file: OptionalFileOpt = None,
    traffic: Annotated[
        str | None, typer.Option("--traffic", "-r", help='Live traffic split, e.g. "blue=90 green=10".')
    ] = None,
    mirror_traffic: Annotated[
        str | None, typer.Option("--mirror-traffic", help='Mirror a share of live traffic, e.g. "green=10".')
    ] = None,
    local: LocalOpt = False,
    no_wait: InstantNoWaitOpt = False,
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Update an endpoint: the fields the file and --set give, and/or its traffic."""
    changes: dict[str, Any] = {}
    if file is not None or set_:
        # Only the fields given: an update from a file without traffic must not reset the traffic.
        from tiffin.specs import OnlineEndpoint

        spec = load_with_flags(OnlineEndpoint, file, set_, name=name).spec
        changes = {k: v for k, v in spec.model_dump(mode="json", exclude_unset=True).items() if k != "name"}
        name = spec.name  # as az: -n, else the file's name
    if name is None:
        raise typer.BadParameter("give the endpoint's name with -n/--name (or a file that names it)")
    if traffic is not None:
        changes["traffic"] = parse_traffic(traffic)
    if mirror_traffic is not None:
        changes["mirror_traffic"] = parse_traffic(mirror_traffic, "--mirror-traffic")
    if not changes:
        raise typer.BadParameter("nothing to update: give --file, --traffic, --mirror-traffic or --set")
    with connect() as client:
        endpoints = client.online_endpoints
        _require_local(endpoints.get(name), local)
        emit(endpoints.update(name, changes), output, query)


@online_endpoint_app.command("show")
def endpoint_show(
    name: NameOpt, local: LocalOpt = False, output: OutputOpt = OutputFormat.json, query: QueryOpt = None
) -> None:
    """Show an endpoint: scoring_uri, auth_mode, traffic, provisioning_state..."""
    with connect() as client:
        endpoint = client.online_endpoints.get(name)
    _require_local(endpoint, local)
    emit(endpoint, output, query)


@online_endpoint_app.command("list")
def endpoint_list(local: LocalOpt = False, output: OutputOpt = OutputFormat.json, query: QueryOpt = None) -> None:
    """List endpoints (only local ones with --local)."""
    with connect() as client:
        endpoints = client.online_endpoints.list()
    emit([e for e in endpoints if e.get("local") or not local], output, query)


@online_endpoint_app.command("delete")
def endpoint_delete(
    name: NameOpt, yes: YesOpt = False, local: LocalOpt = False, no_wait: InstantNoWaitOpt = False
) -> None:
    """Delete an endpoint and all its deployments."""
    with connect() as client:
        endpoints = client.online_endpoints
        _require_local(endpoints.get(name), local)
        confirm_delete(f"online endpoint '{name}' and all its deployments", yes)
        endpoints.delete(name)


@online_endpoint_app.command("invoke")
def endpoint_invoke(
    name: NameOpt,
    request_file: Annotated[Path, typer.Option("--request-file", "-r", help="File with the request body.")],
    deployment_name: DeploymentPinOpt = None,
    local: LocalOpt = False,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Send a request to the endpoint and print the response body."""
    with connect() as client:
        if local:
            _require_local(client.online_endpoints.get(name), local)
        text = client.online_endpoints.invoke(name, request_file, deployment_name=deployment_name)
    if query is None and output is OutputFormat.json:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")  # the body as the deployment sent it
        return
    try:
        value = json.loads(text)
    except ValueError:
        raise TiffinError("the response is not JSON, so --query and --output other than json cannot apply") from None
    emit(value, output, query)


@online_endpoint_app.command("get-credentials")
def endpoint_get_credentials(name: NameOpt, output: OutputOpt = OutputFormat.json, query: QueryOpt = None) -> None:
    """Print the endpoint's keys (primaryKey, secondaryKey) or a token (accessToken, expiryTimeUtc)."""
    with connect() as client:
        emit(client.online_endpoints.get_keys(name), output, query)


@online_endpoint_app.command("regenerate-keys")
def endpoint_regenerate_keys(
    name: NameOpt,
    key_type: Annotated[str, typer.Option("--key-type", help="primary or secondary.")] = "primary",
    no_wait: InstantNoWaitOpt = False,
) -> None:
    """Replace the primary or secondary key (token modes: revoke every token issued)."""
    with connect() as client:
        client.online_endpoints.regenerate_keys(name, key_type)


# --- online-deployment ---------------------------------------------------------------------------


def _deploy(
    spec: dict[str, Any] | OnlineDeployment, *, all_traffic: bool, no_wait: bool, local: bool, create: bool
) -> dict[str, Any]:
    """Send the deployment (after az's existence rule) and, unless ``no_wait``, wait with a spinner."""
    data = spec if isinstance(spec, dict) else spec.to_yaml_dict()
    name, endpoint = data["name"], data.get("endpoint_name")
    if not endpoint:
        raise TiffinError(f"say which endpoint deployment '{name}' belongs to: pass --endpoint-name E")
    with connect() as client:
        deployments = client.online_deployments
        _require_local(client.online_endpoints.get(endpoint), local)
        _check_exists(deployments, name, endpoint, create)
        if no_wait:
            return deployments.create_or_update(data, all_traffic=all_traffic, wait=False)
        with _Spinner(name, lambda: deployments.get_logs(name, endpoint, lines=_PROGRESS_LINES)) as spinner:
            return deployments.create_or_update(data, all_traffic=all_traffic, progress=spinner)


def _current_spec(name: str | None, endpoint: str | None, overrides: list[str] | None) -> dict[str, Any]:
    """The deployment's spec as the server has it, ``--set`` overrides applied (update without --file)."""
    if name is None or endpoint is None:
        raise typer.BadParameter("without --file, name the deployment with --name and --endpoint-name")
    with connect() as client:
        current = client.online_deployments.get(name, endpoint)
    from tiffin.specs import OnlineDeployment

    return changed_here(current, overrides, OnlineDeployment, f"deployment '{name}'")


def _check_exists(deployments: OnlineDeploymentOperations, name: str, endpoint: str, create: bool) -> None:
    """``create`` refuses an existing deployment and ``update`` a missing one, as az does."""
    try:
        deployments.get(name, endpoint)
    except NotFoundError:
        if not create:
            raise
        return
    if create:
        raise ConflictError(
            f"deployment '{name}' already exists on endpoint '{endpoint}'; change it with "
            f"`tiffin online-deployment update -f FILE -n {name} -e {endpoint}`"
        )


_PROGRESS_LINES = 20  # of the deployment's logs, read on each poll while it is being created


class _Spinner:
    """The waiting deployment's state: a spinner on a terminal, one line per change otherwise (logs).

    While the deployment is not ready yet, its logs' last line (its environment's build, then its replica's
    start) follows the state on the spinner's line; off a terminal, tiffin's own lines of the environment step
    (``[tiffin] building environment ...``, ``built ... in 12.3 s``) are printed once each.
    """

    def __init__(self, name: str, logs: Callable[[], str] | None = None) -> None:
        self.name = name
        self.state: str | None = None
        self.line = f"deployment '{name}': starting"
        self.status = err.status(self.line)
        self._logs = logs
        self._said: set[str] = set()

    def __enter__(self) -> _Spinner:
        if err.is_terminal:
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.status.stop()
        if err.is_terminal:  # the spinner vanishes when stopped; leave the last state on screen
            err.print(self.line, highlight=False)

    def __call__(self, deployment: dict[str, Any]) -> None:
        state = deployment.get("provisioning_state")
        changed = state != self.state
        self.state = state
        self.line = f"deployment '{self.name}' on endpoint '{deployment.get('endpoint_name')}': {state}"
        latest = self._latest_log_lines() if state in ("Creating", "Updating") else []
        if err.is_terminal:
            detail = latest[-1].strip() if latest else ""
            self.status.update(f"{self.line}  {detail[:100]}" if detail else self.line)
            return
        if changed:
            err.print(self.line, highlight=False)
        for line in latest:
            if line.startswith("[tiffin] ") and line not in self._said:
                self._said.add(line)
                err.print(f"  {line}", highlight=False, markup=False)

    def _latest_log_lines(self) -> list[str]:
        if self._logs is None:
            return []
        try:
            return [line for line in self._logs().splitlines() if line.strip()]
        except TiffinError:  # no log yet, or the server is busy: the state line alone will do
            return []


@online_deployment_app.command("create")
def deployment_create(
    file: FileOpt,
    name: OptionalNameOpt = None,
    endpoint_name: OptionalEndpointOpt = None,
    all_traffic: AllTrafficOpt = False,
    no_wait: NoWaitOpt = False,
    local: LocalOpt = False,
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Create a deployment and wait until it is ready (exit 1 with the reason if it fails)."""
    from tiffin.specs import OnlineDeployment

    spec = load_with_flags(OnlineDeployment, file, set_, name=name, endpoint_name=endpoint_name).spec
    emit(_deploy(spec, all_traffic=all_traffic, no_wait=no_wait, local=local, create=True), output, query)


@online_deployment_app.command("update")
def deployment_update(
    file: OptionalFileOpt = None,
    name: OptionalNameOpt = None,
    endpoint_name: OptionalEndpointOpt = None,
    all_traffic: AllTrafficOpt = False,
    no_wait: NoWaitOpt = False,
    local: LocalOpt = False,
    set_: SetOpt = None,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Replace a deployment's spec (from --file, or its current one with --set changes) and wait until ready."""
    if file is None:
        spec: dict[str, Any] | OnlineDeployment = _current_spec(name, endpoint_name, set_)
    else:
        from tiffin.specs import OnlineDeployment

        spec = load_with_flags(OnlineDeployment, file, set_, name=name, endpoint_name=endpoint_name).spec
    emit(_deploy(spec, all_traffic=all_traffic, no_wait=no_wait, local=local, create=False), output, query)


@online_deployment_app.command("show")
def deployment_show(
    name: DeploymentNameOpt,
    endpoint_name: EndpointOpt,
    local: LocalOpt = False,
    output: OutputOpt = OutputFormat.json,
    query: QueryOpt = None,
) -> None:
    """Show a deployment and its provisioning_state."""
    with connect() as client:
        if local:
            _require_local(client.online_endpoints.get(endpoint_name), local)
        emit(client.online_deployments.get(name, endpoint_name), output, query)


@online_deployment_app.command("list")
def deployment_list(
    endpoint_name: EndpointOpt, local: LocalOpt = False, output: OutputOpt = OutputFormat.json, query: QueryOpt = None
) -> None:
    """List an endpoint's deployments."""
    with connect() as client:
        if local:
            _require_local(client.online_endpoints.get(endpoint_name), local)
        emit(client.online_deployments.list(endpoint_name), output, query)


@online_deployment_app.command("delete")
def deployment_delete(
    name: DeploymentNameOpt,
    endpoint_name: EndpointOpt,
    yes: YesOpt = False,
    local: LocalOpt = False,
    no_wait: InstantNoWaitOpt = False,
) -> None:
    """Delete a deployment (move its traffic elsewhere first)."""
    with connect() as client:
        if local:
            _require_local(client.online_endpoints.get(endpoint_name), local)
        client.online_deployments.get(name, endpoint_name)  # a missing one is reported before the prompt
        confirm_delete(f"deployment '{name}' of endpoint '{endpoint_name}'", yes)
        client.online_deployments.delete(name, endpoint_name)
