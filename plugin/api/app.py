"""The control plane's REST API: a Starlette app that ``tiffin serve`` mounts under ``/api``.

Handlers stay thin: parse the request, run one :class:`~tiffin.api.control.ControlPlane` method in a
worker thread (store calls block, and this event loop also serves the gateway), answer JSON. Errors
become ``{"message": ...}`` answers in one place, :func:`_error_response`.
"""

from __future__ import annotations

import hmac
import inspect
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from tiffin.assets.registry import AssetRegistry
from tiffin.auth import authenticate, authorization_header, bearer_value
from tiffin.errors import AuthError, BadRequestError, NotFoundError, PayloadTooLargeError, TiffinError, http_status
from tiffin.store import Store

from .assets import ASSET_OPERATIONS, AssetHandlers
from .autoscale import AUTOSCALE_OPERATIONS, AutoscaleHandlers
from .batch import BatchControl
from .control import ControlPlane
from .environments import ENVIRONMENT_OPERATIONS, EnvironmentHandlers
from .logs import LOG_OPERATIONS, LogHandlers
from .openapi import openapi_document
from .operations import LOG_OFFSET, OPERATIONS, SET_DEFAULT, Operation, QueryParam
from .rollouts import ROLLOUT_OPERATIONS, RolloutHandlers

__all__ = ["create_api"]

log = logging.getLogger("tiffin.api")

Handler = Callable[[Request], Awaitable[Any]]
RouteEndpoint = Callable[[Request], Awaitable[Response]]


def _error_response(request: Request, exc: Exception) -> Response:
    """The one mapping from exceptions to HTTP answers: ``{"message": ...}`` with the right status."""
    headers: dict[str, str] = {}
    if isinstance(exc, TiffinError):
        status, message = http_status(exc), exc.message
    elif isinstance(exc, HTTPException):
        status = exc.status_code
        headers.update(exc.headers or {})  # a 405's Allow
        message = {
            404: f"no such route: {request.method} {request.url.path}; see /api/openapi.json",
            405: f"{request.method} is not allowed on {request.url.path}; see /api/openapi.json",
        }.get(status, str(exc.detail))
    else:  # a bug: keep the traceback in the server log, not in the answer
        log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
        status, message = 500, f"internal error in the control plane ({type(exc).__name__}); see the server log"
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"message": message}, status_code=status, headers=headers)


MAX_BODY_BYTES = 4 * 1024 * 1024
"""The largest control-plane request body: a spec is a few KiB; an endpoint key may send bodies too (batch
invoke), so what it can make the server hold is bounded."""


