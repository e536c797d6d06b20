"""The replica's HTTP surface: azmlinfsrv's contract over one runner, as a lean ASGI app.

Routes (the same as Azure's inference server, so clients and probes written for Azure work):

* ``GET /`` → 200 ``Healthy`` (503 while the runner is not loaded or unhealthy)
* ``GET|POST /score`` → the runner's answer; ``OPTIONS /score`` → 200
* ``GET /swagger.json[?version=2|3]`` → swagger 2 (default) or OpenAPI 3

Every response carries ``x-request-id``, ``x-ms-request-id`` (the client's ``x-ms-client-request-id``
when given) and, on scoring, ``x-ms-run-function-failed``. Errors are ``{"message": ...}``.

This is a raw ASGI callable rather than a framework app because it is the hot path: docs/performance.md measures
BentoML's request path at a fifth of a plain ASGI app. BentoML still hosts it (``tiffin.replica.service``
mounts it), and ``tiffin replica serve`` runs it straight on uvicorn.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import logging
import random
import traceback
from importlib.metadata import version as _metadata_version
from typing import Any

import tiffin.v2 as v2
from tiffin.asgi import JSON, Receive, Scope, Send, send_bytes, send_error
from tiffin.errors import PayloadTooLargeError, ScoringError, TiffinError, UnavailableError, http_status
from tiffin.replica.scoring_thread import ScoringThreads
from tiffin.routing import V2_MODEL_HEADER, V2_UPSTREAM_HEADER
from tiffin.runners.protocol import Runner, ScoreRequest, ScoreResponse
from tiffin.swagger import build_swagger

__all__ = ["ReplicaApp"]

logger = logging.getLogger("tiffin.replica")


_HEADER_LIMIT = 100  # azmlinfsrv refuses longer request ids with 431
_TEXT = b"text/plain; charset=utf-8"
_VERSION = _metadata_version("tiffin")
_INTERNAL_ERROR = "An unexpected internal error occurred. Check the logs for more info."


class ReplicaApp:
    """ASGI app serving one :class:`~tiffin.runners.Runner` with Azure's scoring contract.

    ``scoring_threads`` is how many threads run a sync ``predict``: 1 (default) keeps health probes
    answering while a slow ``run()`` works, and serialises calls as Azure's one-worker server does.
    ``tune_gc`` freezes the heap left by ``init()`` and raises the gen-0 threshold: docs/performance.md measured
    a worker's p99 falling from 78 ms to 5 ms with it, since a model's objects are otherwise rescanned
    by every collection.
    """

    def __init__(
        self,
        runner: Runner,
        *,
        name: str = "tiffin-deployment",
        version: str = "1",
        model_names: frozenset[str] = frozenset(),
        max_body_bytes: int = 100 * 1024 * 1024,
        scoring_threads: int = 1,
        tune_gc: bool = True,
    ) -> None:
        self.runner = runner
        self.name = name
        self.version = version
        # V2 model names this replica answers to: the endpoint's (docs/rest.md) and the deployment's.
        self.model_names = model_names | {name}
        self.max_body_bytes = max_body_bytes
        self.tune_gc = tune_gc
        self._async_predict = inspect.iscoroutinefunction(runner.predict)
        # A health check that asks another process (Triton) is async: awaited, it never blocks the loop.
        self._async_health = inspect.iscoroutinefunction(runner.health)
        self._threads = ScoringThreads(scoring_threads) if scoring_threads > 0 and not self._async_predict else None
        # What the runner serves beyond Azure's /score: see the capabilities declared on Runner.
        self._score_paths = frozenset(runner.score_paths)
        self._passthrough = runner.passthrough
        self._v2_native = runner.v2_native
        self._loaded = False
        self._health_headers: list[tuple[bytes, bytes]] = []
        self._load_error: str | None = None
        self._swagger: dict[str, bytes] = {}

    # --- lifecycle -----------------------------------------------------------------------------------

    def startup(self) -> None:
        """Load the runner once (idempotent); BentoML's service and uvicorn's lifespan both call it."""
        if self._loaded:
            return
        try:
            self.runner.load()
        except TiffinError as exc:
            self._load_error = exc.message
            raise
        self._loaded = True
        upstream = self.runner.v2_upstream
        if upstream is not None:
            # The supervisor reads these off its readiness probe, so the gateway can send V2 requests
            # straight to the model server and save a hop (see tiffin.routing.Replica).
            url, model = upstream
            self._health_headers = [(V2_UPSTREAM_HEADER, url.encode())]
            if model:
                self._health_headers.append((V2_MODEL_HEADER, model.encode()))
        if self.tune_gc:
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 50, 100)

    def shutdown(self) -> None:
        """Close the runner and the scoring threads."""
        if self._loaded:
            self.runner.close()
            self._loaded = False
        if self._threads is not None:
            self._threads.shutdown()

    # --- ASGI ----------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await asyncio.get_running_loop().run_in_executor(None, self.startup)
                except TiffinError as exc:
                    # The runner already logged the user's traceback where there is one.
                    logger.error("deployment failed to start: %s", exc.message)
                    await send({"type": "lifespan.startup.failed", "message": exc.message})
                    return
                except Exception as exc:
                    text = repr(exc)
                    logger.error("deployment failed to start: %s\n%s", text, traceback.format_exc())
                    await send({"type": "lifespan.startup.failed", "message": text})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # Off the loop: a runner's close may wait seconds for its server to exit (tritonserver).
                await asyncio.get_running_loop().run_in_executor(None, self.shutdown)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        ids = _request_ids(headers)
        if isinstance(ids, str):
            await send_error(send, 431, ids)
            return
        id_headers = ids

        if path in self._score_paths:
            if method == "OPTIONS":
                await send_bytes(send, 200, b"", _TEXT, id_headers)
                return
            if method not in ("GET", "POST"):
                allow = [*id_headers, (b"allow", b"GET, POST, OPTIONS")]
                await send_error(send, 405, f"Method not allowed; use POST {path}", allow)
                return
            await self._score(scope, receive, send, headers, id_headers)
        elif path == "/" and method in ("GET", "HEAD"):
            if await self._healthy():
                await send_bytes(send, 200, b"Healthy", _TEXT, id_headers + self._health_headers)
            else:
                reason = self._load_error or "the deployment is still loading"
                await send_error(send, 503, f"Unhealthy: {reason}", id_headers)
        elif path == "/v2" or path.startswith("/v2/"):
            if self._v2_native:
                await self._score(scope, receive, send, headers, id_headers)
            else:
                await self._v2(scope, receive, send, headers, id_headers)
        elif path == "/swagger.json" and method == "GET":
            await self._swagger_json(scope, send, id_headers)
        elif self._passthrough:
            await self._score(scope, receive, send, headers, id_headers)
        else:
            await send_error(send, 404, f"{method} {path} is not served here; POST /score to score", id_headers)

    async def _score(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], id_headers: list
    ) -> None:
        try:
            body = await self._read_body(receive, headers)
            request = ScoreRequest(
                body=body,
                headers=headers,
                method=scope["method"],
                path=scope["path"],
                query_string=scope.get("query_string", b""),
            )
            if not self._loaded:
                raise UnavailableError("the deployment is not loaded yet; retry once GET / answers Healthy")
            response = await self._predict(request)
        except TiffinError as exc:
            failed = isinstance(exc, ScoringError)
            await send_bytes(
                send,
                http_status(exc),
                json.dumps({"message": exc.message}).encode(),
                JSON,
                [*id_headers, (b"x-ms-run-function-failed", b"True" if failed else b"False")],
            )
            return
        except RecursionError:
            # The body's JSON nests past Python's stack (json's decoder recurses once per level): the
            # request is at fault, not the replica. User code's own recursion is a ScoringError above.
            await send_error(send, 400, "the request body is nested too deeply to decode", id_headers)
            return
        except Exception:
            logger.error("unexpected error while scoring:\n%s", traceback.format_exc())
            await send_error(send, 500, _INTERNAL_ERROR, id_headers)
            return
        await _send_response(send, response, id_headers)

    async def _v2(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], id_headers: list) -> None:
        """The Open Inference Protocol (V2) over this replica's runner; see :mod:`tiffin.v2`."""
        parts = scope["path"].strip("/").split("/")  # v2, models, NAME, [versions, V], [ready|infer]
        method = scope["method"]
        if parts == ["v2"]:
            await _v2_json(send, 200, {"name": "tiffin", "version": _VERSION, "extensions": []}, id_headers)
            return
        if parts[:2] == ["v2", "health"] and len(parts) == 3 and parts[2] in ("live", "ready"):
            ok = parts[2] == "live" or await self._healthy()
            await _v2_json(send, 200 if ok else 503, {} if ok else {"error": "not ready"}, id_headers)
            return
        if len(parts) < 3 or parts[1] != "models":
            await _v2_json(send, 404, {"error": f"{scope['path']} is not a V2 route"}, id_headers)
            return
        model, rest = parts[2], parts[3:]
        if len(rest) >= 2 and rest[0] == "versions":
            rest = rest[2:]
        if model not in self.model_names:
            known = ", ".join(sorted(self.model_names))
            await _v2_json(send, 404, {"error": f"model '{model}' is not served here; models: {known}"}, id_headers)
            return
        if not rest and method == "GET":
            platform = type(self.runner).__name__.removesuffix("Runner").lower()
            await _v2_json(send, 200, v2.model_metadata(model, f"tiffin-{platform}", (self.version,)), id_headers)
        elif rest == ["ready"] and method == "GET":
            ready = await self._healthy()
            await _v2_json(send, 200 if ready else 503, {} if ready else {"error": "not ready"}, id_headers)
        elif rest == ["infer"] and method == "POST":
            await self._v2_infer(scope, receive, send, headers, id_headers, model)
        else:
            await _v2_json(send, 404, {"error": f"{method} {scope['path']} is not a V2 route"}, id_headers)

    async def _v2_infer(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], id_headers: list, model: str
    ) -> None:
        try:
            raw = await self._read_body(receive, headers)
            infer = v2.decode_infer_request(raw, headers)
            key = self.runner.v2_input_key
            body = json.dumps({key: infer.inputs} if key else infer.inputs).encode()
            request = ScoreRequest(body=body, headers={**headers, "content-type": "application/json"}, path="/score")
            if not self._loaded:
                raise UnavailableError("the deployment is not loaded yet")
            response = await self._predict(request)
            if response.status != 200:
                try:
                    detail = json.loads(response.body).get("message", response.body.decode(errors="replace"))
                except (ValueError, AttributeError):
                    detail = response.body.decode(errors="replace")
                await _v2_json(send, response.status, {"error": detail}, id_headers)
                return
            result, header_length = v2.encode_infer_response(model, json.loads(response.body), infer, self.version)
        except TiffinError as exc:
            await _v2_json(send, http_status(exc), {"error": exc.message}, id_headers)
            return
        except ValueError as exc:
            await _v2_json(send, 500, {"error": f"the model's answer is not JSON: {exc}"}, id_headers)
            return
        if header_length is None:
            await send_bytes(send, 200, result, JSON, id_headers)
        else:
            binary_headers = [*id_headers, (b"inference-header-content-length", b"%d" % header_length)]
            await send_bytes(send, 200, result, b"application/octet-stream", binary_headers)

    async def _healthy(self) -> bool:
        """Loaded, and the runner says it can take requests (awaited when its check is async)."""
        if not self._loaded:
            return False
        if self._async_health:
            return await self.runner.health()  # type: ignore[misc]
        return bool(self.runner.health())

    async def _predict(self, request: ScoreRequest) -> ScoreResponse:
        """The runner's answer: awaited if async, else on a scoring thread (or inline with none)."""
        if self._async_predict:
            return await self.runner.predict(request)  # type: ignore[misc]
        if self._threads is not None:
            return await self._threads.run(self.runner.predict, request)
        return self.runner.predict(request)  # type: ignore[return-value]

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise PayloadTooLargeError(self._too_large())
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise PayloadTooLargeError(self._too_large())
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self) -> str:
        return f"request body is larger than {self.max_body_bytes} bytes; send smaller batches"

    async def _swagger_json(self, scope: Scope, send: Send, id_headers: list) -> None:
        query = scope.get("query_string", b"").decode("latin-1")
        version = "2"
        for part in query.split("&"):
            if part.startswith("version="):
                version = part.split("=", 1)[1] or "2"
        major = version.split(".")[0]
        schema = self.runner.schema()
        if major not in ("2", "3"):
            await send_error(
                send, 404, f"Swagger version [{version}] is not valid. Supported versions: [2, 3].", id_headers
            )
            return
        if major not in schema.versions and major not in schema.swagger:
            supported = ", ".join(schema.versions)
            await send_error(
                send,
                404,
                f"Swagger version [{version}] is not supported for the scoring script. "
                f"Supported swagger versions: [{supported}].",
                id_headers,
            )
            return
        if major not in self._swagger:
            document = schema.swagger.get(major) or build_swagger(
                major, schema.input, schema.output, title=self.name, service_version=self.version
            )
            self._swagger[major] = json.dumps(document).encode()
        await send_bytes(send, 200, self._swagger[major], JSON, id_headers)


