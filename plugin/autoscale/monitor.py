"""Azure Monitor autoscale settings, as ``az monitor autoscale`` writes them, and their evaluation (pure).

A setting is the JSON ``az monitor autoscale show`` prints: ``name``, ``enabled``, ``targetResourceUri`` and
``profiles``, each with ``capacity`` (``minimum``/``maximum``/``default``, strings as Azure gives them), ``rules``
(``metricTrigger`` + ``scaleAction``) and an optional ``recurrence`` or ``fixedDate``. This module parses what
users type (``--condition "CpuUtilizationPercentage > 70 avg 5m"``, ``--scale out 2``, ``--recurrence week sat
sun``) into that shape, and :func:`evaluate` decides an instance count from it with Azure's rules:

* the active profile is a fixed-date one covering ``now``, else a recurring one whose day (in its time zone) is
  today, else the default (one with neither);
* a count outside the profile's ``minimum``..``maximum`` is brought inside first;
* scale out when *any* scale-out rule fires (the largest resulting count wins); scale in only when *all* scale-in
  rules fire (the largest, i.e. most cautious, resulting count wins), and not if the projected per-instance load
  after scaling in would fire a scale-out rule (Azure's flapping guard);
* a rule does not act within its ``cooldown`` of the last scale action (``setting["lastScaleTime"]``, an ISO
  time or datetime the caller keeps: the engine sets it when it scales; absent means no recent action);
* with no metric data for any rule, the count is kept but not below the profile's ``default`` (Azure: "if a
  metric isn't available, autoscale uses the default"); a profile without rules sets the count to ``default``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tiffin.errors import SpecError

__all__ = [
    "AGGREGATIONS",
    "METRICS",
    "OPERATORS",
    "active_profile",
    "evaluate",
    "format_duration",
    "names_endpoint",
    "parse_condition",
    "parse_duration",
    "parse_scale",
    "profile_spec",
    "rule_spec",
]

Metric = Callable[[str, str, float], float | None]

#: Metrics a rule may name: Azure's online-deployment and online-endpoint metrics that tiffin measures.
METRICS: dict[str, str] = {
    "CpuUtilizationPercentage": "average CPU use of the deployment's instances, percent of one core",
    "CpuMemoryUtilizationPercentage": "average memory use of the deployment's instances, percent of the machine",
    "RequestLatency": "average time to answer a request, milliseconds",
    "RequestLatency_P50": "median time to answer a request, milliseconds",
    "RequestLatency_P90": "90th percentile time to answer a request, milliseconds",
    "RequestLatency_P95": "95th percentile time to answer a request, milliseconds",
    "RequestLatency_P99": "99th percentile time to answer a request, milliseconds",
    "RequestsPerMinute": "requests answered per minute",
    "ConnectionsActive": "requests in flight",
}
# Metrics averaged over instances: scaling from n to m instances moves them by n/m (the flapping projection).
_PER_INSTANCE = frozenset({"CpuUtilizationPercentage", "CpuMemoryUtilizationPercentage"})

#: az's operators and the names Azure stores them under.
OPERATORS: dict[str, str] = {
    "==": "Equals",
    "!=": "NotEquals",
    ">": "GreaterThan",
    ">=": "GreaterThanOrEqual",
    "<": "LessThan",
    "<=": "LessThanOrEqual",
}
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "Equals": lambda a, b: a == b,
    "NotEquals": lambda a, b: a != b,
    "GreaterThan": lambda a, b: a > b,
    "GreaterThanOrEqual": lambda a, b: a >= b,
    "LessThan": lambda a, b: a < b,
    "LessThanOrEqual": lambda a, b: a <= b,
}
#: az's aggregations and Azure's names for them; the metric callback gets the short name.
AGGREGATIONS: dict[str, str] = {"avg": "Average", "min": "Minimum", "max": "Maximum", "total": "Total"}
_SHORT_AGGREGATION = {long: short for short, long in AGGREGATIONS.items()}

CONDITION_FORM = (
    '"METRIC {==,!=,>,>=,<,<=} THRESHOLD {avg,min,max,total} WINDOW", e.g. "CpuUtilizationPercentage > 70 avg 5m"'
)
SCALE_FORM = "out N, in N, out N%, in N%, or to N (e.g. --scale out 2)"
DEFAULT_COOLDOWN = "PT5M"
"""az's default ``--cooldown`` (5 minutes)."""

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_ISO_DURATION = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")
_DAYS = {"mon": "Monday", "tue": "Tuesday", "wed": "Wednesday", "thu": "Thursday", "fri": "Friday",
         "sat": "Saturday", "sun": "Sunday"}  # fmt: skip
