"""``tiffin export kubernetes``: an online endpoint as Kubernetes manifests (docs/kubernetes.md).

The endpoint, its deployments and (with ``--include-keys``) its keys are read from ``tiffin serve`` through the
SDK; :func:`tiffin.containers.kubernetes.endpoint_manifests` turns them into manifests; this module writes them
to stdout or to files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from tiffin.cli.options import NameOpt, OutputOpt, err, warn
from tiffin.cli.output import OutputFormat, emit
from tiffin.cli.shared import connect

__all__ = ["export_app"]

export_app = typer.Typer(help="Write what tiffin serves in another system's format (Kubernetes).", no_args_is_help=True)


@export_app.command("kubernetes")
def kubernetes(
    name: NameOpt,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", help="Write one file per manifest here (Secrets 0600) instead of to stdout."),
    ] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", help="Namespace of every manifest.")] = None,
    image_registry: Annotated[
        str | None,
        typer.Option(
            "--image-registry", help="Where you pushed the deployments' images, e.g. ghcr.io/my-org or host:5000/ml."
        ),
    ] = None,
    image_tag: Annotated[str | None, typer.Option("--image-tag", help="Tag of the images (default latest).")] = None,
    server_image: Annotated[
        str | None,
        typer.Option("--server-image", help="Image running `tiffin serve` (default REGISTRY/tiffin-server:TAG)."),
    ] = None,
    store_secret: Annotated[
        str | None,
        typer.Option(
            "--store-secret",
            help="Name of a Secret you made with TIFFIN_STORE_URL, TIFFIN_SECRET_KEY and TIFFIN_ADMIN_TOKEN; "
            "without it a 'tiffin-store' Secret with placeholders is written.",
        ),
    ] = None,
    include_keys: Annotated[
        bool,
        typer.Option(
            "--include-keys",
            help="Put the endpoint's real keys in its keys Secret (default: placeholders to fill in).",
        ),
    ] = False,
    gateway_replicas: Annotated[
        int, typer.Option("--gateway-replicas", min=1, help="Pods running tiffin serve (nodes sharing the store).")
    ] = 1,
    output: OutputOpt = OutputFormat.yaml,
) -> None:
    """Kubernetes manifests for an online endpoint: per deployment a Deployment (its image), a Service and, with
    target_utilization scale settings, a HorizontalPodAutoscaler; the gateway (tiffin serve on PostgreSQL); the
    endpoint's keys in a Secret. Without --output-dir they go to stdout (-o yaml, or -o json as a v1 List), ready
    for `kubectl apply -f -`."""
    from tiffin.containers.kubernetes import ExportOptions, endpoint_manifests, to_yaml

    if output_dir is None and output not in (OutputFormat.yaml, OutputFormat.json):
        raise typer.BadParameter("manifests are written as yaml or json", param_hint="--output")
    options = ExportOptions(
        namespace=namespace,
        image_registry=image_registry,
        image_tag=image_tag,
        server_image=server_image,
        store_secret=store_secret,
        include_keys=include_keys,
        gateway_replicas=gateway_replicas,
    )
    with connect() as client:
        endpoint = client.online_endpoints.get(name)
        deployments = client.online_deployments.list(name)
        keys = client.online_endpoints.get_keys(name) if include_keys and endpoint.get("auth_mode") == "key" else None
    manifests = endpoint_manifests(endpoint, deployments, keys, options)
    for line in manifests.warnings:
        warn(line)
    if output_dir is None:
        if output is OutputFormat.json:
            document: Any = {"apiVersion": "v1", "kind": "List", "items": manifests.items}
            typer.echo(json.dumps(document, indent=2))
        else:
            typer.echo(to_yaml(manifests.items), nl=False)
        return
    written = _write(output_dir, manifests.items, to_yaml)
    err.print(f"wrote {len(written)} manifests to {output_dir}; apply them with `kubectl apply -f {output_dir}`")
    emit({"output_dir": str(output_dir), "files": written, "warnings": manifests.warnings}, output)


def _write(folder: Path, items: list[dict[str, Any]], to_yaml: Any) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for number, item in enumerate(items, start=1):
        # Numbered in apply order (Secrets before the pods that read them); kubectl applies a folder by name.
        path = folder / f"{number:02d}-{item['kind'].lower()}-{item['metadata']['name']}.yaml"
        # Every file private: the Secrets may hold keys, and the rest are no one else's business either.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(to_yaml([item]))
        os.chmod(path, 0o600)  # an older file of the same name keeps its mode through O_TRUNC
        written.append(str(path))
    return written
