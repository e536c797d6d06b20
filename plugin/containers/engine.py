"""The container engine tiffin talks to: Docker or Podman, through its command-line client.

Detection, in order: ``TIFFIN_CONTAINER_ENGINE`` (``docker``, ``podman`` or ``none``) when set; else Debian's
``/usr/bin/docker`` (its BuildKit-less classic builder works offline, where a newer client without buildx in
``/usr/local/bin`` fails to build), then any ``docker`` on ``PATH``, then ``podman``. An engine counts only when
its daemon answers (``docker version``). Commands run as subprocesses with timeouts, and their failures become
:class:`ContainerEngineError` whose message says what to do next.

Containers tiffin starts carry :data:`MANAGED_LABEL` and images it builds :data:`IMAGE_LABEL`; both carry
:data:`HOME_LABEL` (a digest of the tiffin home that made them), so a later start can find and remove what a
killed one left.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tiffin.errors import TiffinError

__all__ = [
    "ENGINE_ENV",
    "HOME_LABEL",
    "IMAGE_LABEL",
    "MANAGED_LABEL",
    "ContainerEngineError",
    "Engine",
    "detect",
    "home_digest",
]

ENGINE_ENV = "TIFFIN_CONTAINER_ENGINE"
MANAGED_LABEL = "ai.tiffin.managed"
"""``true`` on every container tiffin starts (:meth:`Engine.start` adds it). Not on images: a container inherits its
image's labels, and the engine's own build containers must not look like tiffin's to a clean-up."""
IMAGE_LABEL = "ai.tiffin.image"
"""On every image tiffin makes: ``base`` (:mod:`tiffin.containers.base_image`) or ``deployment``."""
HOME_LABEL = "ai.tiffin.home"
"""A digest of the tiffin home (:func:`home_digest`): whose containers they are, without naming the path."""

NO_ENGINE = (
    "no container engine answers: install docker.io and start dockerd (or install podman), "
    f"or set {ENGINE_ENV}=docker|podman to name the one to use"
)


class ContainerEngineError(TiffinError):
    """The engine is missing, does not answer, or a command of it failed; the message says which and why."""

    status_code = 503


