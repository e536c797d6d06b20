"""Bring your own container (or command): a user's HTTP server behind a tiffin deployment.

Azure's custom-container deployments name an ``environment.image`` and its routes in
``environment.inference_config`` (``liveness_route``, ``readiness_route``, ``scoring_route``, each with a
``path`` and a container ``port``). tiffin runs the server as a command where no container engine exists
(``environment.command``, tiffin's addition) or the image where one does, on a port it picks; the server
finds it in ``$PORT`` (also ``$AML_APP_PORT`` and ``$AZUREML_INFERENCE_PORT``) and the address to bind in
``$HOST`` (``127.0.0.1``: it takes requests without the endpoint's credentials), and ``$AZUREML_MODEL_DIR``
points at the model laid out as for scoring scripts. The replica waits for the readiness route, answers
health probes with the liveness and readiness routes' answers, and forwards ``/score`` to the scoring route
(other paths as they are) over pooled keep-alive connections.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import string
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tiffin.errors import RunnerLoadError, UnavailableError
from tiffin.net import free_port
from tiffin.runners._forward import Forwarder
from tiffin.runners._server_process import ServerProcess, listens_beyond_loopback
from tiffin.runners.protocol import Runner, RunnerSchema, ScoreRequest, ScoreResponse

__all__ = ["ByocRunner", "ByocRunnerConfig"]

logger = logging.getLogger("tiffin.runners.byoc")
_PROBE_TIMEOUT_S = 2.0


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


class ByocRunner(Runner):
    """A :class:`~tiffin.runners.Runner` forwarding to a user's HTTP server it starts and stops."""

    passthrough = True
    """Paths other than ``/`` (health), ``/score`` and ``/swagger.json`` go to the server as they are."""

    def __init__(self, config: ByocRunnerConfig) -> None:
        self.config = config
        self.port: int | None = None
        self._server = ServerProcess("the deployment's server")
        self._forwarder: Forwarder | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    def load(self) -> None:
        """Start the server and wait until its readiness route answers 2xx."""
        self.port = free_port()
        base = f"http://127.0.0.1:{self.port}"
        command = self._command(self.port)
        env = {
            **os.environ,
            **self.config.environment_variables,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "AML_APP_PORT": str(self.port),
            "AZUREML_INFERENCE_PORT": str(self.port),
        }
        if self.config.model_dir is not None:
            env["AZUREML_MODEL_DIR"] = env["TIFFIN_MODEL_DIR"] = str(self.config.model_dir)
        # $PORT and the deployment's variables are expanded here, so commands work without a shell.
        argv = [string.Template(part).safe_substitute(env) for part in command]
        self._server.start(argv, env, hint="; check environment.command")
        self._server.wait_ready(f"{base}{self.config.readiness_path}", self.config.start_timeout_s)
        if self.config.command and listens_beyond_loopback(self.port):
            logger.warning(
                "the deployment's server listens on port %d beyond loopback, where anyone on the network can "
                "call it without the endpoint's key; bind it to 127.0.0.1 ($HOST) in environment.command",
                self.port,
            )
        self._forwarder = Forwarder(base)

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

    async def health(self) -> bool:
        """True while the server runs and its liveness and readiness routes answer 2xx.

        Azure probes a custom container's routes all along, not only at start: the supervisor asks the
        replica's ``GET /`` on the deployment's probe settings, and each time the routes are asked here
        (over the pooled client, on the event loop, 2 s each: Azure's default probe timeout).
        """
        forwarder = self._forwarder
        if forwarder is None or not self._server.running():
            return False
        routes = dict.fromkeys(path for path in (self.config.liveness_path, self.config.readiness_path) if path)
        for path in routes:
            if not await forwarder.answers_2xx(path, _PROBE_TIMEOUT_S):
                return False
        return True

    def close(self) -> None:
        """Stop the server and its children (SIGTERM, then SIGKILL after 10 s)."""
        self._server.stop()

    def schema(self) -> RunnerSchema:
        """Unknown: the server is the user's (a swagger file of its own is not fetched)."""
        return RunnerSchema()

    # --- scoring -------------------------------------------------------------------------------------

    async def predict(self, request: ScoreRequest) -> ScoreResponse:
        """Forward the request; ``/score`` goes to the scoring route, other paths as they came."""
        if self._forwarder is None or not self._server.running():
            raise UnavailableError("the deployment's server is not running; the supervisor restarts the replica")
        path = self.config.scoring_path if request.path in self.score_paths else request.path
        return await self._forwarder.forward(request, path)
