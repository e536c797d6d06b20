"""The control plane's routes for autoscale settings (``tiffin monitor autoscale``, as ``az monitor autoscale``).

A setting targets one online deployment (``resource``: Azure's deployment id, any subscription and workspace, or
``endpoint_name`` + ``deployment_name``) and is answered in the JSON shape ``az monitor autoscale show`` prints.
Rules and profiles are changed by their own routes, which take az's words (``condition``: ``"CpuUtilizationPercentage
> 70 avg 5m"``, ``scale``: ``"out 2"``) and parse them here, so a bad one is a 422 naming the accepted form whoever
sends it. Every route needs the admin token.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from tiffin.autoscale.monitor import profile_spec, rule_spec
from tiffin.errors import NotFoundError, SpecError
from tiffin.resource_ids import RESOURCE_GROUP, SUBSCRIPTION, online_deployment_id
from tiffin.store import Store
from tiffin.store.autoscale import AutoscaleRecord

from .operations import Operation

__all__ = ["AUTOSCALE_OPERATIONS", "AUTOSCALE_SCHEMAS", "AutoscaleHandlers", "parse_target", "setting_json"]

JsonBody = Callable[[Request], Awaitable[dict[str, Any]]]

_SETTINGS = "/autoscale-settings"
_SETTING = _SETTINGS + "/{name}"

AUTOSCALE_OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", _SETTINGS, "list_autoscale_settings", "List autoscale settings.", returns="AutoscaleList"),
    Operation(
        "POST",
        _SETTINGS,
        "create_autoscale_setting",
        "Create an autoscale setting for an online deployment with a default profile (min, max, default count), "
        "as `az monitor autoscale create`; 409 if the name is taken or the deployment has one.",
        body="AutoscaleCreate",
        returns="AutoscaleSetting",
        status=201,
        write=True,
    ),
    Operation("GET", _SETTING, "get_autoscale_setting", "Show an autoscale setting.", returns="AutoscaleSetting"),
    Operation(
        "PATCH",
        _SETTING,
        "update_autoscale_setting",
        "Change the default profile's counts or enable/disable the setting (`az monitor autoscale update`).",
        body="AutoscaleUpdate",
        returns="AutoscaleSetting",
        write=True,
    ),
    Operation("DELETE", _SETTING, "delete_autoscale_setting", "Delete an autoscale setting.", status=204, write=True),
    Operation(
        "POST",
        _SETTING + "/rules",
        "create_autoscale_rule",
        "Add a rule to a profile (the default one unless `profile` is given), as `az monitor autoscale rule create`.",
        body="AutoscaleRule",
        returns="AutoscaleSetting",
        status=201,
        write=True,
    ),
    Operation(
        "DELETE",
        _SETTING + "/rules/{index}",
        "delete_autoscale_rule",
        "Delete a profile's rule by its 0-based index (`az monitor autoscale rule delete --index`); `*` deletes "
        "them all.",
        returns="AutoscaleSetting",
        write=True,
    ),
    Operation(
        "PUT",
        _SETTING + "/profiles/{profile}",
        "put_autoscale_profile",
        "Create or replace a profile: counts, and a weekly recurrence or fixed dates with a time zone "
        "(`az monitor autoscale profile create`).",
        body="AutoscaleProfile",
        returns="AutoscaleSetting",
        write=True,
    ),
    Operation(
        "DELETE",
        _SETTING + "/profiles/{profile}",
        "delete_autoscale_profile",
        "Delete a profile (`az monitor autoscale profile delete`); the default profile stays.",
        returns="AutoscaleSetting",
        write=True,
    ),
)

_COUNT = {"type": "integer", "minimum": 0}
AUTOSCALE_SCHEMAS: dict[str, dict[str, Any]] = {
    "AutoscaleCreate": {
        "type": "object",
        "description": "`resource` (Azure's online deployment id, .../onlineEndpoints/E/deployments/D) or "
        "`endpoint_name` and `deployment_name`; counts as az's --min-count, --max-count, --count.",
        "required": ["name", "min_count", "max_count", "count"],
        "properties": {
            "name": {"type": "string"},
            "resource": {"type": "string"},
            "endpoint_name": {"type": "string"},
            "deployment_name": {"type": "string"},
            "min_count": _COUNT,
            "max_count": _COUNT,
            "count": _COUNT,
            "enabled": {"type": "boolean", "default": True},
        },
    },
    "AutoscaleUpdate": {
        "type": "object",
        "properties": {"min_count": _COUNT, "max_count": _COUNT, "count": _COUNT, "enabled": {"type": "boolean"}},
    },
    "AutoscaleRule": {
        "type": "object",
        "required": ["condition", "scale"],
        "properties": {
            "condition": {"type": "string", "examples": ["CpuUtilizationPercentage > 70 avg 5m"]},
            "scale": {"type": "string", "examples": ["out 2", "in 1", "out 20%", "to 3"]},
            "cooldown": {"type": "string", "default": "5", "description": "Minutes, or a duration (30s, PT2M)."},
            "resource": {"type": "string", "description": "The endpoint or deployment id the metric is of."},
            "profile": {"type": "string", "default": "default"},
        },
    },
    "AutoscaleProfile": {
        "type": "object",
        "required": ["min_count", "max_count", "count"],
        "properties": {
            "min_count": _COUNT,
            "max_count": _COUNT,
            "count": _COUNT,
            "recurrence": {"type": "string", "examples": ["week sat sun"]},
            "start": {"type": "string"},
            "end": {"type": "string"},
            "timezone": {"type": "string", "examples": ["Pacific Standard Time"]},
            "copy_rules": {"type": "string", "description": "Copy the rules of this profile."},
        },
    },
    "AutoscaleSetting": {
        "type": "object",
        "description": "As `az monitor autoscale show` prints it; `targetExists` is false once the deployment "
        "is deleted (the setting then does nothing).",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "enabled": {"type": "boolean"},
            "targetResourceUri": {"type": "string"},
            "targetExists": {"type": "boolean"},
            "profiles": {"type": "array", "items": {"type": "object"}},
        },
    },
    "AutoscaleList": {"type": "array", "items": {"$ref": "#/components/schemas/AutoscaleSetting"}},
}

_DEPLOYMENT_ID = re.compile(r"/onlineEndpoints/(?P<endpoint>[^/]+)/deployments/(?P<deployment>[^/]+)/?$", re.I)
DEFAULT_PROFILE = "default"
MAX_RULES = 10
"""Rules per profile, Azure's limit."""


