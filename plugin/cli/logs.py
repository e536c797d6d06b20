"""``get-logs`` of ``tiffin online-deployment`` and ``tiffin online-endpoint``, as ``az ml online-deployment get-logs``.

``--container inference-server`` is a replica's console log (the scoring code's stdout, stderr and ``logging``,
``init()`` included, each line stamped with its time and instance id), ``--container storage-initializer`` what
prepared the deployment (model, code, environment build); without ``--container`` both, that one first.
``--follow`` prints the console log's new lines as they come, until Ctrl-C.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tiffin.cli.options import DeploymentNameOpt, EndpointOpt, NameOpt
from tiffin.cli.shared import connect
from tiffin.errors import BadRequestError, NotFoundError, TiffinError

if TYPE_CHECKING:
    from tiffin.sdk import TiffinClient

__all__ = ["register"]

LinesOpt = Annotated[
    int, typer.Option("--lines", "-l", min=1, max=10_000, help="How many log lines, from the end (at most 10000).")
]
InstanceOpt = Annotated[
    str | None,
    typer.Option(
        "--instance-id",
        "-i",
        "--instance",
        help="Which replica: its instance id (DEPLOYMENT-N, as log lines show it) or its number N (default 0).",
    ),
]
ContainerOpt = Annotated[
    str | None,
    typer.Option(
        "--container",
        "-c",
        help="inference-server (the replica's console) or storage-initializer (model, code, environment build); "
        "default: both.",
    ),
]
FollowOpt = Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new console lines until Ctrl-C.")]
LocalOpt = Annotated[
    bool,
    typer.Option("--local", help="A local endpoint (Azure's semantics: no auth, one deployment taking all traffic)."),
]

_CONTAINERS = ("inference-server", "storage-initializer")


def instance_number(instance: str | None, deployment: str) -> int:
    """``blue-2``, ``2`` or None (0) as the replica number 2; a BadRequestError naming both forms otherwise."""
    if instance is None:
        return 0
    number = instance.removeprefix(f"{deployment}-")
    if not number.isdigit():
        raise BadRequestError(
            f"--instance-id {instance!r} names no replica of deployment '{deployment}': give {deployment}-N or N "
            "(the instance ids are in the log lines and in `tiffin online-deployment show`)"
        )
    return int(number)


def _print_logs(
    client: TiffinClient,
    name: str,
    endpoint: str,
    *,
    lines: int,
    instance: str | None,
    container: str | None,
    follow: bool,
) -> None:
    if container is not None and container not in _CONTAINERS:
        raise BadRequestError(f"--container must be {' or '.join(_CONTAINERS)}, not {container!r}")
    number = instance_number(instance, name)
    deployments = client.online_deployments
    if not follow:
        sys.stdout.write(deployments.get_logs(name, endpoint, lines=lines, instance=number, container=container))
        return
    if container == "storage-initializer":
        raise BadRequestError("--follow follows the inference-server container (a replica's console log) only")
    try:
        for text in deployments.follow_logs(name, endpoint, instance=number):
            sys.stdout.write(text)
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass


def _require_local(endpoint: dict[str, Any], local: bool) -> None:
    # With --local, az looks among local endpoints only; an endpoint that is not local is not there.
    if local and not endpoint.get("local"):
        raise NotFoundError(
            f"online endpoint '{endpoint['name']}' is not a local endpoint; drop --local, or create a local one with "
            "`tiffin online-endpoint create --local -n NAME`"
        )


def register(endpoint_app: typer.Typer, deployment_app: typer.Typer) -> None:
    """Add ``get-logs`` to the ``online-endpoint`` and ``online-deployment`` groups."""

    @endpoint_app.command("get-logs")
    def endpoint_get_logs(
        name: NameOpt,
        deployment_name: Annotated[
            str | None, typer.Option("--deployment-name", "-d", help="Whose logs (default: the only deployment).")
        ] = None,
        lines: LinesOpt = 100,
        container: ContainerOpt = None,
        instance: InstanceOpt = None,
        follow: FollowOpt = False,
        local: LocalOpt = False,
    ) -> None:
        """Print the last lines of a deployment's logs (shorthand for online-deployment get-logs)."""
        with connect() as client:
            _require_local(client.online_endpoints.get(name), local)
            if deployment_name is None:
                names = [d["name"] for d in client.online_deployments.list(name)]
                if len(names) != 1:
                    raise TiffinError(
                        f"endpoint '{name}' has {len(names)} deployments ({', '.join(names) or 'none'}); "
                        "say whose log with --deployment-name"
                    )
                deployment_name = names[0]
            _print_logs(
                client, deployment_name, name, lines=lines, instance=instance, container=container, follow=follow
            )

    @deployment_app.command("get-logs")
    def deployment_get_logs(
        name: DeploymentNameOpt,
        endpoint_name: EndpointOpt,
        lines: LinesOpt = 100,
        container: ContainerOpt = None,
        instance: InstanceOpt = None,
        follow: FollowOpt = False,
        local: LocalOpt = False,
    ) -> None:
        """Print the last lines of a deployment's logs: a replica's console (inference-server), what prepared
        it (storage-initializer), or both; --follow keeps printing the console's new lines."""
        with connect() as client:
            if local:
                _require_local(client.online_endpoints.get(endpoint_name), local)
            _print_logs(client, name, endpoint_name, lines=lines, instance=instance, container=container, follow=follow)
