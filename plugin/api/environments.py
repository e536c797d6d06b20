"""The control plane's routes for built environments (``tiffin environment build|prune|list-built``).

``POST /environments/-/build`` resolves an environment exactly as a deployment's is resolved before its replicas
start (a deployment spec, references inlined, the runner decided; or an environment given alone) and builds it
under ``$TIFFIN_HOME/envs`` with :func:`tiffin.environments.runtime.prepare`, which the server owns. A build can
take minutes, so it runs in a thread of its own and the event loop keeps serving; the answer is JSON once it is
done, or, with ``Accept: application/x-ndjson``, one JSON object a line as it goes: ``{"log": LINE}`` for each
line of uv's output, ``{"waiting": SECONDS}`` every half minute of silence, then ``{"result": ...}`` or ``{"error":
{"status": ..., "message": ...}}``. Either way the output is kept in ``$TIFFIN_HOME/envs/.logs/KEY.log``.

``POST /environments/-/prune`` removes the built environments nothing uses (:mod:`tiffin.environments.usage`);
``GET /environments/-/built`` lists them. ``-`` is no asset name (those start with a letter or digit), so these
paths never shadow a registered environment's. Every route needs the admin token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import IO, Any

import pydantic
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import StreamingResponse

from tiffin.assets.resolve import asset_reference, inline_assets
from tiffin.environments.builder import ENVS_DIR_ENV, MARKER, envs_dir, prune
from tiffin.environments.runtime import describe, prepare, prune_runtime_copies, runtime_key
from tiffin.environments.sources import deployment_environment
from tiffin.environments.spec import EnvironmentSpec
from tiffin.environments.usage import (
    ACTIVE_JOB_STATUSES,
    built_environments,
    deployment_environment_spec,
    describe_built,
    environments_in_use,
    read_marker,
)
from tiffin.errors import ConflictError, SpecError, TiffinError, http_status
from tiffin.specs import Environment
from tiffin.specs.problems import refuse_unknown, translate_validation_error
from tiffin.store import Store

from .operations import Operation

__all__ = ["ENVIRONMENT_OPERATIONS", "ENVIRONMENT_SCHEMAS", "NDJSON", "EnvironmentHandlers"]

log = logging.getLogger("tiffin.api")

NDJSON = "application/x-ndjson"
HEARTBEAT_S = 30.0
"""How long a streamed build may say nothing before the server sends ``{"waiting": SECONDS}``: uv resolving or
building a wheel can be quiet for minutes, and a client can then tell a slow build from a dead connection."""

ENVIRONMENT_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/environments/-/build",
        "build_environment",
        "Build the environment of a deployment spec (online or batch) or of an environment (inline, or a "
        "registered or curated reference) under $TIFFIN_HOME/envs, as the deployment's replicas would; reused "
        "when built already. With `Accept: application/x-ndjson`, uv's output streams as it comes, one JSON "
        'object a line ({"log": LINE}, {"waiting": SECONDS}), ending with {"result": ...} or {"error": ...}.',
        body="EnvironmentBuild",
        returns="BuiltEnvironment",
    ),
    Operation(
        "POST",
        "/environments/-/prune",
        "prune_environments",
        "Remove the built environments no online or batch deployment, queued or running batch job, or live "
        "process uses (one being built is left alone); with dry_run, only say which. 409 for a TIFFIN_ENVS_DIR "
        "other homes may share, unless shared.",
        body="EnvironmentPrune",
        returns="PrunedEnvironments",
    ),
    Operation(
        "GET",
        "/environments/-/built",
        "list_built_environments",
        "The environments built under $TIFFIN_HOME/envs, from their markers.",
        returns="BuiltEnvironmentList",
    ),
)
"""The built-environment routes, documented by :func:`tiffin.api.openapi.openapi_document` with the others."""

_STRINGS = {"type": "array", "items": {"type": "string"}}
_NULLABLE_STRING = {"type": ["string", "null"]}
_BUILT = {
    "type": "object",
    "required": ["key", "path", "size_bytes"],
    "properties": {
        "key": {"type": "string"},
        "path": {"type": "string"},
        "python": _NULLABLE_STRING,
        "source": _NULLABLE_STRING,
        "built_at": _NULLABLE_STRING,
        "size_bytes": {"type": "integer", "minimum": 0},
    },
}

ENVIRONMENT_SCHEMAS: dict[str, dict[str, Any]] = {
    "EnvironmentBuild": {
        "type": "object",
        "description": "Exactly one of `deployment` (an online or batch deployment in Azure's YAML shape, local "
        "paths absolute; `kind` says which, online by default) and `environment` (an environment in Azure's "
        "YAML shape with `conda_file` a path on the server's machine or the conda mapping, or a reference: "
        "azureml:NAME:VERSION, azureml:NAME@latest, a curated azureml://registries/azureml/... URI).",
        "additionalProperties": False,
        "properties": {
            "deployment": {"type": "object"},
            "kind": {"type": "string", "enum": ["online", "batch"], "default": "online"},
            "environment": {"type": ["object", "string"]},
        },
    },
    "BuiltEnvironment": {
        "type": "object",
        "description": "The environment built (or found built). `key` null: what was given runs in tiffin's own "
        "environment, and nothing was built (`notes` says why).",
        "required": ["key", "reused"],
        "properties": {
            "key": _NULLABLE_STRING,
            "path": _NULLABLE_STRING,
            "python": _NULLABLE_STRING,
            "interpreter": _NULLABLE_STRING,
            "source": {"type": "string"},
            "requirements": _STRINGS,
            "skipped": _STRINGS,
            "notes": _STRINGS,
            "reused": {"type": "boolean"},
            "seconds": {"type": "number", "minimum": 0},
            "log": _NULLABLE_STRING,
        },
    },
    "EnvironmentPrune": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "dry_run": {"type": "boolean", "default": False},
            "shared": {
                "type": "boolean",
                "default": False,
                "description": "Prune a TIFFIN_ENVS_DIR other homes may share (409 without it).",
            },
        },
    },
    "PrunedEnvironments": {
        "type": "object",
        "required": ["dry_run", "envs_dir", "shared", "removed", "kept", "unresolved", "freed_bytes"],
        "properties": {
            "dry_run": {"type": "boolean"},
            "envs_dir": {"type": "string"},
            "shared": {"type": "boolean", "description": "The folder is TIFFIN_ENVS_DIR, not $TIFFIN_HOME/envs."},
            "removed": {"type": "array", "items": _BUILT, "description": "Removed (with dry_run: would be)."},
            "kept": {
                "type": "array",
                "items": {**_BUILT, "properties": {**_BUILT["properties"], "used_by": _STRINGS}},
            },
            "unresolved": {
                "type": "array",
                "description": "Deployments and jobs whose environment cannot be resolved any more: they keep none.",
                "items": {
                    "type": "object",
                    "properties": {"user": {"type": "string"}, "message": {"type": "string"}},
                },
            },
            "freed_bytes": {"type": "integer", "minimum": 0},
        },
    },
    "BuiltEnvironmentList": {"type": "array", "items": _BUILT},
}

Handler = Callable[[Request], Awaitable[Any]]
JsonBody = Callable[..., Awaitable[dict[str, Any]]]
_BUILD_FIELDS = frozenset({"deployment", "kind", "environment"})


class EnvironmentHandlers:
    """One coroutine per built-environment operation (named as in :data:`ENVIRONMENT_OPERATIONS`)."""

    def __init__(self, store: Store, home: Path, json_body: JsonBody) -> None:
        self.store = store
        self.home = home
        self._json_body = json_body

    def handler(self, op: Operation) -> Handler:
        """The coroutine serving ``op``."""
        handler: Handler = getattr(self, op.name)
        return handler

    async def build_environment(self, request: Request) -> Any:
        body = await self._json_body(request)
        spec, what = await run_in_threadpool(self.resolve, body)
        if spec is None:
            return _own_environment(what)
        events = _BuildEvents(asyncio.get_running_loop())
        threading.Thread(target=self._build, args=(spec, events), name="tiffin-env-build", daemon=True).start()
        if NDJSON in request.headers.get("accept", ""):
            return StreamingResponse(_ndjson(events), media_type=NDJSON)
        while True:
            kind, value = await events.queue.get()
            if kind == "result":
                return value
            if kind == "error":
                raise value

    async def prune_environments(self, request: Request) -> Any:
        body = await self._json_body(request, empty={})
        unknown = sorted(set(body) - {"dry_run", "shared"})
        if unknown:
            raise SpecError("is not a prune setting; they are dry_run and shared (true or false)", field=unknown[0])
        for field in ("dry_run", "shared"):
            if not isinstance(body.get(field, False), bool):
                raise SpecError(f"must be true or false, not {body[field]!r}", field=field)
        dry_run, shared = body.get("dry_run", False), body.get("shared", False)
        return await run_in_threadpool(lambda: self.prune(dry_run, shared=shared))

    async def list_built_environments(self, request: Request) -> Any:
        return await run_in_threadpool(lambda: [describe_built(folder) for folder in built_environments(self.home)])

    # --- the work, in threads ------------------------------------------------------------------------

    def resolve(self, body: Mapping[str, Any]) -> tuple[EnvironmentSpec | None, str]:
        """The environment ``body`` (an ``EnvironmentBuild``) names, and what it is, for messages; None: tiffin's
        own. :class:`SpecError` (422) naming the field for what cannot be resolved."""
        unknown = sorted(set(body) - _BUILD_FIELDS)
        if unknown:
            raise SpecError("is not a build field; give deployment (with kind) or environment", field=unknown[0])
        given = [field for field in ("deployment", "environment") if field in body]
        if len(given) != 1:
            raise SpecError(
                "give exactly one of deployment (a deployment spec, with kind online or batch) and environment "
                f"(an environment spec or reference); got {' and '.join(given) or 'neither'}",
                field="deployment" if given else "environment",
            )
        if "deployment" in body:
            return self._of_deployment(body["deployment"], body.get("kind", "online"))
        if "kind" in body:
            raise SpecError(
                "goes with deployment: an environment given alone is built whatever runs in it", field="kind"
            )
        return self._of_environment(body["environment"])

    def _of_deployment(self, deployment: Any, kind: Any) -> tuple[EnvironmentSpec | None, str]:
        if kind not in ("online", "batch"):
            raise SpecError(f"must be online or batch, not {kind!r}", field="kind")
        if not isinstance(deployment, Mapping):
            raise SpecError("must be a deployment spec (a JSON object in Azure's YAML shape)", field="deployment")
        name = deployment.get("name")
        if not isinstance(name, str) or not name:
            raise SpecError("is missing: a deployment spec names its deployment", field="deployment.name")
        endpoint = deployment.get("endpoint_name")
        spec = deployment_environment_spec(
            deployment, kind, self.store, name=name, endpoint=endpoint if isinstance(endpoint, str) else None
        )
        return spec, f"{kind} deployment '{name}'"

    def _of_environment(self, environment: Any) -> tuple[EnvironmentSpec | None, str]:
        owner = "the build request"
        if isinstance(environment, str):
            reference = asset_reference(environment, "environment", "environment")
            if reference is None:
                raise SpecError(
                    f"{environment!r} is no environment reference; give azureml:NAME:VERSION, azureml:NAME@latest, "
                    "a curated azureml://registries/azureml/environments/NAME/labels/latest, or the environment's spec",
                    field="environment",
                )
            inlined = inline_assets(self.store, {"environment": environment})["environment"]
            return deployment_environment(inlined, owner=owner), f"environment {environment}"
        if not isinstance(environment, Mapping):
            raise SpecError("must be an environment spec or a reference", field="environment")
        data = dict(environment)
        data.pop("$schema", None)  # an environment YAML's, sent as it is
        try:
            spec = Environment.model_validate(data)
        except pydantic.ValidationError as exc:
            raise translate_validation_error(exc, "environment", data) from None
        refuse_unknown(spec, "environment", data)
        named = f"environment '{spec.name}'" if spec.name else "the environment given"
        return deployment_environment(spec, owner=owner), named

    def _build(self, spec: EnvironmentSpec, events: _BuildEvents) -> None:
        """Build ``spec`` (in a thread of its own), reporting to ``events``."""
        try:
            events.send("result", self.build(spec, events))
        except TiffinError as exc:
            events.send("error", exc)
        except Exception as exc:  # a bug: the traceback in the server log, the client told where to look
            log.error("building an environment failed unexpectedly", exc_info=exc)
            events.send("error", exc)

    def build(self, spec: EnvironmentSpec, out: _BuildEvents) -> dict[str, Any]:
        """Build ``spec`` (or find it built), its output to the environment's log and to ``out``; the answer."""
        key = runtime_key(spec)
        root = envs_dir(self.home)
        reused = (root / key / MARKER).is_file()
        log_path = root / ".logs" / f"{key}.log"
        log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        started = time.monotonic()
        with open(log_path, "a", encoding="utf-8") as out.file:  # uv's output to the log and to the client
            describe(spec, "environment build", out)
            prepared = prepare(spec, self.home, log=out)
        out.file = None  # closed: nothing more goes to the log
        marker = read_marker(prepared.path)
        return {
            "key": prepared.key,
            "path": str(prepared.path),
            "python": (marker.get("interpreter") or {}).get("version"),
            "interpreter": str(prepared.python),
            "source": spec.source,
            "requirements": list(spec.requirements),
            "skipped": list(spec.skipped),
            "notes": list(spec.notes),
            "reused": reused,
            "seconds": round(time.monotonic() - started, 3),
            "log": str(log_path),
        }

    def prune(self, dry_run: bool, *, shared: bool = False) -> dict[str, Any]:
        """Remove (``dry_run``: list) the built environments nothing uses; what was removed and kept, and why.

        A folder other than ``$TIFFIN_HOME/envs`` (``TIFFIN_ENVS_DIR``) may be shared by other homes, whose stored
        deployments this server cannot see (their running processes it can): pruning it takes ``shared``.
        """
        root = envs_dir(self.home)
        own = root.resolve() == (self.home / "envs").resolve()
        if not own and not dry_run and not shared:
            raise ConflictError(
                f"built environments are in {root} ({ENVS_DIR_ENV}), which other servers or homes may share: this "
                "server knows only its own deployments (and the processes running anywhere), so it would remove "
                "environments the others' stopped deployments use, to be built again when they start; pass --shared "
                "(shared: true) to prune it all the same, or --dry-run to see what would go"
            )
        jobs = [job for status in sorted(ACTIVE_JOB_STATUSES) for job in self.store.list_jobs(status=status)]
        deployments = self.store.list_deployments()
        if not dry_run:
            # Idle spare batch workers of environments no stored deployment or job uses (their deployment was
            # deleted) are not a use: stopped first, so the live-process check below does not keep the environment.
            from tiffin.batch.pool import stop_spares

            wanted = environments_in_use(deployments, jobs, self.store).keys
            stop_spares(lambda python: _env_key(python, root) not in wanted)
        usage = environments_in_use(deployments, jobs, self.store, envs=root)
        built = {folder.name: describe_built(folder) for folder in built_environments(self.home)}
        kept = [{**built[key], "used_by": usage.users[key]} for key in sorted(built) if key in usage.keys]
        unused = [key for key in sorted(built) if key not in usage.keys]
        if dry_run:
            removed = unused
        else:
            removed = [key for key in prune(self.home, usage.keys) if key in built]
            for key in removed:
                (root / ".logs" / f"{key}.log").unlink(missing_ok=True)
        gone = [built[key] for key in removed]
        copies = prune_runtime_copies(self.home, dry_run=dry_run)
        return {
            "dry_run": dry_run,
            "envs_dir": str(root),
            "shared": not own,
            "removed": gone,
            "kept": kept,
            "unresolved": usage.unresolved,
            "freed_bytes": sum(item["size_bytes"] for item in gone),
            "runtime_copies_removed": copies,
        }