def parse_target(body: dict[str, Any]) -> tuple[str, str]:
    """The (endpoint, deployment) a create body names: Azure's deployment id or the two names."""
    resource = body.get("resource")
    if resource:
        match = _DEPLOYMENT_ID.search(str(resource))
        if match is None:
            raise SpecError(
                f"--resource {resource!r} is not an online deployment's id (.../onlineEndpoints/ENDPOINT/"
                "deployments/DEPLOYMENT, as `tiffin online-deployment show --query id -o tsv` prints); or give "
                "--endpoint-name and --name"
            )
        return match["endpoint"], match["deployment"]
    endpoint, deployment = body.get("endpoint_name"), body.get("deployment_name")
    if not (isinstance(endpoint, str) and endpoint and isinstance(deployment, str) and deployment):
        raise SpecError("name the deployment: --resource DEPLOYMENT_ID, or --endpoint-name E and --name D")
    return endpoint, deployment


def setting_id(name: str) -> str:
    """Azure's id of an autoscale setting (microsoft.insights lives beside the workspace's resource group)."""
    group = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    return f"{group}/providers/microsoft.insights/autoscalesettings/{name}"


def setting_json(record: AutoscaleRecord) -> dict[str, Any]:
    """A setting as ``az monitor autoscale show`` prints it."""
    return {
        "id": setting_id(record.name),
        "name": record.name,
        "enabled": record.spec.get("enabled", True),
        "targetResourceUri": online_deployment_id(record.endpoint_name, record.deployment_name),
        "targetExists": record.target_exists,
        "profiles": record.spec.get("profiles", []),
        "notifications": [],
    }


def _int(body: dict[str, Any], key: str, required: bool = True) -> int | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        flag = "--" + key.replace("_", "-")
        raise SpecError(f"{flag} must be a whole number of instances, 0 or more (got {value!r})")
    return value


def _profile(spec: dict[str, Any], name: str) -> dict[str, Any]:
    for profile in spec.get("profiles", []):
        if profile.get("name") == name:
            return profile
    known = ", ".join(p.get("name", "?") for p in spec.get("profiles", []))
    raise NotFoundError(
        f"profile '{name}' not found; this setting has: {known} (`tiffin monitor autoscale profile list`)"
    )


