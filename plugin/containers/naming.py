"""Names of the OCI images tiffin builds, one per deployment (pure: no I/O).

``tiffin containerize``/``online-deployment package`` (:mod:`tiffin.containers.engine`) tag the image of a
deployment with :func:`image_reference`, and ``tiffin export kubernetes`` (:mod:`tiffin.containers.kubernetes`)
writes the same reference into its manifests, so an image pushed as built is the one the cluster pulls::

    image_reference("my-endpoint", "blue")                    -> "tiffin-my-endpoint-blue:latest"
    image_reference("my-endpoint", "blue", "1", "ghcr.io/me") -> "ghcr.io/me/tiffin-my-endpoint-blue:1"

Endpoint and deployment names are Azure names (letters, digits, ``-``; a deployment's also ``_``), so the
repository part is their lower-cased join (Docker's reference grammar allows lower-case letters, digits and the
separators ``-``, ``_``, ``__`` and ``.`` only).
"""

from __future__ import annotations

import re

from tiffin.errors import SpecError

__all__ = [
    "CONTAINER_PORT",
    "DEFAULT_TAG",
    "IMAGE_PREFIX",
    "SERVER_IMAGE",
    "image_reference",
    "image_repository",
    "server_image_reference",
]

IMAGE_PREFIX = "tiffin"
DEFAULT_TAG = "latest"
CONTAINER_PORT = 5001
"""The port a deployment's image serves Azure's contract on (``GET /``, ``/score``): azmlinfsrv's, which Azure's
own inference images listen on."""
SERVER_IMAGE = "tiffin-server"
"""The repository of an image running ``tiffin serve`` itself (the gateway and control plane in a cluster)."""

# Docker's reference grammar (distribution/reference): a tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; a registry
# is a host[:port] with an optional path of lower-case components.
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]+)?")


def _component(name: str) -> str:
    # Lower case; '-', '_' and '__' may join letters and digits, never start or end a component. '_' is kept, so
    # deployments 'b_1' and 'b-1' (both valid names) get images of their own.
    part = re.sub(r"[^a-z0-9_-]+", "-", name.lower())
    part = re.sub(r"_{3,}", "__", re.sub(r"[-_]*-[-_]*", lambda m: "-" * len(m.group()), part))
    return part.strip("-_")


def _registry(registry: str) -> str:
    registry = registry.strip().rstrip("/")
    host, _, path = registry.partition("/")
    if not _HOST.fullmatch(host) or (path and not all(_COMPONENT.fullmatch(part) for part in path.split("/"))):
        raise SpecError(
            f"image registry {registry!r} is not a registry reference: give HOST[:PORT][/PATH] with a lower-case "
            "path, e.g. ghcr.io/my-org or registry.example.com:5000/ml"
        )
    return registry


def _tag(tag: str | None) -> str:
    tag = tag or DEFAULT_TAG
    if not _TAG.fullmatch(tag):
        raise SpecError(
            f"image tag {tag!r} is not a valid tag: letters, digits, '_', '.' and '-', at most 128, not starting "
            "with '.' or '-'"
        )
    return tag


def image_repository(endpoint: str, deployment: str, registry: str | None = None) -> str:
    """``{registry/}tiffin-{endpoint}-{deployment}``: where the deployment's image lives, without its tag."""
    repository = "-".join(part for part in (IMAGE_PREFIX, _component(endpoint), _component(deployment)) if part)
    return f"{_registry(registry)}/{repository}" if registry else repository


def image_reference(endpoint: str, deployment: str, tag: str | None = None, registry: str | None = None) -> str:
    """``{registry/}tiffin-{endpoint}-{deployment}:{tag}`` (tag ``latest`` unless given)."""
    return f"{image_repository(endpoint, deployment, registry)}:{_tag(tag)}"


def server_image_reference(tag: str | None = None, registry: str | None = None) -> str:
    """``{registry/}tiffin-server:{tag}``: the image that runs ``tiffin serve`` (``pip install 'tiffin[postgres]'``)."""
    repository = f"{_registry(registry)}/{SERVER_IMAGE}" if registry else SERVER_IMAGE
    return f"{repository}:{_tag(tag)}"
