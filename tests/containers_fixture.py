"""A real container engine for the tests: ``container_engine`` (Docker or Podman, dockerd started if need be) and
``base_image`` (tiffin's base image in it, built with mmdebstrap or imported from ``~/.cache/tiffin/images``).

conftest.py imports both, so any test module can ask for them. They skip, with the reason, where no engine can be
had: no client or daemon installed (tests/install-test-services.sh installs docker.io and mmdebstrap as root with
apt-get), not root (dockerd needs it), or ``TIFFIN_CONTAINER_ENGINE=none``. A dockerd the fixture started is
stopped at the session's end; one that was running is left alone. Its log is
``~/.cache/tiffin/dockerd.log``; its data root is Docker's default (``/var/lib/docker``), so images stay between
runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiffin.containers.base_image import ensure_base_image
from tiffin.containers.engine import ENGINE_ENV, ContainerEngineError, Engine, detect

__all__ = ["base_image", "container_engine", "start_dockerd"]


def start_dockerd(timeout: float = 60.0) -> subprocess.Popen[bytes]:
    """Start ``dockerd`` with its default flags and wait until the client answers; the process. ``pytest.skip``
    where it cannot start."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        pytest.skip("no container engine: dockerd is not installed (tests/install-test-services.sh installs docker.io)")
    if os.geteuid() != 0:
        pytest.skip("no container engine answers and dockerd needs root to start")
    log = Path.home() / ".cache" / "tiffin" / "dockerd.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        process = subprocess.Popen([dockerd], stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if detect({**os.environ, ENGINE_ENV: "docker"}, require=False) is not None:
            return process
        if process.poll() is not None:
            pytest.skip(f"dockerd exited with {process.returncode} at start; see {log}")
        time.sleep(0.2)
    process.terminate()
    pytest.skip(f"dockerd did not answer within {timeout:.0f} s; see {log}")


@pytest.fixture(scope="session")
def container_engine() -> Iterator[Engine]:
    if os.environ.get(ENGINE_ENV, "").strip().lower() == "none":
        pytest.skip(f"{ENGINE_ENV}=none: the container tests are switched off")
    engine = detect(require=False)
    started = None
    if engine is None:
        started = start_dockerd()
        engine = detect(require=True)
    assert engine is not None
    try:
        yield engine
    finally:
        # Each test removes the containers it started (and checks it did). Nothing is swept here by label: other
        # test sessions (other checkouts, other helpers) may share this engine, and their containers and image
        # builds carry tiffin's labels too.
        if started is not None:
            started.send_signal(signal.SIGTERM)
            try:
                started.wait(30)
            except subprocess.TimeoutExpired:
                started.kill()


@pytest.fixture(scope="session")
def base_image(container_engine: Engine) -> str:
    try:
        return ensure_base_image(container_engine)
    except ContainerEngineError as exc:
        if "mmdebstrap" in str(exc):
            pytest.skip(str(exc))
        raise
