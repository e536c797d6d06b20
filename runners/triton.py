"""Serves a Triton model repository (Azure's ``model.type: triton_model``) through a real ``tritonserver``.

The deployment's ``model.path`` is either a Triton model repository, served by a ``tritonserver`` this
runner starts, watches and stops (see :mod:`tiffin.runners.tritonserver` for where it comes from), or the
``http(s)://`` URL of a Triton server that runs already. The replica is ready once Triton says every
model is (``/v2/health/ready``, strict readiness), and stays healthy while it keeps saying so.

* **V2 (Open Inference Protocol)** requests pass through to Triton as bytes, binary tensors included, so
  ``tritonclient`` works as against Triton itself (Azure's Triton samples call the Triton model's own
  name). The endpoint's and the deployment's names are aliases of the deployment's *default model*: the
  repository's only model, or the one ``TIFFIN_TRITON_MODEL`` names among the deployment's
  environment variables.
* **``POST /score``** takes ``{"inputs": {name: value}}`` (or ``{name: value}``), typed by the default
  model's metadata, sends it with ``tritonclient`` (binary tensors over pooled HTTP connections) and
  answers ``{output_name: value}``; a V2 infer request body is passed through as it is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tiffin.v2 as v2
from tiffin.errors import BadRequestError, RunnerError, RunnerLoadError, UnavailableError
from tiffin.net import free_port
from tiffin.runners import _json
from tiffin.runners._forward import Forwarder
from tiffin.runners._server_process import ServerProcess
from tiffin.runners.protocol import Runner, RunnerSchema, ScoreRequest, ScoreResponse
from tiffin.runners.tritonserver import EXIT_TIMEOUT_S, find_tritonserver

__all__ = ["DEFAULT_MODEL_ENV", "TritonRunner", "TritonRunnerConfig"]

logger = logging.getLogger("tiffin.runners.triton")

DEFAULT_MODEL_ENV = "TIFFIN_TRITON_MODEL"
_HEALTH_TTL_S = 1.0
_HEALTH_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class TritonRunnerConfig:
    """A repository to serve, or a server that runs already (exactly one of the two)."""

    repository: Path | None = None
    url: str | None = None
    default_model: str | None = None
    model_aliases: frozenset[str] = frozenset()
    """V2 model names that mean the default model (the endpoint's and the deployment's names)."""
    environment_variables: Mapping[str, str] = field(default_factory=dict)
    start_timeout_s: float = 300.0


class TritonRunner(Runner):
    """A :class:`~tiffin.runners.Runner` in front of ``tritonserver``."""

    v2_native = True
    """The replica hands V2 requests to :meth:`predict` as they are (Triton answers them itself)."""

    def __init__(self, config: TritonRunnerConfig) -> None:
        if (config.repository is None) == (config.url is None):
            raise RunnerLoadError("a Triton deployment needs a model repository or a Triton server URL, not both")
        if config.url is not None and not config.url.startswith("http://"):
            raise RunnerLoadError(
                f"model.path {config.url}: tiffin reaches a running Triton server over plain HTTP "
                "(http://HOST:PORT, on this machine or a private network); https is not supported"
            )
        self.config = config
        self.base_url = config.url.rstrip("/") if config.url else ""
        self.default_model: str | None = None
        self.metadata: dict[str, Any] = {}
        self._server = ServerProcess("tritonserver")
        self._forwarder: Forwarder | None = None
        self._client: Any = None
        self._schema = RunnerSchema()
        self._healthy_until = 0.0
        self._asking: asyncio.Future[bool] | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    def load(self) -> None:
        """Start ``tritonserver`` (or find the given one), wait until every model is ready, read the
        default model's metadata."""
        if self.config.repository is not None:
            self._start_server(self.config.repository)
        # Strict readiness: Triton answers 200 once every model in the repository is ready. A model that
        # fails to load stops tritonserver, which wait_ready reports.
        self._server.wait_ready(self.base_url + "/v2/health/ready", self.config.start_timeout_s)
        models = [m["name"] for m in self._get_json("/v2/repository/index", method="POST") if m.get("state") == "READY"]
        wanted = self.config.default_model or self.config.environment_variables.get(DEFAULT_MODEL_ENV)
        if wanted and wanted not in models:
            raise RunnerLoadError(
                f"{DEFAULT_MODEL_ENV}={wanted} is not a ready model of this Triton server; ready: {', '.join(models)}"
            )
        self.default_model = wanted or (models[0] if len(models) == 1 else None)
        if self.default_model is None:
            logger.warning(
                "Triton serves %d models (%s) and none is the default: /score answers 400 until %s names one",
                len(models), ", ".join(models), DEFAULT_MODEL_ENV,
            )  # fmt: skip
        else:
            self.metadata = self._get_json(f"/v2/models/{self.default_model}")
            request, response = v2.schema_from_metadata(self.metadata)
            self._schema = RunnerSchema(input=request, output=response)
        self._forwarder = Forwarder(self.base_url, what="tritonserver")
        logger.info("Triton at %s serves %s (default model: %s)", self.base_url, ", ".join(models), self.default_model)

    def _start_server(self, repository: Path) -> None:
        if not repository.is_dir():
            raise RunnerLoadError(f"the Triton model repository {repository} is not a folder; check model.path")
        install = find_tritonserver({**os.environ, **self.config.environment_variables})
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        command = install.command(repository, port, shm_prefix=f"tiffin_{os.getpid()}_")
        self._server.start(command, install.environment({**os.environ, **self.config.environment_variables}))

    def _get_json(self, path: str, *, method: str = "GET") -> Any:
        request = urllib.request.Request(self.base_url + path, data=b"{}" if method == "POST" else None, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise RunnerLoadError(f"Triton at {self.base_url} did not answer {method} {path}: {exc}") from None

    async def health(self) -> bool:
        """True while tritonserver runs and says it is ready (asked at most once a second).

        Async, so the replica's event loop keeps serving while Triton is asked: a hung tritonserver
        delays only the health answers (up to ``_HEALTH_TIMEOUT_S``, then unhealthy), and concurrent
        health requests share one question to Triton.
        """
        if not self._server.running() or self._forwarder is None:
            return False
        if time.monotonic() < self._healthy_until:
            return True
        asking = self._asking
        if asking is None or asking.done():
            asking = self._asking = asyncio.ensure_future(
                self._forwarder.answers_2xx("/v2/health/ready", _HEALTH_TIMEOUT_S)
            )
        # shield: a health request whose client went away must not cancel the others' shared question.
        ready = await asyncio.shield(asking)
        if ready:
            self._healthy_until = time.monotonic() + _HEALTH_TTL_S
        return ready

    def close(self) -> None:
        """Stop the tritonserver this runner started (SIGTERM, then SIGKILL); a given server is left alone."""
        self._server.stop(EXIT_TIMEOUT_S + 3)

    def schema(self) -> RunnerSchema:
        """The default model's inputs and outputs, from its Triton metadata."""
        return self._schema

    # --- scoring -------------------------------------------------------------------------------------

    async def predict(self, request: ScoreRequest) -> ScoreResponse:
        """V2 requests pass through (aliases mapped to the default model); ``/score`` is translated."""
        forwarder = self._forwarder
        if forwarder is None:
            raise UnavailableError("the Triton deployment is not loaded yet")
        if request.path != "/score":
            return await forwarder.forward(request, self._v2_path(request.path))
        model = self.default_model
        if model is None:
            raise BadRequestError(
                f"this Triton deployment serves several models and none is the default: call V2 "
                f"(/v2/models/NAME/infer) or set {DEFAULT_MODEL_ENV} in environment_variables"
            )
        if request.method != "POST":
            raise BadRequestError("POST a JSON body to /score")
        try:
            document = json.loads(request.body)
        except ValueError as exc:
            raise BadRequestError(f"the request body is not JSON: {exc}") from None
        if isinstance(document, dict) and isinstance(document.get("inputs"), list):
            # Already a V2 infer request: Triton reads it as it is.
            return await forwarder.forward(request, f"/v2/models/{model}/infer")
        tensors = v2.tensors_from_json(document, self.metadata.get("inputs", []))
        return await self._infer(model, tensors)

    def _v2_path(self, path: str) -> str:
        if self.default_model is None:
            return path
        aliases = tuple(a.encode() for a in self.config.model_aliases)
        return v2.alias_model(path.encode(), aliases, self.default_model.encode()).decode()

    @property
    def v2_upstream(self) -> tuple[str, str | None]:
        """(Triton's URL, the default model): the gateway may send V2 requests straight there."""
        return self.base_url, self.default_model

    async def _infer(self, model: str, tensors: Mapping[str, Any]) -> ScoreResponse:
        from tritonclient.http import InferInput, InferRequestedOutput
        from tritonclient.utils import InferenceServerException, np_to_triton_dtype

        client = self._client or self._make_client()
        inputs = []
        for name, array in tensors.items():
            tensor = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array, binary_data=True)
            inputs.append(tensor)
        outputs = [InferRequestedOutput(o["name"], binary_data=True) for o in self.metadata.get("outputs", [])]
        try:
            result = await client.infer(model, inputs, outputs=outputs or None)
        except InferenceServerException as exc:
            status = int(exc.status()) if str(exc.status() or "").isdigit() else 500
            # Triton's 400s name the input and the reason; anything else is the server's failure.
            code = 422 if status == 400 else 502 if status >= 500 else status
            return ScoreResponse(body=_json.dumps({"message": f"Triton: {exc.message()}"}), status=code)
        except (TimeoutError, OSError) as exc:
            raise RunnerError(f"tritonserver did not answer: {exc}") from exc
        names = [o["name"] for o in result.get_response().get("outputs", [])]
        return ScoreResponse(body=_json.dumps(v2.tensors_to_json({n: result.as_numpy(n) for n in names})))

    def _make_client(self) -> Any:
        # Made in the serving event loop (aiohttp binds its session to it); one pooled client per replica.
        from tritonclient.http.aio import InferenceServerClient

        scheme, _, host = self.base_url.partition("://")
        self._client = InferenceServerClient(host, ssl=scheme == "https", conn_limit=64)
        return self._client