def home_digest(home: Path) -> str:
    """The value of :data:`HOME_LABEL` for the tiffin home ``home``: 16 hex digits of its path's sha256."""
    return hashlib.sha256(str(Path(home).resolve()).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Engine:
    """A container engine's client: ``kind`` is ``docker`` or ``podman``, ``client`` the program run."""

    kind: str
    client: str
    environ: Mapping[str, str] = field(default_factory=dict)
    """Added to the client's environment (``DOCKER_BUILDKIT=0``: the classic builder, which needs no buildx)."""

    def run(
        self,
        args: Sequence[str],
        *,
        timeout: float = 120.0,
        check: bool = True,
        input: bytes | None = None,
        stdout: int | None = subprocess.PIPE,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``client ARGS``; :class:`ContainerEngineError` (with the command's last error lines) when it fails
        and ``check``, or when it runs past ``timeout`` seconds."""
        command = [self.client, *args]
        try:
            done = subprocess.run(
                command,
                input=input,
                stdout=stdout,
                stderr=subprocess.PIPE,
                timeout=timeout,
                env={**os.environ, **self.environ},
            )
        except subprocess.TimeoutExpired as exc:
            raise ContainerEngineError(
                f"`{self.kind} {' '.join(args[:2])}` did not finish in {timeout:.0f} s; is the engine overloaded? "
                f"see `{self.kind} ps` and the engine's log"
            ) from exc
        except OSError as exc:
            raise ContainerEngineError(f"cannot run {self.client}: {exc}; {NO_ENGINE}") from exc
        if check and done.returncode != 0:
            tail = "\n".join((done.stderr or b"").decode(errors="replace").strip().splitlines()[-15:])
            raise ContainerEngineError(f"`{self.kind} {' '.join(args[:2])}` failed (exit {done.returncode}): {tail}")
        return done

    def answers(self, timeout: float = 10.0) -> bool:
        """Whether the engine's daemon (or Podman's service) answers."""
        try:
            done = self.run(["version", "--format", "{{.Server.Version}}"], timeout=timeout, check=False)
            return done.returncode == 0
        except ContainerEngineError:
            return False

    def image_exists(self, reference: str) -> bool:
        return self.run(["image", "inspect", reference], check=False, timeout=30).returncode == 0

    def image_size(self, reference: str) -> int:
        """The image's size in bytes."""
        done = self.run(["image", "inspect", "--format", "{{.Size}}", reference], timeout=30)
        return int(done.stdout.decode().strip() or 0)

    def inspect(self, reference: str) -> dict[str, object]:
        """``inspect`` of one container or image, as JSON."""
        done = self.run(["inspect", reference], timeout=30)
        found = json.loads(done.stdout.decode() or "[]")
        if not found:
            raise ContainerEngineError(f"{self.kind} knows no {reference!r}")
        return found[0]

    def containers(self, labels: Mapping[str, str]) -> list[str]:
        """The ids of the containers (running or not) carrying all of ``labels``."""
        filters = [arg for key, value in labels.items() for arg in ("--filter", f"label={key}={value}")]
        done = self.run(["ps", "-aq", "--no-trunc", *filters], timeout=30)
        return done.stdout.decode().split()

    def start(
        self,
        image: str,
        *,
        labels: Mapping[str, str],
        publish: Mapping[int, int] = {},
        environment: Mapping[str, str] = {},
        name: str | None = None,
        args: Sequence[str] = (),
    ) -> str:
        """Start a detached container of ``image``; its id. ``publish`` maps container ports to host ports, which
        are bound on loopback only; ``labels`` always get :data:`MANAGED_LABEL` added, so a clean-up finds it."""
        command = ["run", "--detach"]
        for key, value in {MANAGED_LABEL: "true", **labels}.items():
            command += ["--label", f"{key}={value}"]
        for container_port, host_port in publish.items():
            command += ["--publish", f"127.0.0.1:{host_port}:{container_port}"]
        for key, value in environment.items():
            command += ["--env", f"{key}={value}"]
        if name:
            command += ["--name", name]
        done = self.run([*command, image, *args], timeout=120)
        return done.stdout.decode().strip()

    def stop(self, container: str, *, grace: float = 10.0) -> int | None:
        """SIGTERM the container, SIGKILL after ``grace`` seconds, and remove it; its exit code (None if gone)."""
        self.run(["stop", "--time", str(max(1, round(grace))), container], timeout=grace + 60, check=False)
        done = self.run(["inspect", "--format", "{{.State.ExitCode}}", container], timeout=30, check=False)
        self.run(["rm", "--force", container], timeout=60, check=False)
        text = done.stdout.decode().strip() if done.returncode == 0 else ""
        return int(text) if text.lstrip("-").isdigit() else None

    def logs(self, container: str, *, tail: int = 200) -> str:
        """The container's last ``tail`` lines of output (stdout and stderr)."""
        done = self.run(["logs", "--tail", str(tail), container], timeout=30, check=False, stdout=subprocess.PIPE)
        return (done.stdout + done.stderr).decode(errors="replace")

    def remove_images(self, labels: Mapping[str, str]) -> list[str]:
        """Remove the images carrying all of ``labels`` (their containers first); their ids."""
        filters = [arg for key, value in labels.items() for arg in ("--filter", f"label={key}={value}")]
        ids = sorted(set(self.run(["images", "-q", "--no-trunc", *filters], timeout=30).stdout.decode().split()))
        if ids:
            self.run(["rmi", "--force", *ids], timeout=120)
        return ids

    def remove_containers(self, labels: Mapping[str, str]) -> list[str]:
        """Remove (killing first) every container carrying all of ``labels``; their ids."""
        ids = self.containers(labels)
        if ids:
            self.run(["rm", "-f", *ids], timeout=60)
        return ids


def _candidates(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    wanted = environ.get(ENGINE_ENV, "").strip().lower()
    if wanted == "none":
        return []
    if wanted not in ("", "docker", "podman"):
        raise ContainerEngineError(f"{ENGINE_ENV}={wanted!r} is not one of docker, podman, none")
    found: list[tuple[str, str]] = []
    if wanted in ("", "docker"):
        # Debian's client first: a newer one in /usr/local/bin without buildx fails every BuildKit build.
        for client in ("/usr/bin/docker", shutil.which("docker", path=environ.get("PATH"))):
            if client and os.access(client, os.X_OK) and ("docker", client) not in found:
                found.append(("docker", client))
    if wanted in ("", "podman"):
        client = shutil.which("podman", path=environ.get("PATH"))
        if client:
            found.append(("podman", client))
    return found


def detect(environ: Mapping[str, str] = os.environ, *, require: bool = True) -> Engine | None:
    """The first engine that answers (see the module's doc for the order); None, or :class:`ContainerEngineError`
    when ``require``, if none does."""
    if environ.get(ENGINE_ENV, "").strip().lower() == "none":
        if require:
            raise ContainerEngineError(f"{ENGINE_ENV}=none: container engines are switched off; unset it to use one")
        return None
    for kind, client in _candidates(environ):
        engine = Engine(kind, client, {"DOCKER_BUILDKIT": "0"} if kind == "docker" else {})
        if engine.answers():
            return engine
    if require:
        raise ContainerEngineError(NO_ENGINE)
    return None