async def _read_body(request: Request) -> bytes:
    """The request body, refused with 413 as soon as it passes :data:`MAX_BODY_BYTES` (not read whole first)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(_TOO_LARGE)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLargeError(_TOO_LARGE)
        chunks.append(chunk)
    return b"".join(chunks)


_TOO_LARGE = f"the request body is larger than {MAX_BODY_BYTES} bytes; a spec or an invoke needs a few KiB"


async def _json_body(request: Request, *, empty: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``empty`` where the route allows one, else 400."""
    raw = await _read_body(request)
    if not raw.strip():
        if empty is not None:
            return empty
        raise BadRequestError("the request body is empty; send a JSON object")
    try:
        value = json.loads(raw.decode("utf-8"))  # JSON is UTF-8 (RFC 8259); json.loads would guess
    except UnicodeDecodeError:
        raise BadRequestError("the request body is not UTF-8 text; send a JSON object") from None
    except json.JSONDecodeError as exc:
        raise BadRequestError(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except RecursionError:  # json's decoder recurses once per level: ~1000 levels exhaust the stack
        raise BadRequestError(_TOO_DEEP) from None
    if not isinstance(value, dict):
        raise BadRequestError(f"the request body must be a JSON object, not {type(value).__name__}")
    _check_depth(value)
    return value


MAX_BODY_DEPTH = 100
"""How deeply a control-plane body may nest. Azure's specs need about six levels; everything after
parsing (validation, the store's JSON, copies) walks a body recursively."""
_TOO_DEEP = f"the request body is nested too deeply (more than {MAX_BODY_DEPTH} levels); a spec needs a few"


def _check_depth(value: Any) -> None:
    """Raise BadRequestError when ``value`` nests past :data:`MAX_BODY_DEPTH` (walked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth >= MAX_BODY_DEPTH:
                    raise BadRequestError(_TOO_DEEP)
                stack.append((child, depth + 1))


def _query_int(request: Request, param: QueryParam) -> int:
    raw = request.query_params.get(param.name)
    if raw is None:
        return param.default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError(f"query parameter '{param.name}' must be a whole number, not {raw!r}") from None
    if value < param.minimum:
        raise BadRequestError(f"query parameter '{param.name}' must be at least {param.minimum}, not {value}")
    return value


class _Handlers:
    """One coroutine per operation, named as in the route table; each returns the answer's body."""

    def __init__(
        self, control: ControlPlane, batch: BatchControl, stats: Callable[[str], dict[str, Any]] | None
    ) -> None:
        self.control = control
        self.batch = batch
        self.stats = stats
        self.document = openapi_document()

    async def health(self, request: Request) -> Any:
        return {"status": "ok"}

    async def openapi(self, request: Request) -> Any:
        return self.document

    async def list_endpoints(self, request: Request) -> Any:
        return await run_in_threadpool(self.control.list_endpoints)

    async def create_endpoint(self, request: Request) -> Any:
        return await run_in_threadpool(self.control.create_endpoint, await _json_body(request))

    async def get_endpoint(self, request: Request) -> Any:
        return await run_in_threadpool(self.control.get_endpoint, request.path_params["name"])

    async def update_endpoint(self, request: Request) -> Any:
        body = await _json_body(request)
        return await run_in_threadpool(self.control.update_endpoint, request.path_params["name"], body)

    async def delete_endpoint(self, request: Request) -> Any:
        await run_in_threadpool(self.control.delete_endpoint, request.path_params["name"])

    async def set_traffic(self, request: Request) -> Any:
        body = await _json_body(request)
        return await run_in_threadpool(self.control.set_traffic, request.path_params["name"], body)

    async def get_credentials(self, request: Request) -> Any:
        return await run_in_threadpool(self.control.credentials, request.path_params["name"])

    async def regenerate_keys(self, request: Request) -> Any:
        # An empty body means the default, as `az ml online-endpoint regenerate-keys` without --key-type.
        body = await _json_body(request, empty={})
        key_type = body.get("key_type", "primary")
        await run_in_threadpool(self.control.regenerate_keys, request.path_params["name"], key_type)

    async def get_stats(self, request: Request) -> Any:
        name = request.path_params["name"]
        await run_in_threadpool(self.control.endpoint, name)
        if self.stats is None:
            raise NotFoundError("request statistics come from the gateway, which this server does not run")
        return self.stats(name)

    async def list_deployments(self, request: Request) -> Any:
        return await run_in_threadpool(self.control.list_deployments, request.path_params["name"])

    async def get_deployment(self, request: Request) -> Any:
        params = request.path_params
        return await run_in_threadpool(self.control.get_deployment, params["name"], params["deployment"])

    async def put_deployment(self, request: Request) -> Any:
        body = await _json_body(request)
        params = request.path_params
        deployment, created = await run_in_threadpool(
            self.control.put_deployment, params["name"], params["deployment"], body
        )
        return JSONResponse(deployment, status_code=201 if created else 200)

    async def delete_deployment(self, request: Request) -> Any:
        params = request.path_params
        await run_in_threadpool(self.control.delete_deployment, params["name"], params["deployment"])

    # --- batch ---------------------------------------------------------------------------------------

    async def list_batch_endpoints(self, request: Request) -> Any:
        return await run_in_threadpool(self.batch.list_endpoints)

    async def create_batch_endpoint(self, request: Request) -> Any:
        return await run_in_threadpool(self.batch.create_endpoint, await _json_body(request))

    async def get_batch_endpoint(self, request: Request) -> Any:
        return await run_in_threadpool(self.batch.get_endpoint, request.path_params["name"])

    async def update_batch_endpoint(self, request: Request) -> Any:
        body = await _json_body(request)
        return await run_in_threadpool(self.batch.update_endpoint, request.path_params["name"], body)

    async def delete_batch_endpoint(self, request: Request) -> Any:
        await run_in_threadpool(self.batch.delete_endpoint, request.path_params["name"])

    async def get_batch_credentials(self, request: Request) -> Any:
        return await run_in_threadpool(self.batch.credentials, request.path_params["name"])

    async def list_batch_deployments(self, request: Request) -> Any:
        return await run_in_threadpool(self.batch.list_deployments, request.path_params["name"])

    async def get_batch_deployment(self, request: Request) -> Any:
        params = request.path_params
        return await run_in_threadpool(self.batch.get_deployment, params["name"], params["deployment"])

    async def put_batch_deployment(self, request: Request) -> Any:
        body = await _json_body(request)
        params = request.path_params
        set_default = _query_int(request, SET_DEFAULT) > 0
        deployment, created = await run_in_threadpool(
            lambda: self.batch.put_deployment(params["name"], params["deployment"], body, set_default=set_default)
        )
        return JSONResponse(deployment, status_code=201 if created else 200)

    async def delete_batch_deployment(self, request: Request) -> Any:
        params = request.path_params
        await run_in_threadpool(self.batch.delete_deployment, params["name"], params["deployment"])

    async def invoke_batch_endpoint(self, request: Request) -> Any:
        body = await _json_body(request)
        admin = getattr(request.state, "admin", False) is True  # set by the credential check; absent: not admin
        return await run_in_threadpool(lambda: self.batch.invoke(request.path_params["name"], body, admin=admin))

    async def list_batch_jobs(self, request: Request) -> Any:
        return await run_in_threadpool(self.batch.list_jobs, request.path_params["name"])

    async def list_batch_deployment_jobs(self, request: Request) -> Any:
        params = request.path_params
        return await run_in_threadpool(self.batch.list_jobs, params["name"], params["deployment"])

    async def list_jobs(self, request: Request) -> Any:
        return await run_in_threadpool(self.batch.list_jobs)

    async def get_job(self, request: Request) -> Any:
        return await run_in_threadpool(self.batch.get_job, request.path_params["job"])

    async def cancel_job(self, request: Request) -> Any:
        return await run_in_threadpool(self.batch.cancel_job, request.path_params["job"])

    async def get_job_log(self, request: Request) -> Any:
        offset = _query_int(request, LOG_OFFSET)
        data, next_offset = await run_in_threadpool(self.batch.job_log, request.path_params["job"], offset)
        return Response(data, media_type="text/plain; charset=utf-8", headers={"X-Tiffin-Log-Offset": str(next_offset)})

    async def download_job_output(self, request: Request) -> Any:
        params = request.path_params
        path = await run_in_threadpool(self.batch.job_output, params["job"], params["output"])
        return FileResponse(path, media_type="application/octet-stream", filename=path.name)


def _endpoint(
    op: Operation,
    handler: Handler,
    admin_token: bytes,
    on_change: Callable[[], Awaitable[None] | None],
    batch: BatchControl,
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap ``handler`` with the admin-token check, ``on_change`` after writes, and the JSON answer."""

    async def endpoint(request: Request) -> Response:
        if not op.public:
            authorization = authorization_header(request.scope["headers"])  # two are refused: 400
            value = bearer_value(authorization)
            # compare_digest: how long the check takes says nothing about how much of the token matched.
            admin = value is not None and hmac.compare_digest(value.encode(), admin_token)
            # Handlers that let endpoint credentials in (batch invoke) allow them less than the admin token.
            request.state.admin = admin
            if not admin and op.endpoint_auth and value is not None:
                name = request.path_params.get("name")
                try:
                    if name is None:  # a job's own routes: the credentials of the endpoint that ran it
                        name = await run_in_threadpool(batch.endpoint_of_job, request.path_params["job"])
                    credentials = await run_in_threadpool(batch.credentials_of, name)
                    authenticate(authorization, name, credentials)
                except (AuthError, NotFoundError):  # the same answer whether or not the endpoint (job) exists
                    which = f"batch endpoint '{name}'" if "name" in request.path_params else "the job's batch endpoint"
                    raise AuthError(
                        f"the credential is neither a key or token of {which} (see `tiffin batch-endpoint "
                        "get-credentials`) nor the control plane's admin token"
                    ) from None
            elif not admin:
                raise AuthError(
                    "the control plane needs its admin token: send 'Authorization: Bearer <token>' with the "
                    "token `tiffin serve` wrote to $TIFFIN_HOME/admin-token"
                    if value is None
                    else "the admin token is not valid; use the one in $TIFFIN_HOME/admin-token of the server"
                )
        result = await handler(request)
        if op.write:
            # On the event loop's thread, after the store committed: on_change may touch asyncio objects.
            # It may be async (the server re-reads the routing table off the loop and awaits it).
            changed = on_change()
            if inspect.isawaitable(changed):
                await changed
        if isinstance(result, Response):
            return result
        if op.status == 204:
            return Response(status_code=204)
        return JSONResponse(result, status_code=op.status)

    return endpoint


def _by_method(endpoints: dict[str, RouteEndpoint]) -> RouteEndpoint:
    """One path's endpoints behind one route; HEAD is answered as GET (Starlette allows it with GET)."""

    async def dispatch(request: Request) -> Response:
        return await endpoints["GET" if request.method == "HEAD" else request.method](request)

    return dispatch


def create_api(
    store: Store,
    *,
    admin_token: str,
    public_url: str,
    on_change: Callable[[], Awaitable[None] | None] = lambda: None,
    stats: Callable[[str], dict[str, Any]] | None = None,
    home: Path,
    ready_count: Callable[[str, str], int | None] | None = None,
) -> Starlette:
    """The control plane's REST API as a Starlette app; mount it at ``/api``.

    ``admin_token`` guards every route but ``GET /health`` and ``GET /openapi.json``.
    ``public_url`` (e.g. ``http://127.0.0.1:7700``) is where clients reach the server: scoring and
    swagger URIs are built from it. ``on_change()`` is called on the event loop's thread after every
    successful write (wake the supervisor, rebuild the routing table), and awaited if it is async.
    ``stats(endpoint)`` returns the gateway's statistics of an endpoint, served at
    ``GET /online-endpoints/{name}/stats`` (404 when None). ``home`` is ``TIFFIN_HOME``, where replica logs
    are read from. ``ready_count(endpoint, deployment)`` is how many replicas answer now (a deployment's
    ``current_instances``; None: not routed).
    """
    if not admin_token:
        raise ValueError("admin_token must not be empty")
    batch = BatchControl(store, public_url=public_url, home=home)
    control = ControlPlane(store, public_url=public_url, home=home, ready_count=ready_count)
    handlers = _Handlers(control, batch, stats)
    token = admin_token.encode()
    by_path: dict[str, dict[str, RouteEndpoint]] = {}
    for op in OPERATIONS:
        handler: Handler = getattr(handlers, op.name)
        by_path.setdefault(op.path, {})[op.method] = _endpoint(op, handler, token, on_change, batch)
    assets = AssetHandlers(AssetRegistry(store, home), _json_body)
    for op in ASSET_OPERATIONS:  # registered models, environments, data; computes
        by_path.setdefault(op.path, {})[op.method] = _endpoint(op, assets.handler(op), token, on_change, batch)
    environments = EnvironmentHandlers(store, home, _json_body)
    for op in ENVIRONMENT_OPERATIONS:  # built environments: build, prune, list
        by_path.setdefault(op.path, {})[op.method] = _endpoint(op, environments.handler(op), token, on_change, batch)
    autoscale = AutoscaleHandlers(store, _json_body)
    for op in AUTOSCALE_OPERATIONS:  # tiffin monitor autoscale: settings, rules, profiles
        by_path.setdefault(op.path, {})[op.method] = _endpoint(op, autoscale.handler(op), token, on_change, batch)
    logs = LogHandlers(control, home)
    for op in LOG_OPERATIONS:  # a deployment's console log, storage-initializer log and events
        by_path.setdefault(op.path, {})[op.method] = _endpoint(op, logs.handler(op), token, on_change, batch)
    rollouts = RolloutHandlers(store, _json_body)
    for op in ROLLOUT_OPERATIONS:  # guarded rollouts: the server's RolloutDriver does the traffic changes
        by_path.setdefault(op.path, {})[op.method] = _endpoint(op, rollouts.handler(op), token, on_change, batch)
    # One route per path, so that a 405's Allow names every method of the path, not only the first route's.
    routes = [Route(path, _by_method(methods), methods=list(methods)) for path, methods in by_path.items()]
    return Starlette(
        routes=routes,
        exception_handlers={TiffinError: _error_response, HTTPException: _error_response, Exception: _error_response},
    )
