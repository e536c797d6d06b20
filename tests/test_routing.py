"""The routing policy, exhaustively: pure functions, fixed draws, milliseconds."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from tiffin.errors import NotFoundError, SpecError, UnavailableError
from tiffin.routing import DeploymentRoute, EndpointRoute, Replica, check_traffic, decide, pick_replica


def endpoint(traffic, mirror=None, names=("blue", "green", "red")) -> EndpointRoute:
    return EndpointRoute(
        name="ep",
        traffic=traffic,
        mirror_traffic=mirror or {},
        deployments={n: DeploymentRoute(n) for n in names},
    )


def grid(n: int = 1000):
    return [i / n for i in range(n)]


@pytest.mark.parametrize(
    "traffic",
    [
        {"blue": 100},
        {"blue": 90, "green": 10},
        {"blue": 1, "green": 99},
        {"blue": 33, "green": 33, "red": 34},
        {"blue": 50, "green": 0, "red": 50},
        {"green": 70, "blue": 30},
    ],
)
def test_shares_are_exact_over_a_uniform_grid_of_draws(traffic):
    ep = endpoint(traffic)
    counts = Counter(decide(ep, None, d, 0.99).deployment for d in grid())
    assert counts == Counter({n: p * 10 for n, p in traffic.items() if p})


def test_bands_are_laid_out_in_name_order_so_a_seeded_draw_is_reproducible():
    ep = endpoint({"green": 10, "blue": 90})
    assert decide(ep, None, 0.0, 0.5).deployment == "blue"
    assert decide(ep, None, 0.8999, 0.5).deployment == "blue"
    assert decide(ep, None, 0.9, 0.5).deployment == "green"
    assert decide(ep, None, 0.999999, 0.5).deployment == "green"


def test_no_live_traffic_is_503_that_says_how_to_fix_it():
    for traffic in ({}, {"blue": 0, "green": 0}):
        with pytest.raises(UnavailableError, match=r"--traffic DEPLOYMENT=100"):
            decide(endpoint(traffic), None, 0.5, 0.5)


def test_pin_header_reaches_a_deployment_with_zero_traffic_and_is_not_mirrored():
    ep = endpoint({"blue": 100}, mirror={"green": 50})
    decision = decide(ep, "red", 0.1, 0.0)
    assert decision.deployment == "red" and decision.mirror is None and decision.pinned
    # Pinned even when the endpoint has no live traffic at all.
    assert decide(endpoint({}), "green", 0.5, 0.5).deployment == "green"


def test_pin_to_an_unknown_deployment_is_404_listing_the_known_ones():
    with pytest.raises(NotFoundError, match=r"'purple'.*blue, green, red"):
        decide(endpoint({"blue": 100}), "purple", 0.5, 0.5)


def test_mirror_share_is_exact_and_independent_of_the_live_draw():
    ep = endpoint({"blue": 100}, mirror={"green": 10})
    mirrored = sum(decide(ep, None, 0.5, d).mirror == "green" for d in grid())
    assert mirrored == 100
    # Every live draw gets the same mirror decision for a given mirror draw.
    assert {decide(ep, None, d, 0.05).mirror for d in grid(50)} == {"green"}
    assert {decide(ep, None, d, 0.10).mirror for d in grid(50)} == {None}


def test_zero_mirror_share_never_mirrors():
    ep = endpoint({"blue": 100}, mirror={"green": 0})
    assert all(decide(ep, None, 0.5, d).mirror is None for d in grid(100))


def replicas(n: int) -> tuple[Replica, ...]:
    return tuple(Replica(f"r{i}", f"http://127.0.0.1:{9000 + i}") for i in range(n))


def test_pick_replica_single_and_empty():
    (only,) = replicas(1)
    assert pick_replica([only], {}, 7, 3) is only
    with pytest.raises(IndexError):
        pick_replica([], {}, 0, 0)


def test_pick_replica_compares_two_distinct_replicas_and_takes_the_less_loaded():
    for n in range(2, 6):
        pool = replicas(n)
        for first, second in itertools.product(range(3 * n), repeat=2):
            a = pool[first % n]
            chosen_idle = pick_replica(pool, {a.id: 5}, first, second)
            # a is busy and the other candidate is idle, whichever it is: never pick the busy one.
            assert chosen_idle is not a
            # With equal load the first candidate wins (ties need no extra randomness).
            assert pick_replica(pool, {}, first, second) is a


def test_pick_replica_spreads_over_all_replicas():
    pool = replicas(4)
    seen = {pick_replica(pool, {}, f, s).id for f in range(4) for s in range(3)}
    assert seen == {r.id for r in pool}


@pytest.mark.parametrize(
    ("traffic", "mirror", "message"),
    [
        ({"blue": 90}, {}, r"add up to 100, or all be 0 \(got 90\)"),
        ({"blue": 90, "green": 20}, {}, r"got 110"),
        ({"purple": 100}, {}, r"'purple' does not exist.*blue, green, red"),
        ({"blue": 101}, {}, r"whole percentage"),
        ({"blue": -1, "green": 101}, {}, r"whole percentage"),
        ({"blue": 100}, {"green": 51}, r"at most 50"),
        ({"blue": 100}, {"green": 10, "red": 10}, r"one deployment only"),
        ({"blue": 90, "green": 10}, {"green": 10}, r"green get live traffic"),
        ({"blue": 100}, {"purple": 10}, r"'purple' does not exist"),
        ({"blue": 99.5, "green": 0.5}, {}, r"whole percentage"),
        ({"blue": True}, {}, r"whole percentage"),
    ],
)
def test_check_traffic_names_the_broken_rule(traffic, mirror, message):
    with pytest.raises(SpecError, match=message):
        check_traffic(traffic, mirror, {"blue", "green", "red"})


@pytest.mark.parametrize(
    ("traffic", "mirror"),
    [
        ({}, {}),
        ({"blue": 0}, {}),
        ({"blue": 100}, {}),
        ({"blue": 60, "green": 40}, {}),
        ({"blue": 100}, {"green": 50}),
        ({"blue": 100, "green": 0}, {"green": 20}),
        ({}, {"red": 10}),
    ],
)
def test_check_traffic_accepts_azures_valid_maps(traffic, mirror):
    check_traffic(traffic, mirror, {"blue", "green", "red"})


def test_check_traffic_names_the_field():
    with pytest.raises(SpecError) as info:
        check_traffic({"blue": 100}, {"green": 60}, {"blue", "green"})
    assert info.value.field == "mirror_traffic"


def test_parse_cpu_list():
    from tiffin.config import parse_cpu_list
    from tiffin.errors import TiffinError

    assert parse_cpu_list("1-3,5") == {1, 2, 3, 5}
    assert parse_cpu_list("0") == {0}
    for bad in ("", "a", "1-", "-2", "1,,2"):
        with pytest.raises(TiffinError, match="not valid"):
            parse_cpu_list(bad)


# The spec (a YAML file, a PATCH body) and the traffic route apply one set of rules: every map one accepts the
# other accepts, and every map one refuses the other refuses naming the same field.
AGREEMENT = [
    ({"blue": 100}, {"blue": 0, "green": 10}),  # issue 11: accepted by the route, refused by the spec
    ({"blue": 100, "green": 0}, {"green": 0}),  # Azure's way of turning mirroring off
    ({"blue": 100}, {"green": 51}),  # the spec had no 50% cap
    ({"blue": 100}, {"green": 10, "red": 10}),
    ({"blue": 90, "green": 10}, {"green": 10}),
    ({"blue": 90}, {}),
    ({}, {"red": 10}),
]


@pytest.mark.parametrize(("traffic", "mirror"), AGREEMENT)
def test_the_spec_and_the_route_agree(traffic, mirror):
    from tiffin.specs import OnlineEndpoint, parse_spec

    def outcome(check):
        try:
            check()
        except SpecError as exc:
            return exc.field.split(".")[0] if exc.field else None
        return "ok"

    spec = outcome(lambda: parse_spec({"name": "ep", "traffic": traffic, "mirror_traffic": mirror}, OnlineEndpoint))
    route = outcome(lambda: check_traffic(traffic, mirror, {"blue", "green", "red"}))
    assert spec == route
