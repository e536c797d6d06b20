"""The routing policy of an online endpoint: pure functions over an immutable routing table.

Given an endpoint's live traffic split, its mirror split, the request's pin header and random draws,
:func:`decide` names the deployment that answers and the one (if any) that gets a fire-and-forget copy;
:func:`pick_replica` chooses among a deployment's ready replicas. No I/O and no clock: the gateway passes
``random.random()`` draws in, tests pass fixed ones, so every decision is reproducible.

Azure ML's rules, kept exactly (:func:`check_traffic`, re-exported here from :mod:`tiffin.specs.traffic`,
the one place they are written, which the endpoint spec's validator asks too):

* live traffic is whole percentages adding up to 100, or all 0 (the endpoint then refuses requests that
  name no deployment, with 503);
* the ``azureml-model-deployment`` header (or ``x-tiffin-deployment``) pins a request to a deployment,
  even one at 0%; pinned requests are not mirrored;
* ``mirror_traffic`` copies at most 50% of the requests to one deployment that has no live traffic (a 0%
  entry mirrors nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tiffin.auth import Credentials
from tiffin.errors import NotFoundError, UnavailableError
from tiffin.specs.traffic import check_traffic

# Defined beside the V2 translation, which replicas import (routing's own imports are not for replicas).
from tiffin.v2 import V2_MODEL_HEADER, V2_UPSTREAM_HEADER

__all__ = [
    "PIN_HEADERS",
    "V2_MODEL_HEADER",
    "V2_UPSTREAM_HEADER",
    "Decision",
    "DeploymentRoute",
    "EndpointRoute",
    "Replica",
    "RoutingTable",
    "check_traffic",
    "decide",
    "pick_replica",
]

PIN_HEADERS = ("azureml-model-deployment", "x-tiffin-deployment")
"""Request headers that pin a request to a deployment, Azure's first."""


@dataclass(frozen=True, slots=True)
class Replica:
    """One ready process of a deployment, reachable at ``url``: ``unix:/path/to.sock`` as the supervisor
    starts replicas, or ``http://127.0.0.1:PORT`` (a replica run by hand, tests).

    A replica of another ``tiffin serve`` sharing the store has that server's URL, a ``prefix`` and ``headers``.

    ``v2_url`` is set when the replica fronts a model server that speaks the Open Inference Protocol itself
    (Triton): V2 requests go straight there, the endpoint's and deployment's names standing for ``v2_model``.
    """

    id: str
    url: str
    v2_url: str | None = None
    v2_model: str | None = None
    prefix: bytes = b""
    """Put before every request target: a replica on another node is reached through that node's peer route
    (``/_tiffin/peer/ENDPOINT/DEPLOYMENT``, see :mod:`tiffin.gateway.peers`)."""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    """Sent with every request to it (the peer route's credential)."""

    @property
    def remote(self) -> bool:
        """Whether it runs on another node (reached through that node's gateway)."""
        return bool(self.prefix)


@dataclass(frozen=True, slots=True)
class DeploymentRoute:
    """What the gateway needs to know of one deployment: its ready replicas, whether more are on their way,
    and its request settings."""

    name: str
    replicas: tuple[Replica, ...] = ()
    request_timeout_ms: int = 5000
    max_concurrent_requests_per_instance: int = 1
    max_queue_wait_ms: int = 500
    replacing: bool = False
    """A replica is starting or due to restart, or the autoscaler holds the deployment at zero (one starts when a
    request comes): with none ready, requests wait for it (up to ``max_queue_wait_ms``) rather than being
    answered 503 at once."""
    traced: bool = False
    """Its YAML says ``app_insights_enabled: true``: the gateway traces the requests it answers when the server
    has an exporter (:mod:`tiffin.telemetry.tracing`)."""