_WEEKDAY = {name: index for index, name in enumerate(_DAYS.values())}
# Azure takes Windows time-zone names; zoneinfo takes IANA ones. The common ones; IANA names work as they are.
_WINDOWS_ZONES = {
    "UTC": "UTC",
    "Pacific Standard Time": "America/Los_Angeles",
    "Mountain Standard Time": "America/Denver",
    "Central Standard Time": "America/Chicago",
    "Eastern Standard Time": "America/New_York",
    "GMT Standard Time": "Europe/London",
    "W. Europe Standard Time": "Europe/Berlin",
    "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest",
    "India Standard Time": "Asia/Kolkata",
    "China Standard Time": "Asia/Shanghai",
    "Tokyo Standard Time": "Asia/Tokyo",
    "AUS Eastern Standard Time": "Australia/Sydney",
}


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """``5m``, ``1h30m``, ``30s``, ``1d`` (az's form) or ISO 8601 ``PT5M`` (Azure's JSON)."""
    text = text.strip()
    match = _DURATION.match(text.lower()) if text else None
    if match and any(match.groups()):
        d, h, m, s = (int(g or 0) for g in match.groups())
        return timedelta(days=d, hours=h, minutes=m, seconds=s)
    iso = _ISO_DURATION.match(text.upper())
    if iso and any(iso.groups()):
        d, h, m = (int(g or 0) for g in iso.groups()[:3])
        return timedelta(days=d, hours=h, minutes=m, seconds=float(iso.group(4) or 0))
    raise SpecError(f"{what} {text!r} is not a duration: use e.g. 5m, 1h30m, 30s or PT5M")


def format_duration(delta: timedelta) -> str:
    """ISO 8601 as Azure stores it: ``PT5M``, ``PT1H30M``, ``PT30S``."""
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (f"{secs}S" if secs else "")
    return out if out != "PT" else "PT0S"


