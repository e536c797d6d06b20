"""Bring your own container (or command): a user's HTTP server behind a tiffin deployment.

Azure's custom-container deployments name an ``environment.image`` and its routes in
``environment.inference_config`` (``liveness_route``, ``readiness_route``, ``scoring_route``, each with a
``path`` and a container ``port``), or an ``environment.build`` context to build it from. tiffin runs the server
as a command (``environment.command``, tiffin's addition; no container engine needed) on a port it picks: the
server finds it in ``$PORT`` (also ``$AML_APP_PORT`` and ``$AZUREML_INFERENCE_PORT``) and the address to bind in
``$HOST`` (``127.0.0.1``: it takes requests without the endpoint's credentials), and ``$AZUREML_MODEL_DIR``
points at the model laid out as for scoring scripts. Without a command, the image runs as a container on the
engine that answers (:mod:`tiffin.containers.run`: built or found, never pulled; the model mounted where Azure
mounts it; the scoring route's port published on 127.0.0.1 at a port tiffin picks). The replica waits for the
readiness route, answers health probes with the liveness and readiness routes' answers, and forwards ``/score``
to the scoring route (other paths as they are) over pooled keep-alive connections.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tiffin.containers.engine import ContainerEngineError, Engine
from tiffin.containers.run import byoc_image, container_command, container_name, engine_for
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
    build_context: Path | None = None
    """``environment.build.path``: the image is built from it (tagged by its digest, so built once)."""
    dockerfile: str = "Dockerfile"
    """``environment.build.dockerfile_path``, relative to the build context."""
    model_mount: str | None = None
    """Where the model is mounted in the container, its ``AZUREML_MODEL_DIR`` (Azure's path)."""
    model_dir: Path | None = None
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    start_timeout_s: float = 300.0


def _stop_this_replica(code: int) -> None:
    logger.error("the deployment's container exited with code %d; this replica stops so that it is restarted", code)
    os.kill(os.getpid(), signal.SIGTERM)


class ByocRunner(Runner):
    """A :class:`~tiffin.runners.Runner` forwarding to a user's HTTP server it starts and stops."""

    passthrough = True
    """Paths other than ``/`` (health), ``/score`` and ``/swagger.json`` go to the server as they are."""

    def __init__(self, config: ByocRunnerConfig) -> None:
        self.config = config
        self.port: int | None = None
        self._server = ServerProcess("the deployment's server")
        self._forwarder: Forwarder | None = None
        self._container: tuple[Engine, str] | None = None  # the engine and the name of the container it runs

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
        if command is None:
            argv, env = self._container_command(self.port, env)
        else:
            # $PORT and the deployment's variables are expanded here, so commands work without a shell.
            argv = [string.Template(part).safe_substitute(env) for part in command]
        self._server.start(argv, env, hint="; check environment.command")
        try:
            self._server.wait_ready(f"{base}{self.config.readiness_path}", self.config.start_timeout_s)
        except BaseException:
            self.close()  # a container outlives its client: removed here, not left to the next start
            raise
        if self._container is not None:
            # A container that exits ends its replica, as a pod's container exit restarts it on Azure: the supervisor
            # then starts a new one at once rather than after the liveness probe's failure threshold.
            self._server.on_exit(_stop_this_replica)
        if self.config.command and listens_beyond_loopback(self.port):
            logger.warning(
                "the deployment's server listens on port %d beyond loopback, where anyone on the network can "
                "call it without the endpoint's key; bind it to 127.0.0.1 ($HOST) in environment.command",
                self.port,
            )
        self._forwarder = Forwarder(base)

    def _command(self, port: int) -> list[str] | None:
        """The user's command line; None for a container (:meth:`_container_command`)."""
        if self.config.command:
            command = self.config.command
            return shlex.split(command) if isinstance(command, str) else list(command)
        if self.config.image or self.config.build_context:
            return None
        raise RunnerLoadError(
            "a custom-container deployment needs environment.command, environment.image or environment.build"
        )

    def _container_command(self, port: int, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """The engine's ``run`` of the deployment's image (built first from ``build``), and the client's
        environment, which holds the values of the variables passed into the container."""
        config = self.config
        try:
            engine = engine_for(config.image)
            image = byoc_image(engine, image=config.image, context=config.build_context, dockerfile=config.dockerfile)
        except ContainerEngineError as exc:
            raise RunnerLoadError(exc.message) from exc
        # Inside, the server listens on the scoring route's port (Azure's contract) and finds the model where Azure
        # mounts it; $PORT is set too, for images written for tiffin's command form.
        inside = config.container_port or port
        passed = {**config.environment_variables, "PORT": str(inside), "AML_APP_PORT": str(inside)}
        mounts = {}
        if config.model_dir is not None and config.model_mount:
            mounts[config.model_dir] = config.model_mount
            passed["AZUREML_MODEL_DIR"] = config.model_mount
        name = container_name()
        labels = {"ai.tiffin.instance": os.environ.get("TIFFIN_INSTANCE_ID", "")}
        argv = container_command(
            engine,
            image=image,
            name=name,
            host_port=port,
            container_port=inside,
            env_names=sorted(passed),
            mounts=mounts,
            labels=labels,
        )
        self._container = (engine, name)
        return argv, {**env, **engine.environ, **passed}

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
        """Stop the server and its children (SIGTERM, then SIGKILL after 10 s); a container is removed as well
        (SIGTERM reaches it through the engine's client; after 5 s it is killed), within the supervisor's 10 s."""
        container, self._container = self._container, None
        if container is None:
            self._server.stop()
            return
        engine, name = container
        try:
            self._server.stop(timeout_s=5.0)
        finally:
            engine.run(["rm", "--force", name], timeout=30, check=False)

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
