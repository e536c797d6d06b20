"""Bring your own container (or command): a user's HTTP server behind a tiffin deployment.

Azure's custom-container deployments name an ``environment.image`` and its routes in
``environment.inference_config`` (``liveness_route``, ``readiness_route``, ``scoring_route``, each with a
``path`` and a container ``port``). tiffin runs the server as a command where no container engine exists
(``environment.command``, tiffin's addition) or the image where one does, on a port it picks; the server
finds it in ``$PORT`` (also ``$AML_APP_PORT`` and ``$AZUREML_INFERENCE_PORT``), and ``$AZUREML_MODEL_DIR``
points at the model laid out as for scoring scripts. The replica waits for the readiness route, and
forwards ``/score`` to the scoring route (other paths as they are) over pooled keep-alive connections.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import string
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tiffin.errors import RunnerError, RunnerLoadError, UnavailableError
from tiffin.runners.protocol import RunnerSchema, ScoreRequest, ScoreResponse

__all__ = ["ByocRunner", "ByocRunnerConfig"]

logger = logging.getLogger("tiffin.runners.byoc")

_HOP_BY_HOP = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"te"})


@dataclass(frozen=True)
class ByocRunnerConfig:
    """The server to run and its routes."""

    command: Sequence[str] | None = None
    image: str | None = None
    scoring_path: str = "/score"
    readiness_path: str = "/"
    liveness_path: str | None = None
    container_port: int | None = None
    """The port an image listens on inside its container (``scoring_route.port``)."""
    model_dir: Path | None = None
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    start_timeout_s: float = 300.0


class ByocRunner:
    """A :class:`~tiffin.runners.Runner` forwarding to a user's HTTP server it starts and stops."""

    score_paths = ("/score",)
    passthrough = True
    """Paths other than ``/`` (health), ``/score`` and ``/swagger.json`` go to the server as they are."""

    def __init__(self, config: ByocRunnerConfig) -> None:
        self.config = config
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._pool = None

    # --- lifecycle -----------------------------------------------------------------------------------

    def load(self) -> None:
        """Start the server and wait until its readiness route answers 2xx."""
        from tiffin.testing import free_port

        self.port = free_port()
        command = self._command(self.port)
        env = {
            **os.environ,
            **self.config.environment_variables,
            "PORT": str(self.port),
            "AML_APP_PORT": str(self.port),
            "AZUREML_INFERENCE_PORT": str(self.port),
        }
        if self.config.model_dir is not None:
            env["AZUREML_MODEL_DIR"] = env["TIFFIN_MODEL_DIR"] = str(self.config.model_dir)
        # $PORT and the deployment's variables are expanded here, so commands work without a shell.
        argv = [string.Template(part).safe_substitute(env) for part in command]
        logger.info("starting the deployment's server: %s", shlex.join(argv))
        try:
            # Its output joins the replica's log; it stays in the replica's process group, so the
            # supervisor stopping the replica (a signal to the group) stops the server too.
            self._process = subprocess.Popen(argv, env=env)
        except OSError as exc:
            raise RunnerLoadError(
                f"cannot start {argv[0]!r}: {exc.strerror or exc}; check environment.command"
            ) from exc
        self._wait_ready()

    def _command(self, port: int) -> list[str]:
        if self.config.command:
            command = self.config.command
            return shlex.split(command) if isinstance(command, str) else list(command)
        if self.config.image:
            engine = shutil.which("docker") or shutil.which("podman")
            if engine is None or subprocess.run([engine, "info"], capture_output=True).returncode != 0:
                raise RunnerLoadError(
                    f"environment.image {self.config.image} needs a container engine (docker or podman) and none "
                    "runs here; give environment.command (a command serving HTTP on $PORT) instead"
                )
            inside = self.config.container_port or port
            return [engine, "run", "--rm", "-p", f"127.0.0.1:{port}:{inside}", "-e", "PORT", self.config.image]
        raise RunnerLoadError("a custom-container deployment needs environment.command or environment.image")

    def _wait_ready(self) -> None:
        assert self._process is not None and self.port is not None
        url = f"http://127.0.0.1:{self.port}{self.config.readiness_path}"
        deadline = time.monotonic() + self.config.start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RunnerLoadError(
                    f"the deployment's server exited with code {self._process.returncode} before it was ready; "
                    "its output is in this replica's log"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if 200 <= response.status < 300:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.close()
        raise RunnerLoadError(f"the deployment's server did not answer {url} within {self.config.start_timeout_s:g}s")

    def health(self) -> bool:
        """True while the server process runs."""
        return self._process is not None and self._process.poll() is None

    def close(self) -> None:
        """Stop the server and its children (SIGTERM, then SIGKILL after 10 s)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def schema(self) -> RunnerSchema:
        """Unknown: the server is the user's (a swagger file of its own is not fetched)."""
        return RunnerSchema()

    # --- scoring -------------------------------------------------------------------------------------

    async def predict(self, request: ScoreRequest) -> ScoreResponse:
        """Forward the request; ``/score`` goes to the scoring route, other paths as they came."""
        from tiffin.gateway.upstream import ConnectFailed, UpstreamError, UpstreamPool

        if not self.health():
            raise UnavailableError("the deployment's server is not running; the supervisor restarts the replica")
        if self._pool is None:
            self._pool = UpstreamPool()
        path = self.config.scoring_path if request.path in self.score_paths else request.path
        target = path.encode() + (b"?" + request.query_string if request.query_string else b"")
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()
                   if k.encode("latin-1") not in _HOP_BY_HOP]  # fmt: skip
        try:
            response = await self._pool.request(
                f"http://127.0.0.1:{self.port}", request.method, target, headers, request.body
            )
            body = await response.read()
        except (TimeoutError, ConnectFailed, UpstreamError) as exc:
            raise RunnerError(f"the deployment's server did not answer: {exc}") from exc
        content_type = "application/octet-stream"
        passed = []
        for name, value in response.headers:
            lowered = name.lower()
            if lowered == b"content-type":
                content_type = value.decode("latin-1")
            elif lowered not in _HOP_BY_HOP and lowered not in (b"date", b"server"):
                passed.append((name.decode("latin-1"), value.decode("latin-1")))
        return ScoreResponse(body=body, status=response.status, content_type=content_type, headers=passed)