def parse_condition(text: str) -> dict[str, Any]:
    """``"CpuUtilizationPercentage > 70 avg 5m"`` as Azure's ``metricTrigger`` (without ``metricResourceUri``)."""
    parts = text.split()
    if len(parts) != 5:
        raise SpecError(f"condition {text!r} is not of the form {CONDITION_FORM}")
    metric, operator, threshold, aggregation, window = parts
    if metric not in METRICS:
        raise SpecError(f"condition {text!r}: unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if operator not in OPERATORS:
        raise SpecError(
            f"condition {text!r}: operator {operator!r} is not one of {', '.join(OPERATORS)}; form: {CONDITION_FORM}"
        )
    try:
        value = float(threshold)
    except ValueError:
        raise SpecError(
            f"condition {text!r}: threshold {threshold!r} is not a number; form: {CONDITION_FORM}"
        ) from None
    if aggregation.lower() not in AGGREGATIONS:
        raise SpecError(
            f"condition {text!r}: aggregation {aggregation!r} is not one of {', '.join(AGGREGATIONS)}; "
            f"form: {CONDITION_FORM}"
        )
    span = parse_duration(window, f"condition {text!r}: window")
    if span <= timedelta(0):
        raise SpecError(f"condition {text!r}: the window must be longer than 0; form: {CONDITION_FORM}")
    long_aggregation = AGGREGATIONS[aggregation.lower()]
    return {
        "metricName": metric,
        "operator": OPERATORS[operator],
        "threshold": int(value) if value.is_integer() else value,
        "statistic": "Average",
        "timeAggregation": long_aggregation,
        "timeGrain": "PT1M",
        "timeWindow": format_duration(span),
    }


def parse_scale(words: list[str] | str) -> dict[str, Any]:
    """``out 2`` / ``in 1`` / ``out 20%`` / ``to 5`` as Azure's ``scaleAction`` (without ``cooldown``)."""
    parts = words.split() if isinstance(words, str) else list(words)
    if len(parts) != 2 or parts[0] not in ("out", "in", "to"):
        raise SpecError(f"--scale {' '.join(parts)!r} is not one of: {SCALE_FORM}")
    how, amount = parts
    percent = amount.endswith("%")
    digits = amount[:-1] if percent else amount
    if not digits.isdigit() or (percent and how == "to") or (how != "to" and int(digits) == 0):
        raise SpecError(
            f"--scale {how} {amount!r}: the amount must be a whole number above 0; use one of: {SCALE_FORM}"
        )
    if how == "to":
        return {"direction": "None", "type": "ExactCount", "value": digits}
    return {
        "direction": "Increase" if how == "out" else "Decrease",
        "type": "PercentChangeCount" if percent else "ChangeCount",
        "value": digits,
    }


def rule_spec(
    condition: str, scale: list[str] | str, *, cooldown: str | int = 5, resource: str | None = None
) -> dict[str, Any]:
    """One rule as Azure stores it, from ``rule create``'s ``--condition``, ``--scale`` and ``--cooldown``."""
    trigger = parse_condition(condition)
    if resource:
        trigger["metricResourceUri"] = resource
    action = parse_scale(scale)
    # az's --cooldown is a number of minutes; a duration (30s, PT2M) is taken too.
    text = str(cooldown).strip()
    action["cooldown"] = format_duration(parse_duration(f"{text}m" if text.isdigit() else text, "--cooldown"))
    return {"metricTrigger": trigger, "scaleAction": action}


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(_WINDOWS_ZONES.get(name, name))
    except (ZoneInfoNotFoundError, ValueError):
        known = ", ".join(repr(zone) for zone in _WINDOWS_ZONES)
        raise SpecError(f"time zone {name!r} is unknown; use an IANA name (Europe/Paris) or one of {known}") from None


def _capacity(minimum: int, maximum: int, default: int) -> dict[str, str]:
    if not 0 <= minimum <= default <= maximum:
        raise SpecError(
            f"counts must satisfy 0 <= --min-count ({minimum}) <= --count ({default}) <= --max-count ({maximum})"
        )
    return {"minimum": str(minimum), "maximum": str(maximum), "default": str(default)}


def profile_spec(
    name: str,
    *,
    minimum: int,
    maximum: int,
    default: int,
    recurrence: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    timezone: str | None = None,
    rules: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A profile as Azure stores it. ``recurrence`` is az's ``week sat sun`` (``start``/``end`` then ``HH:MM``
    times of day it is active between, default all day); without it, ``start`` and ``end`` make a fixed-date
    profile (``2026-12-24`` or ``2026-12-24T18:00``); with neither it is a default profile."""
    profile: dict[str, Any] = {
        "name": name,
        "capacity": _capacity(minimum, maximum, default),
        "rules": list(rules or []),
        "recurrence": None,
        "fixedDate": None,
    }
    zone_name = timezone or "UTC"
    _zone(zone_name)
    if recurrence:
        if recurrence[0].lower() != "week" or len(recurrence) < 2:
            raise SpecError(
                f"--recurrence {' '.join(recurrence)!r}: use 'week' and days, e.g. --recurrence week sat sun"
            )
        days = []
        for day in recurrence[1:]:
            if day.lower()[:3] not in _DAYS:
                raise SpecError(f"--recurrence: {day!r} is not a day; use mon tue wed thu fri sat sun")
            days.append(_DAYS[day.lower()[:3]])
        hours, minutes = _time_of_day(start or "00:00")
        profile["recurrence"] = {
            "frequency": "Week",
            "schedule": {"days": days, "hours": [hours], "minutes": [minutes], "timeZone": zone_name},
        }
        if end:
            profile["recurrence"]["schedule"]["end"] = "{:02d}:{:02d}".format(*_time_of_day(end))
    elif start or end:
        if not (start and end):
            raise SpecError("a fixed-date profile needs both --start and --end (e.g. 2026-12-24 2026-12-26)")
        begin, finish = _date_time(start, "--start"), _date_time(end, "--end")
        if finish <= begin:
            raise SpecError(f"--end {end!r} must be after --start {start!r}")
        profile["fixedDate"] = {"start": begin.isoformat(), "end": finish.isoformat(), "timeZone": zone_name}
    return profile


def _time_of_day(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise SpecError(f"time of day {text!r} is not HH:MM (e.g. 09:00)")
    return int(match.group(1)), int(match.group(2))


def _date_time(text: str, what: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise SpecError(f"{what} {text!r} is not a date or date and time (2026-12-24 or 2026-12-24T18:00)") from None


def active_profile(setting: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    """The profile Azure would use at ``now``: fixed-date first, then recurring, then the default one."""
    profiles = list(setting.get("profiles") or [])
    for profile in profiles:
        fixed = profile.get("fixedDate")
        if fixed:
            zone = _zone(fixed.get("timeZone") or "UTC")
            begin, finish = (_aware(datetime.fromisoformat(fixed[k]), zone) for k in ("start", "end"))
            if begin <= now < finish:
                return profile
    for profile in profiles:
        recurrence = profile.get("recurrence")
        if recurrence and _recurs_now(recurrence.get("schedule") or {}, now):
            return profile
    for profile in profiles:
        if not profile.get("fixedDate") and not profile.get("recurrence"):
            return profile
    return None


def _aware(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.replace(tzinfo=zone) if moment.tzinfo is None else moment


def _recurs_now(schedule: Mapping[str, Any], now: datetime) -> bool:
    local = now.astimezone(_zone(schedule.get("timeZone") or "UTC"))
    if local.weekday() not in {_WEEKDAY[day] for day in schedule.get("days", []) if day in _WEEKDAY}:
        return False
    begin = (int((schedule.get("hours") or [0])[0]), int((schedule.get("minutes") or [0])[0]))
    end = _time_of_day(schedule["end"]) if schedule.get("end") else (24, 0)
    return begin <= (local.hour, local.minute) < end


_ENDPOINT_ID = re.compile(r"/onlineEndpoints/[^/]+/?$", re.IGNORECASE)


def names_endpoint(resource: object) -> bool:
    """Whether a rule's ``metricResourceUri`` is an online endpoint's id (not one of its deployments')."""
    return isinstance(resource, str) and _ENDPOINT_ID.search(resource) is not None


def _bounds(profile: Mapping[str, Any]) -> tuple[int, int, int]:
    capacity = profile.get("capacity") or {}
    return int(capacity["minimum"]), int(capacity["maximum"]), int(capacity["default"])


def _target(action: Mapping[str, Any], current: int) -> int:
    value = int(action["value"])
    if action["type"] == "ExactCount":
        return value
    step = value if action["type"] == "ChangeCount" else max(1, -(-current * value // 100))  # percent, rounded up
    return current + step if action["direction"] == "Increase" else current - step


def _last_scale(setting: Mapping[str, Any]) -> datetime | None:
    last = setting.get("lastScaleTime")
    if last is None or isinstance(last, datetime):
        return last
    return datetime.fromisoformat(str(last))


def evaluate(
    setting: Mapping[str, Any], metric: Metric, current: int, now: datetime, endpoint_metric: Metric | None = None
) -> tuple[int, str]:
    """The instance count the setting asks for at ``now`` and why (for the deployment's event log).

    ``metric(name, aggregation, window_seconds)`` returns a metric of :data:`METRICS` aggregated (``avg``,
    ``min``, ``max``, ``total``) over the window, or None without enough data; ``endpoint_metric`` the same of the
    whole endpoint, for a rule whose ``metricResourceUri`` is an online endpoint's id (Azure's how-to scales a
    deployment on its endpoint's RequestLatency). The result equals ``current`` when nothing is to change; the
    reason always says which profile and rule decided.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if setting.get("enabled") is False:
        return current, "autoscale setting is disabled"
    profile = active_profile(setting, now)
    if profile is None:
        return current, "autoscale setting has no default profile"
    minimum, maximum, default = _bounds(profile)
    where = f"profile '{profile.get('name')}' ({minimum}..{maximum})"
    if current < minimum:
        return minimum, f"{where}: {current} is below the minimum"
    if current > maximum:
        return maximum, f"{where}: {current} is above the maximum"
    rules = list(profile.get("rules") or [])
    if not rules:
        return default, f"{where}: no rules, default count {default}"
    last = _last_scale(setting)
    readings: dict[int, float | None] = {}
    for index, rule in enumerate(rules):
        trigger = rule["metricTrigger"]
        window = parse_duration(trigger["timeWindow"]).total_seconds()
        source = endpoint_metric if endpoint_metric and names_endpoint(trigger.get("metricResourceUri")) else metric
        readings[index] = source(trigger["metricName"], _SHORT_AGGREGATION[trigger["timeAggregation"]], window)
    if all(value is None for value in readings.values()):
        keep = min(maximum, max(current, default))
        return keep, f"{where}: no metric data yet, keeping {keep} (not below the default {default})"

    def fires(index: int, value: float | None) -> bool:
        trigger = rules[index]["metricTrigger"]
        return value is not None and _COMPARE[trigger["operator"]](value, float(trigger["threshold"]))

    def cooling(index: int) -> bool:
        cooldown = parse_duration(rules[index]["scaleAction"].get("cooldown", DEFAULT_COOLDOWN))
        return last is not None and now - last < cooldown

    def describe(index: int) -> str:
        trigger = rules[index]["metricTrigger"]
        value = readings[index]
        shown = "no data" if value is None else f"{value:g}"
        symbol = {long: short for short, long in OPERATORS.items()}[trigger["operator"]]
        return f"{trigger['metricName']} {shown} {symbol} {float(trigger['threshold']):g}"

    out_rules = [i for i, r in enumerate(rules) if _is_out(r["scaleAction"], current)]
    in_rules = [i for i, r in enumerate(rules) if i not in out_rules]
    fired_out = [i for i in out_rules if fires(i, readings[i])]
    if fired_out:
        ready = [i for i in fired_out if not cooling(i)]
        if not ready:
            return current, f"{where}: {describe(fired_out[0])} but in cooldown since the last scale action"
        best = max(ready, key=lambda i: _target(rules[i]["scaleAction"], current))
        desired = min(maximum, _target(rules[best]["scaleAction"], current))
        if desired <= current:
            return current, f"{where}: {describe(best)}, already at the maximum {maximum}"
        return desired, f"{where}: scale out to {desired}: {describe(best)}"
    if in_rules and all(fires(i, readings[i]) for i in in_rules):
        if any(cooling(i) for i in in_rules):
            return current, f"{where}: scale-in rules met but in cooldown since the last scale action"
        best = max(in_rules, key=lambda i: _target(rules[i]["scaleAction"], current))
        desired = max(minimum, _target(rules[best]["scaleAction"], current))
        if desired >= current:
            return current, f"{where}: {describe(best)}, already at the minimum {minimum}"
        # Azure's flapping guard: the per-instance load on fewer instances must not fire a scale-out rule. With
        # none left (a minimum of 0) there is no per-instance load to project.
        while 0 < desired < current and any(
            fires(i, readings[i] * current / desired)
            for i in out_rules
            if readings[i] is not None and rules[i]["metricTrigger"]["metricName"] in _PER_INSTANCE
        ):
            desired += 1
        if desired >= current:
            return current, f"{where}: scale-in skipped: fewer instances would fire a scale-out rule (flapping)"
        reasons = "; ".join(describe(i) for i in in_rules)
        return desired, f"{where}: scale in to {desired}: {reasons}"
    return current, f"{where}: no rule fired"


def _is_out(action: Mapping[str, Any], current: int) -> bool:
    if action["type"] == "ExactCount":
        return int(action["value"]) > current
    return action["direction"] == "Increase"