@dataclass(frozen=True, slots=True)
class EndpointRoute:
    """One online endpoint as the gateway sees it."""

    name: str
    credentials: Credentials = field(default_factory=lambda: Credentials("key"))
    traffic: Mapping[str, int] = field(default_factory=dict)
    mirror_traffic: Mapping[str, int] = field(default_factory=dict)
    deployments: Mapping[str, DeploymentRoute] = field(default_factory=dict)
    live: tuple[tuple[str, int], ...] = ()
    """``traffic`` as (deployment, cumulative percent) in name order, positive shares only; derived."""

    def __post_init__(self) -> None:
        cumulative, running = [], 0
        for name in sorted(self.traffic):
            if self.traffic[name] > 0:
                running += self.traffic[name]
                cumulative.append((name, running))
        object.__setattr__(self, "live", tuple(cumulative))


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """Every online endpoint, by name. Replaced whole on each change, never mutated, so a request
    holds one consistent snapshot from start to end while the next table is being built."""

    endpoints: Mapping[str, EndpointRoute] = field(default_factory=dict)
    generation: int = 0

    def ready_count(self, endpoint: str, deployment: str) -> int | None:
        """How many replicas of ``endpoint``/``deployment`` take requests now, on every server (None: not routed)."""
        route = self.endpoints.get(endpoint)
        found = route.deployments.get(deployment) if route is not None else None
        return None if found is None else len(found.replicas)


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a request goes: the deployment that answers, and the one that gets a mirror copy."""

    deployment: str
    mirror: str | None = None
    pinned: bool = False


def decide(endpoint: EndpointRoute, pinned: str | None, draw: float, mirror_draw: float) -> Decision:
    """Choose the deployment for one request.

    ``pinned`` is the value of a pin header (None or "" when absent). ``draw`` and ``mirror_draw`` are
    independent uniform numbers in [0, 1). A deployment with share ``p`` is chosen for draws in a band of
    width ``p/100`` (bands laid out in name order), so over many requests each gets its share; the mirror
    copy is made when ``mirror_draw < share/100``.

    Raises NotFoundError for a pin naming no deployment of the endpoint, UnavailableError when the
    endpoint has no live traffic and the request is not pinned.
    """
    if pinned:
        if pinned not in endpoint.deployments:
            known = ", ".join(sorted(endpoint.deployments)) or "none"
            raise NotFoundError(
                f"deployment '{pinned}' (from the azureml-model-deployment header) does not exist in endpoint "
                f"'{endpoint.name}'; its deployments are: {known}"
            )
        return Decision(pinned, None, pinned=True)
    if not endpoint.live:
        raise UnavailableError(
            f"endpoint '{endpoint.name}' sends no traffic to any deployment; give one traffic with "
            f"`tiffin online-endpoint update -n {endpoint.name} --traffic DEPLOYMENT=100`, or pin a request "
            "with the azureml-model-deployment header"
        )
    point = draw * 100.0
    target = endpoint.live[-1][0]  # draw is < 1, so only rounding can get here
    for name, upper in endpoint.live:
        if point < upper:
            target = name
            break
    mirror = None
    for name, percent in endpoint.mirror_traffic.items():
        if percent > 0 and name != target and mirror_draw * 100.0 < percent:
            mirror = name
    return Decision(target, mirror)


def pick_replica(replicas: Sequence[Replica], in_flight: Mapping[str, int], first: int, second: int) -> Replica:
    """Power of two choices: of two replicas picked at random, the one with fewer requests in flight.

    ``first`` and ``second`` are random integers (any range; reduced modulo the count). Sampling two and
    taking the less loaded one keeps the maximum load within O(log log n) of the mean without looking at
    every replica, and with two replicas it is simply "the less loaded one, ties broken at random".
    """
    if not replicas:
        raise IndexError("no replicas")
    count = len(replicas)
    if count == 1:
        return replicas[0]
    a = replicas[first % count]
    b = replicas[(first + 1 + second % (count - 1)) % count]  # a different replica from a
    return b if in_flight.get(b.id, 0) < in_flight.get(a.id, 0) else a
