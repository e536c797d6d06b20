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
import json
import logging
import random
import traceback
from typing import Any

from tiffin.asgi import JSON, Receive, Scope, Send, send_bytes, send_error
from tiffin.errors import NotFoundError, PayloadTooLargeError, ScoringError, TiffinError, http_status
from tiffin.replica.dataplane import DataPlane
from tiffin.runners.protocol import Runner, ScoreRequest, ScoreResponse

__all__ = ["ReplicaApp"]

logger = logging.getLogger("tiffin.replica")


_HEADER_LIMIT = 100  # azmlinfsrv refuses longer request ids with 431
_TEXT = b"text/plain; charset=utf-8"
_INTERNAL_ERROR = "An unexpected internal error occurred. Check the logs for more info."


class ReplicaApp:
    """ASGI app serving one :class:`~tiffin.runners.Runner` with Azure's scoring contract.

    The HTTP adapter over a :class:`~tiffin.replica.dataplane.DataPlane`: routes, body limits, request ids
    and error bodies are here; what each request does is there.

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
        tracing: dict[str, Any] | None = None,
    ) -> None:
        if tracing:  # OpenTelemetry is imported only now, and only if this environment has it
            from tiffin.telemetry.replica import instrument

            instrument(runner, tracing)
        self.dataplane = DataPlane(
            runner,
            name=name,
            version=version,
            model_names=model_names,
            scoring_threads=scoring_threads,
            tune_gc=tune_gc,
        )
        self.runner = runner
        self.name = name
        self.version = version
        self.max_body_bytes = max_body_bytes
        # What the runner serves beyond Azure's /score: see the capabilities declared on Runner.
        self._score_paths = frozenset(runner.score_paths)
        self._passthrough = runner.passthrough
        self._v2_native = runner.v2_native

    # --- lifecycle -----------------------------------------------------------------------------------

    def startup(self) -> None:
        """Load the runner once (idempotent); BentoML's service and uvicorn's lifespan both call it."""
        self.dataplane.startup()

    def shutdown(self) -> None:
        """Close the runner and the scoring threads."""
        self.dataplane.shutdown()

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
            if await self.dataplane.healthy():
                await send_bytes(send, 200, b"Healthy", _TEXT, id_headers + self.dataplane.health_headers)
            else:
                reason = self.dataplane.load_error or "the deployment is still loading"
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
            response = await self.dataplane.score(request)
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
        """The Open Inference Protocol (V2) routes over the data plane; see :mod:`tiffin.v2`."""
        parts = scope["path"].strip("/").split("/")  # v2, models, NAME, [versions, V], [ready|infer]
        method = scope["method"]
        dataplane = self.dataplane
        if parts == ["v2"]:
            await _v2_json(send, 200, dataplane.server_metadata(), id_headers)
            return
        if parts[:2] == ["v2", "health"] and len(parts) == 3 and parts[2] in ("live", "ready"):
            ok = parts[2] == "live" or await dataplane.healthy()
            await _v2_json(send, 200 if ok else 503, {} if ok else {"error": "not ready"}, id_headers)
            return
        if len(parts) < 3 or parts[1] != "models":
            await _v2_json(send, 404, {"error": f"{scope['path']} is not a V2 route"}, id_headers)
            return
        model, rest = parts[2], parts[3:]
        if len(rest) >= 2 and rest[0] == "versions":
            rest = rest[2:]
        try:
            dataplane.check_model(model)
            if not rest and method == "GET":
                await _v2_json(send, 200, dataplane.model_metadata(model), id_headers)
            elif rest == ["ready"] and method == "GET":
                ready = await dataplane.healthy()
                await _v2_json(send, 200 if ready else 503, {} if ready else {"error": "not ready"}, id_headers)
            elif rest == ["infer"] and method == "POST":
                raw = await self._read_body(receive, headers)
                await _send_response(send, await dataplane.v2_infer(model, raw, headers), id_headers, scoring=False)
            else:
                await _v2_json(send, 404, {"error": f"{method} {scope['path']} is not a V2 route"}, id_headers)
        except TiffinError as exc:
            await _v2_json(send, http_status(exc), {"error": exc.message}, id_headers)
        except ValueError as exc:
            await _v2_json(send, 500, {"error": f"the model's answer is not JSON: {exc}"}, id_headers)

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
        try:
            document = self.dataplane.swagger(version)
        except NotFoundError as exc:
            await send_error(send, 404, exc.message, id_headers)
            return
        await send_bytes(send, 200, document, JSON, id_headers)


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


async def _send_response(send: Send, response: ScoreResponse, id_headers: list, *, scoring: bool = True) -> None:
    headers = [
        *id_headers,
        *([(b"x-ms-run-function-failed", b"True" if response.run_function_failed else b"False")] if scoring else []),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers),
    ]
    await send_bytes(send, response.status, response.body, response.content_type.encode("latin-1"), headers)
