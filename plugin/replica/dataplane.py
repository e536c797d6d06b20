"""What a replica does for each kind of request, apart from how requests arrive.

As KServe keeps its ``dataplane.py`` apart from its REST and gRPC handlers: :class:`DataPlane` loads and
closes the runner, answers "healthy?", scores a :class:`~tiffin.runners.ScoreRequest`, serves the Open
Inference Protocol (V2) over a runner that does not speak it, and builds the swagger documents. It knows
no ASGI scope, header bytes or request ids; :class:`tiffin.replica.app.ReplicaApp` is the HTTP adapter
over it (routes, body limits, request ids, errors as ``{"message": ...}``).
"""

from __future__ import annotations

import gc
import inspect
import json
from typing import Any

import tiffin.v2 as v2
from tiffin import __version__
from tiffin._compat import removesuffix
from tiffin.errors import NotFoundError, TiffinError, UnavailableError
from tiffin.replica.scoring_thread import ScoringThreads
from tiffin.runners.protocol import Runner, ScoreRequest, ScoreResponse
from tiffin.swagger import build_swagger
from tiffin.v2 import V2_MODEL_HEADER, V2_UPSTREAM_HEADER

__all__ = ["DataPlane"]

# The package's own version, not its installed metadata: inside a deployment's environment tiffin is a copy on
# PYTHONPATH (tiffin.environments.runtime), not an installed distribution.
_VERSION = __version__


class DataPlane:
    """One runner's requests, whatever the transport. See :class:`~tiffin.replica.app.ReplicaApp` for the
    meaning of ``scoring_threads`` and ``tune_gc``."""

    def __init__(
        self,
        runner: Runner,
        *,
        name: str,
        version: str,
        model_names: frozenset[str],
        scoring_threads: int = 1,
        tune_gc: bool = True,
    ) -> None:
        self.runner = runner
        self.name = name
        self.version = version
        # V2 model names this replica answers to: the endpoint's (docs/rest.md) and the deployment's.
        self.model_names = model_names | {name}
        self.tune_gc = tune_gc
        self._async_predict = inspect.iscoroutinefunction(runner.predict)
        # A health check that asks another process (Triton) is async: awaited, it never blocks the loop.
        self._async_health = inspect.iscoroutinefunction(runner.health)
        self._threads = ScoringThreads(scoring_threads) if scoring_threads > 0 and not self._async_predict else None
        self.loaded = False
        self.load_error: str | None = None
        self.health_headers: list[tuple[bytes, bytes]] = []
        """Headers of a healthy answer: where the gateway may send V2 requests itself (Triton)."""
        self._swagger: dict[str, bytes] = {}

    # --- lifecycle -----------------------------------------------------------------------------------

    def startup(self) -> None:
        """Load the runner once (idempotent)."""
        if self.loaded:
            return
        try:
            self.runner.load()
        except TiffinError as exc:
            self.load_error = exc.message
            raise
        self.loaded = True
        upstream = self.runner.v2_upstream
        if upstream is not None:
            # The supervisor reads these off its readiness probe, so the gateway can send V2 requests
            # straight to the model server and save a hop (see tiffin.routing.Replica).
            url, model = upstream
            self.health_headers = [(V2_UPSTREAM_HEADER, url.encode())]
            if model:
                self.health_headers.append((V2_MODEL_HEADER, model.encode()))
        if self.tune_gc:
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 50, 100)

    def shutdown(self) -> None:
        """Close the runner and the scoring threads."""
        if self.loaded:
            self.runner.close()
            self.loaded = False
        if self._threads is not None:
            self._threads.shutdown()

    # --- requests ------------------------------------------------------------------------------------

    async def healthy(self) -> bool:
        """Loaded, and the runner says it can take requests (awaited when its check is async)."""
        if not self.loaded:
            return False
        if self._async_health:
            return await self.runner.health()  # type: ignore[misc]
        return bool(self.runner.health())

    async def score(self, request: ScoreRequest) -> ScoreResponse:
        """The runner's answer: awaited if async, else on a scoring thread (or inline with none)."""
        if not self.loaded:
            raise UnavailableError("the deployment is not loaded yet; retry once GET / answers Healthy")
        if self._async_predict:
            return await self.runner.predict(request)  # type: ignore[misc]
        if self._threads is not None:
            return await self._threads.run(self.runner.predict, request)
        return self.runner.predict(request)  # type: ignore[return-value]

    # --- V2 (Open Inference Protocol) over a runner that does not speak it ----------------------------

    def server_metadata(self) -> dict[str, Any]:
        """``GET /v2``."""
        return {"name": "tiffin", "version": _VERSION, "extensions": []}

    def check_model(self, model: str) -> None:
        """NotFoundError unless ``model`` is one of the names this replica answers to."""
        if model not in self.model_names:
            known = ", ".join(sorted(self.model_names))
            raise NotFoundError(f"model '{model}' is not served here; models: {known}")

    def model_metadata(self, model: str) -> dict[str, Any]:
        """``GET /v2/models/NAME``."""
        platform = removesuffix(type(self.runner).__name__, "Runner").lower()
        return v2.model_metadata(model, f"tiffin-{platform}", (self.version,))

    async def v2_infer(self, model: str, raw: bytes, headers: dict[str, str]) -> ScoreResponse:
        """``POST /v2/models/NAME/infer``: the tensors scored as the runner's JSON, the answer as V2 tensors.

        Errors are V2's ``{"error": ...}``: raised as TiffinError (bad request, not loaded), or answered
        with the runner's own status when it refused the request.
        """
        infer = v2.decode_infer_request(raw, headers)
        key = self.runner.v2_input_key
        body = json.dumps({key: infer.inputs} if key else infer.inputs).encode()
        request = ScoreRequest(body=body, headers={**headers, "content-type": "application/json"}, path="/score")
        response = await self.score(request)
        if response.status != 200:
            try:
                detail = json.loads(response.body).get("message", response.body.decode(errors="replace"))
            except (ValueError, AttributeError):
                detail = response.body.decode(errors="replace")
            return _v2_error(response.status, detail)
        try:
            result, header_length = v2.encode_infer_response(model, json.loads(response.body), infer, self.version)
        except ValueError as exc:
            return _v2_error(500, f"the model's answer is not JSON: {exc}")
        if header_length is None:
            return ScoreResponse(body=result)
        return ScoreResponse(
            body=result,
            content_type="application/octet-stream",
            headers=[("inference-header-content-length", str(header_length))],
        )

    # --- swagger -------------------------------------------------------------------------------------

    def swagger(self, version: str) -> bytes:
        """The swagger 2 or OpenAPI 3 document (``version`` as the query gave it); NotFoundError otherwise."""
        major = version.split(".")[0]
        schema = self.runner.schema()
        if major not in ("2", "3"):
            raise NotFoundError(f"Swagger version [{version}] is not valid. Supported versions: [2, 3].")
        if major not in schema.versions and major not in schema.swagger:
            supported = ", ".join(schema.versions)
            raise NotFoundError(
                f"Swagger version [{version}] is not supported for the scoring script. "
                f"Supported swagger versions: [{supported}]."
            )
        if major not in self._swagger:
            document = schema.swagger.get(major) or build_swagger(
                major, schema.input, schema.output, title=self.name, service_version=self.version
            )
            self._swagger[major] = json.dumps(document).encode()
        return self._swagger[major]


def _v2_error(status: int, message: str) -> ScoreResponse:
    # V2 errors are {"error": ...}, as Triton and KServe answer them.
    return ScoreResponse(body=json.dumps({"error": message}).encode(), status=status)