def _words(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise SpecError(f"{what} must be a string such as 'week sat sun'")


class AutoscaleHandlers:
    """One coroutine per autoscale operation over the store."""

    def __init__(self, store: Store, json_body: JsonBody) -> None:
        self.store = store
        self._json_body = json_body

    def handler(self, op: Operation) -> Callable[[Request], Awaitable[Any]]:
        """The coroutine serving ``op`` (one of :data:`AUTOSCALE_OPERATIONS`)."""
        handler: Callable[[Request], Awaitable[Any]] = getattr(self, op.name)
        return handler

    async def list_autoscale_settings(self, request: Request) -> Any:
        records = await run_in_threadpool(self.store.list_autoscale_settings)
        return [setting_json(record) for record in records]

    async def get_autoscale_setting(self, request: Request) -> Any:
        return setting_json(await run_in_threadpool(self.store.get_autoscale_setting, request.path_params["name"]))

    async def create_autoscale_setting(self, request: Request) -> Any:
        body = await self._json_body(request)
        name = body.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}", name):
            raise SpecError("--autoscale-name/--name must start with a letter or digit: letters, digits, _ . -")
        endpoint, deployment = parse_target(body)
        profile = profile_spec(
            DEFAULT_PROFILE,
            minimum=_int(body, "min_count"),
            maximum=_int(body, "max_count"),
            default=_int(body, "count"),
        )  # type: ignore[arg-type]
        spec = {"enabled": bool(body.get("enabled", True)), "profiles": [profile]}
        record = await run_in_threadpool(self.store.create_autoscale_setting, name, endpoint, deployment, spec)
        return setting_json(record)

    async def update_autoscale_setting(self, request: Request) -> Any:
        body = await self._json_body(request)

        def change(spec: dict[str, Any]) -> dict[str, Any]:
            default = _profile(spec, DEFAULT_PROFILE)
            capacity = default["capacity"]
            counts = {
                key: (_int(body, field, required=False) if body.get(field) is not None else int(capacity[key]))
                for key, field in (("minimum", "min_count"), ("maximum", "max_count"), ("default", "count"))
            }
            fresh = profile_spec(DEFAULT_PROFILE, **counts, rules=default.get("rules"))  # type: ignore[arg-type]
            default["capacity"] = fresh["capacity"]
            if "enabled" in body:
                spec["enabled"] = bool(body["enabled"])
            return spec

        return await self._modify(request, change)

    async def delete_autoscale_setting(self, request: Request) -> Any:
        await run_in_threadpool(self.store.delete_autoscale_setting, request.path_params["name"])

    async def create_autoscale_rule(self, request: Request) -> Any:
        body = await self._json_body(request)
        scale = body.get("scale")
        words = isinstance(scale, list) and all(isinstance(word, str) for word in scale)
        if not isinstance(body.get("condition"), str) or not (isinstance(scale, str) or words):
            raise SpecError(
                "a rule needs --condition (e.g. 'CpuUtilizationPercentage > 70 avg 5m') and --scale (e.g. out 2)"
            )
        for field in ("resource", "profile", "cooldown"):
            value = body.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
                raise SpecError(f"'{field}' must be text (e.g. profile 'default', cooldown '5' minutes)")
        rule = rule_spec(
            body["condition"], body["scale"], cooldown=str(body.get("cooldown") or 5), resource=body.get("resource")
        )

        def change(spec: dict[str, Any]) -> dict[str, Any]:
            rules = _profile(spec, str(body.get("profile") or DEFAULT_PROFILE)).setdefault("rules", [])
            if len(rules) >= MAX_RULES:
                raise SpecError(f"a profile has at most {MAX_RULES} rules, as on Azure; delete one first")
            rules.append(rule)
            return spec

        record = await self._modify(request, change)
        return JSONResponse(record, status_code=201)

    async def delete_autoscale_rule(self, request: Request) -> Any:
        index = request.path_params["index"]
        profile_name = request.query_params.get("profile") or DEFAULT_PROFILE

        def change(spec: dict[str, Any]) -> dict[str, Any]:
            profile = _profile(spec, profile_name)
            rules = profile.get("rules", [])
            if index == "*":
                profile["rules"] = []
            elif index.isdigit() and int(index) < len(rules):
                del rules[int(index)]
            else:
                raise NotFoundError(
                    f"rule {index} not found: profile '{profile_name}' has {len(rules)} rules, numbered from 0 "
                    "(`tiffin monitor autoscale rule list`); '*' deletes them all"
                )
            return spec

        return await self._modify(request, change)

    async def put_autoscale_profile(self, request: Request) -> Any:
        body = await self._json_body(request)
        name = request.path_params["profile"]
        recurrence = _words(body["recurrence"], "--recurrence") if body.get("recurrence") else None

        def change(spec: dict[str, Any]) -> dict[str, Any]:
            copied = body.get("copy_rules")
            rules = list(_profile(spec, str(copied)).get("rules", [])) if copied else []
            profile = profile_spec(
                name,
                minimum=_int(body, "min_count"),  # type: ignore[arg-type]
                maximum=_int(body, "max_count"),  # type: ignore[arg-type]
                default=_int(body, "count"),  # type: ignore[arg-type]
                recurrence=recurrence,
                start=body.get("start"),
                end=body.get("end"),
                timezone=body.get("timezone"),
                rules=rules,
            )
            if name == DEFAULT_PROFILE and (profile["recurrence"] or profile["fixedDate"]):
                raise SpecError("the 'default' profile has no schedule; give the scheduled profile another --name")
            profiles = [p for p in spec.get("profiles", []) if p.get("name") != name]
            spec["profiles"] = [*profiles, profile]
            return spec

        return await self._modify(request, change)

    async def delete_autoscale_profile(self, request: Request) -> Any:
        name = request.path_params["profile"]
        if name == DEFAULT_PROFILE:
            raise SpecError(
                "the default profile cannot be deleted; delete the setting with `tiffin monitor autoscale delete`"
            )

        def change(spec: dict[str, Any]) -> dict[str, Any]:
            _profile(spec, name)
            spec["profiles"] = [p for p in spec.get("profiles", []) if p.get("name") != name]
            return spec

        return await self._modify(request, change)

    async def _modify(self, request: Request, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        record = await run_in_threadpool(self.store.modify_autoscale_setting, request.path_params["name"], change)
        return setting_json(record)
