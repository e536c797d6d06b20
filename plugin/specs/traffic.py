"""Azure ML's rules for an online endpoint's ``traffic`` and ``mirror_traffic``, in one pure function.

The endpoint spec's validator (a YAML file, a PATCH body) and the control plane's traffic route (with the
store, which also knows the endpoint's deployments) both ask :func:`traffic_problem`, so a map one of them
accepts is never refused by the other later. Azure's rules (how-to-safely-rollout-online-endpoints):

* each share is a whole percentage from 0 to 100; live shares add up to 100, or are all 0;
* traffic is mirrored to one deployment only, at most 50%, and a deployment gets live or mirrored traffic,
  not both. A 0% mirror entry mirrors nothing: Azure turns mirroring off with ``--mirror-traffic green=0``,
  so such an entry never counts as a second mirrored deployment.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from tiffin.errors import SpecError

__all__ = ["MAX_MIRROR_PERCENT", "TrafficProblem", "check_traffic", "traffic_problem"]

MAX_MIRROR_PERCENT = 50
"""Azure's cap on mirrored traffic, there to spare the endpoint's bandwidth."""


@dataclass(frozen=True, slots=True)
class TrafficProblem:
    """The first broken rule: the field it is about (``traffic``, ``mirror_traffic``) and what to change."""

    field: str
    message: str


def _is_percent(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and 0 <= value <= 100


def traffic_problem(
    traffic: Mapping[str, Any], mirror: Mapping[str, Any], deployments: Collection[str] | None = None
) -> TrafficProblem | None:
    """The first way ``traffic`` and ``mirror`` break Azure's rules, or None when they follow them.

    ``deployments`` are the endpoint's deployment names; None skips that check (a spec read from a file does
    not know them).
    """
    for field, shares in (("traffic", traffic), ("mirror_traffic", mirror)):
        for name, percent in shares.items():
            if deployments is not None and name not in deployments:
                known = ", ".join(sorted(deployments)) or "none"
                return TrafficProblem(
                    field,
                    f"deployment '{name}' does not exist on this endpoint (deployments: {known}); "
                    "create it first or remove it from the traffic map",
                )
            if not _is_percent(percent):
                return TrafficProblem(field, f"'{name}' must be a whole percentage from 0 to 100 (got {percent!r})")
    live = sum(traffic.values())
    if live not in (0, 100):
        return TrafficProblem("traffic", f"percentages must add up to 100, or all be 0 (got {live})")
    mirrored = [name for name, percent in mirror.items() if percent > 0]
    if len(mirrored) > 1:
        return TrafficProblem(
            "mirror_traffic",
            f"traffic can be mirrored to one deployment only, not {', '.join(mirrored)}; set the others to 0",
        )
    total = sum(mirror.values())
    if total > MAX_MIRROR_PERCENT:
        return TrafficProblem(
            "mirror_traffic", f"at most {MAX_MIRROR_PERCENT}% of the traffic can be mirrored (got {total})"
        )
    both = sorted(name for name in mirrored if traffic.get(name, 0) > 0)
    if both:
        return TrafficProblem(
            "mirror_traffic",
            f"deployment(s) {', '.join(both)} get live traffic and cannot also receive mirrored traffic",
        )
    return None


def check_traffic(
    traffic: Mapping[str, Any], mirror: Mapping[str, Any], deployments: Collection[str] | None = None
) -> None:
    """Raise :class:`SpecError` naming the field and the broken rule unless :func:`traffic_problem` finds none."""
    problem = traffic_problem(traffic, mirror, deployments)
    if problem is not None:
        raise SpecError(problem.message, field=problem.field)
