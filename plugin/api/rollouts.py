"""REST routes of guarded rollouts (admin token): start, show, pause, resume, abort. See docs/rollouts.md.

A handler only writes the rollout's row (compare-and-set); the server's :class:`~tiffin.rollout.driver.
RolloutDriver`, woken by the write, does every traffic change, the ones an abort asks for included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from tiffin.errors import ConflictError, SpecError
from tiffin.rollout.plan import parse_duration, parse_percent, parse_steps
from tiffin.specs.traffic import MAX_MIRROR_PERCENT
from tiffin.store import Store
from tiffin.store.rollouts import ACTIVE_ROLLOUT_STATES, RolloutRecord

from .operations import Operation

__all__ = ["ROLLOUT_OPERATIONS", "ROLLOUT_SCHEMAS", "RolloutHandlers", "rollout_json"]

Handler = Callable[[Request], Awaitable[Any]]
_RO = "/online-endpoints/{name}/rollout"

ROLLOUT_OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        _RO,
        "start_rollout",
        "Start a guarded rollout of the endpoint's traffic to a deployment; 409 while one is in progress.",
        body="RolloutSpec",
        returns="Rollout",
        status=201,
        write=True,
    ),
    Operation(
        "GET",
        _RO,
        "get_rollout",
        "Show the endpoint's rollout (its steps, guard readings, agreement report).",
        returns="Rollout",
    ),
    *(
        Operation(
            "POST",
            f"{_RO}/{action}",
            f"{action}_rollout",
            f"{action.capitalize()} the endpoint's rollout.",
            returns="Rollout",
            write=True,
        )
        for action in ("pause", "resume", "abort")
    ),
)

ROLLOUT_SCHEMAS: dict[str, dict[str, Any]] = {
    "RolloutSpec": {
        "type": "object",
        "required": ["to"],
        "properties": {
            "to": {"type": "string", "description": "The deployment that takes the traffic."},
            "steps": {"type": "string", "description": "Percentages to the new deployment, e.g. 5,25,50,100."},
            "step_interval": {"type": "string", "description": "How long each step is judged, e.g. 60s."},
            "max_error_rate": {"type": "string", "description": "e.g. 1% (or 0.01)."},
            "max_p99_ratio": {"type": "number"},
            "min_requests": {"type": "integer"},
            "mirror": {"type": "integer", "description": "Mirror this percentage first (0: no mirror phase)."},
            "mirror_duration": {"type": "string"},
            "tolerance": {"type": "number"},
        },
    },
    "Rollout": {"type": "object", "additionalProperties": True},
}

_FIELDS = {"to", "steps", "step_interval", "max_error_rate", "max_p99_ratio", "min_requests", "mirror",
           "mirror_duration", "tolerance"}  # fmt: skip


def _number(body: dict[str, Any], field: str, default: float, *, minimum: float = 0) -> float:
    value = body.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise SpecError(f"must be a number (got {value!r})", field=field)
    try:
        number = float(value)
    except ValueError:
        raise SpecError(f"must be a number (got {value!r})", field=field) from None
    if not number >= minimum:
        raise SpecError(f"must be at least {minimum} (got {value!r})", field=field)
    return number


def rollout_spec(body: dict[str, Any]) -> dict[str, Any]:
    """The stored spec of a start request, checked (SpecError names the field)."""
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise SpecError(f"is not a rollout setting; use {', '.join(sorted(_FIELDS))}", field=unknown[0])
    to = body.get("to")
    if not isinstance(to, str) or not to:
        raise SpecError("name the deployment that takes the traffic, e.g. --to green", field="to")
    mirror = _number(body, "mirror", 0)
    if mirror != int(mirror) or mirror > MAX_MIRROR_PERCENT:
        raise SpecError(f"must be a whole percentage from 0 to {MAX_MIRROR_PERCENT} (Azure's cap)", field="mirror")
    min_requests = _number(body, "min_requests", 200, minimum=1)
    if min_requests != int(min_requests):
        raise SpecError("must be a whole number", field="min_requests")
    return {
        "to": to,
        "steps": parse_steps(body.get("steps", "5,25,50,100")),
        "step_interval_s": parse_duration(body.get("step_interval", "60s"), "step_interval"),
        "max_error_rate": parse_percent(body.get("max_error_rate", "1%"), "max_error_rate"),
        "max_p99_ratio": _number(body, "max_p99_ratio", 1.5, minimum=1),
        "min_requests": int(min_requests),
        "mirror": int(mirror),
        "mirror_duration_s": parse_duration(body.get("mirror_duration", "5m"), "mirror_duration"),
        "tolerance": _number(body, "tolerance", 1e-6),
    }


def rollout_json(record: RolloutRecord) -> dict[str, Any]:
    state = {k: v for k, v in record.state.items() if k not in ("owner", "lease_until", "applied")}
    steps = record.spec["steps"]
    step = int(state.pop("step", 0))
    return {
        "endpoint_name": record.endpoint_name,
        "status": record.status,
        "to": record.spec["to"],
        "step": step + 1,
        "percent": steps[min(step, len(steps) - 1)] if record.status != "Mirroring" else 0,
        "spec": record.spec,
        **state,
        "driven_by": record.state.get("owner"),
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }


class RolloutHandlers:
    """The coroutines of :data:`ROLLOUT_OPERATIONS` over one store."""

    def __init__(self, store: Store, json_body: Callable[[Request], Awaitable[dict[str, Any]]]) -> None:
        self.store = store
        self._json_body = json_body

    def handler(self, op: Operation) -> Handler:
        handler: Handler = getattr(self, op.name)
        return handler

    async def start_rollout(self, request: Request) -> Any:
        spec = rollout_spec(await self._json_body(request))
        return await run_in_threadpool(self._start, request.path_params["name"], spec)

    def _start(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        endpoint = self.store.get_endpoint(name, "online")
        deployments = {d.name for d in self.store.list_deployments(name)}
        to = spec["to"]
        if to not in deployments:
            known = ", ".join(sorted(deployments)) or "none"
            raise SpecError(f"deployment '{to}' does not exist on endpoint '{name}' (deployments: {known})", field="to")
        traffic = {k: int(v) for k, v in endpoint.traffic.items()}
        if not any(share for dep, share in traffic.items() if dep != to):
            raise ConflictError(
                f"no other deployment of '{name}' has traffic to shift from; set its traffic first "
                f"(`tiffin online-endpoint update -n {name} --traffic blue=100`)"
            )
        before = {"traffic": traffic, "mirror_traffic": {k: int(v) for k, v in endpoint.mirror_traffic.items()}}
        status = "Mirroring" if spec["mirror"] else "Running"
        record = self.store.start_rollout(name, spec, status, {"before": before, "step": 0, "history": []})
        return rollout_json(record)

    async def get_rollout(self, request: Request) -> Any:
        return rollout_json(await run_in_threadpool(self.store.get_rollout, request.path_params["name"]))

    async def pause_rollout(self, request: Request) -> Any:
        return await run_in_threadpool(self._change, request.path_params["name"], ("Running", "Mirroring"), "Paused")

    async def resume_rollout(self, request: Request) -> Any:
        return await run_in_threadpool(self._change, request.path_params["name"], ("Paused",), None)

    async def abort_rollout(self, request: Request) -> Any:
        allowed = ("Running", "Mirroring", "Paused")
        return await run_in_threadpool(self._change, request.path_params["name"], allowed, "Aborting")

    def _change(self, name: str, allowed: tuple[str, ...], status: str | None) -> dict[str, Any]:
        for _ in range(20):  # the driver writes too: try again on a lost compare-and-set
            record = self.store.get_rollout(name)
            if record.status not in allowed:
                raise ConflictError(
                    f"the rollout of '{name}' is {record.status}; this works on a rollout that is "
                    f"{' or '.join(allowed)}"
                    + ("" if record.status in ACTIVE_ROLLOUT_STATES else "; start a new one with `rollout --to`")
                )
            state = dict(record.state)
            if status == "Paused":
                state["paused_from"] = record.status
                new_status = status
            elif status is None:  # resume: where it was paused, the step's window judged afresh
                new_status = state.pop("paused_from", "Running")
                state["resumed_at"] = record.updated_at.isoformat()
            else:
                new_status = status
                state["reason"] = "aborted by the user"
            written = self.store.write_rollout(name, record.generation, status=new_status, state=state)
            if written is not None:
                return rollout_json(written)
        raise ConflictError(f"the rollout of '{name}' kept changing; try again")