_ids = random.Random()


async def _v2_json(send: Send, status: int, document: dict[str, Any], headers: list) -> None:
    # V2 errors are {"error": ...}, as Triton and KServe answer them.
    await send_bytes(send, status, json.dumps(document).encode(), JSON, headers)


def _new_request_id() -> str:
    """A version-4 UUID string. Request ids need to be unique, not unguessable, so they come from a
    Mersenne Twister rather than ``uuid.uuid4()``'s ``os.urandom`` system call (5% of a replica's time)."""
    n = (_ids.getrandbits(128) & ~(0xF000 << 64) | (0x4000 << 64)) & ~(0xC000 << 48) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _request_ids(headers: dict[str, str]) -> list[tuple[bytes, bytes]] | str:
    """azmlinfsrv's request-id rules; a string is the error message for a 431."""
    request_id = headers.get("x-request-id") or _new_request_id()
    client_id = headers.get("x-ms-client-request-id", "")
    legacy = headers.get("x-ms-request-id", "") or client_id or request_id
    if len(request_id) > _HEADER_LIMIT:
        return f"x-request-id must not exceed {_HEADER_LIMIT} characters"
    if len(legacy) > _HEADER_LIMIT or len(client_id) > _HEADER_LIMIT:
        return f"x-ms-request-id and x-ms-client-request-id must not exceed {_HEADER_LIMIT} characters"
    ids = [(b"x-request-id", request_id.encode()), (b"x-ms-request-id", legacy.encode())]
    if client_id:
        ids.append((b"x-ms-client-request-id", client_id.encode()))
    return ids


async def _send_response(send: Send, response: ScoreResponse, id_headers: list) -> None:
    headers = [
        *id_headers,
        (b"x-ms-run-function-failed", b"True" if response.run_function_failed else b"False"),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers),
    ]
    await send_bytes(send, response.status, response.body, response.content_type.encode("latin-1"), headers)