def _env_key(python: str, root: Path) -> str | None:
    """The key of the built environment under ``root`` that interpreter path ``python`` lies in; None if none."""
    try:
        return Path(python).relative_to(root).parts[0]
    except (ValueError, IndexError):
        return None


# --- streaming -------------------------------------------------------------------------------------------


class _BuildEvents:
    """What a build thread reports to the request's coroutine: ``("log", line)``, then ``("result", answer)``
    or ``("error", exception)``. Also the text stream :func:`prepare` writes uv's output to."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.file: IO[str] | None = None  # the build's log file, written too
        self._partial = ""

    def send(self, kind: str, value: Any) -> None:
        # RuntimeError: the server stopped meanwhile (its loop is closed), and nobody is listening.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))

    def write(self, text: str) -> int:
        if self.file is not None:
            self.file.write(text)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self.send("log", line)
        return len(text)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()


async def _ndjson(events: _BuildEvents) -> AsyncIterator[bytes]:
    started = time.monotonic()
    while True:
        try:
            kind, value = await asyncio.wait_for(events.queue.get(), HEARTBEAT_S)
        except TimeoutError:
            yield _line({"waiting": round(time.monotonic() - started)})
            continue
        if kind == "log":
            yield _line({"log": value})
        elif kind == "result":
            yield _line({"result": value})
            return
        else:
            message = value.message if isinstance(value, TiffinError) else (
                f"internal error while building ({type(value).__name__}); see the server log"
            )  # fmt: skip
            yield _line({"error": {"status": http_status(value), "message": message}})
            return


def _line(value: Any) -> bytes:
    return json.dumps(value).encode() + b"\n"


def _own_environment(what: str) -> dict[str, Any]:
    """The answer for what runs in tiffin's own environment: nothing to build."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    return {
        "key": None,
        "path": None,
        "python": python,
        "interpreter": sys.executable,
        "source": what,
        "requirements": [],
        "skipped": [],
        "notes": [
            f"{what} declares no environment tiffin builds (no conda_file, no curated environment, no MLflow "
            "model's environment; a Triton model or a server of its own): it runs in tiffin's own environment"
        ],
        "reused": False,
        "seconds": 0.0,
        "log": None,
    }
