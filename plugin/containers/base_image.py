"""tiffin's base image, built here from Debian's packages: no image registry needs to be reachable.

``mmdebstrap`` makes a minimal Debian root file system (Python, venv, pip, CA certificates), the host's extra CA
certificates are added (a TLS-intercepting proxy's, so ``pip`` and ``uv`` inside reach PyPI) and a non-root user
``tiffin`` (uid 1000) is created; the tarball is imported into the engine as ``tiffin/base:DIGEST``, where DIGEST is
a digest of the recipe (:data:`RECIPE` and the certificates), and kept under ``~/.cache/tiffin/images/`` so that a
second machine state (a CI run with the cache restored, a new engine) imports it in seconds instead of building
it again (minutes).

build-essential and git are not included: tiffin's own image recipe (:mod:`tiffin.containers.image`) installs
wheels only; BentoML's template installs them itself when it needs them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tiffin.containers.engine import IMAGE_LABEL, ContainerEngineError, Engine

__all__ = ["BASE_PYTHON", "RECIPE", "base_image_tag", "cache_dir", "ensure_base_image"]

SUITE = "bookworm"
BASE_PYTHON = "3.11"
"""Debian bookworm's python3: the interpreter minor of every image built on this base."""
RECIPE: dict[str, object] = {
    "suite": SUITE,
    "variant": "minbase",
    "include": ["python3", "python3-venv", "python3-pip", "ca-certificates"],
    "user": {"name": "tiffin", "uid": 1000},
    "format": 1,
}
_HOST_CERTS = Path("/usr/local/share/ca-certificates")


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tiffin/images`` (``~/.cache/tiffin/images``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "tiffin" / "images"


def _host_certificates() -> list[Path]:
    return sorted(_HOST_CERTS.glob("*.crt")) if _HOST_CERTS.is_dir() else []


_IMPORT_CHANGES = (
    f"LABEL {IMAGE_LABEL}=base",
    "ENV LANG=C.UTF-8 SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt UV_NATIVE_TLS=1",
    'CMD ["python3"]',
)
"""What `docker import` adds to the root file system: part of the image's tag, not of the tarball's name."""


def _rootfs_digest() -> str:
    digest = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode())
    for cert in _host_certificates():
        digest.update(cert.name.encode() + b"\0" + cert.read_bytes())
    return digest.hexdigest()[:16]


def base_image_tag() -> str:
    """``tiffin/base:DIGEST``: 16 hex digits of the sha256 of the recipe, the host certificates and the import's
    changes."""
    digest = hashlib.sha256((_rootfs_digest() + json.dumps(_IMPORT_CHANGES)).encode())
    return f"tiffin/base:{digest.hexdigest()[:16]}"


def ensure_base_image(engine: Engine, *, timeout: float = 900.0) -> str:
    """The base image's tag, present in ``engine``: there already, imported from the cache, or built now."""
    tag = base_image_tag()
    if engine.image_exists(tag):
        return tag
    tarball = cache_dir() / f"base-{_rootfs_digest()}.tar"
    if not tarball.is_file():
        _build_rootfs(tarball, timeout=timeout)
    changes = [arg for change in _IMPORT_CHANGES for arg in ("--change", change)]
    with tarball.open("rb") as stream:
        # `docker import -` reads the tarball from stdin.
        engine.run(["import", *changes, "-", tag], input=stream.read(), timeout=300)
    return tag


def _build_rootfs(tarball: Path, *, timeout: float) -> None:
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise ContainerEngineError(
            "building tiffin's base image needs mmdebstrap: apt-get install mmdebstrap (tests/install-test-services.sh "
            "does) and run again"
        )
    tarball.parent.mkdir(parents=True, exist_ok=True)
    user = RECIPE["user"]
    assert isinstance(user, dict)
    certs = _host_certificates()
    hooks = []
    if certs:
        hooks += ["--customize-hook", f"copy-in {' '.join(str(c) for c in certs)} /usr/local/share/ca-certificates/"]
    hooks += [
        "--customize-hook",
        'chroot "$1" update-ca-certificates',
        "--customize-hook",
        f'chroot "$1" useradd --uid {user["uid"]} --create-home --shell /bin/sh {user["name"]}',
        # apt's lists and caches are of no use in an image that never runs apt: smaller image, faster import.
        "--customize-hook",
        'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/usr/share/doc/* "$1"/usr/share/man/*',
    ]
    partial = Path(tempfile.mkdtemp(prefix=".base-", dir=tarball.parent)) / "rootfs.tar"
    include = RECIPE["include"]
    assert isinstance(include, list)
    command = [
        mmdebstrap,
        "--quiet",
        f"--variant={RECIPE['variant']}",
        f"--include={','.join(include)}",
        *hooks,
        SUITE,
        str(partial),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise ContainerEngineError(
                f"mmdebstrap could not build tiffin's base image (exit {done.returncode}): {tail}"
            )
        os.replace(partial, tarball)
    except subprocess.TimeoutExpired as exc:
        raise ContainerEngineError(
            f"mmdebstrap did not finish in {timeout:.0f} s; is Debian's mirror reachable?"
        ) from exc
    finally:
        shutil.rmtree(partial.parent, ignore_errors=True)
