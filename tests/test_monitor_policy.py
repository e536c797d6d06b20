"""tiffin.autoscale.monitor: az monitor autoscale's conditions, rules, profiles and their evaluation (pure, ms)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tiffin.autoscale.monitor import (
    active_profile,
    evaluate,
    parse_condition,
    parse_duration,
    parse_scale,
    profile_spec,
    rule_spec,
)
from tiffin.errors import SpecError

# A Wednesday noon UTC; the Saturday after it.
WEDNESDAY = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SATURDAY = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def setting(*profiles: dict, **extra: object) -> dict:
    return {"name": "s", "enabled": True, "profiles": list(profiles), **extra}


def how_to_default() -> dict:
    """The default profile Azure's how-to builds: 2..5, CPU > 70 out 2, CPU < 25 in 1, latency > 70 out 1."""
    return profile_spec(
        "default",
        minimum=2,
        maximum=5,
        default=2,
        rules=[
            rule_spec("CpuUtilizationPercentage > 70 avg 5m", ["out", "2"]),
            rule_spec("CpuUtilizationPercentage < 25 avg 5m", ["in", "1"]),
            rule_spec("RequestLatency > 70 avg 5m", ["out", "1"], resource="/x/onlineEndpoints/e"),
        ],
    )


def metrics(**values: float | None):
    seen: list[tuple[str, str, float]] = []

    def metric(name: str, aggregation: str, window: float) -> float | None:
        seen.append((name, aggregation, window))
        return values.get(name)

    metric.seen = seen  # type: ignore[attr-defined]
    return metric


def test_condition_parses_to_azures_metric_trigger() -> None:
    trigger = parse_condition("CpuUtilizationPercentage > 70 avg 5m")
    assert trigger["metricName"] == "CpuUtilizationPercentage"
    assert trigger["operator"] == "GreaterThan"
    assert trigger["threshold"] == 70
    assert trigger["timeAggregation"] == "Average"
    assert trigger["timeWindow"] == "PT5M"
    assert parse_condition("RequestLatency <= 12.5 max 1h30m")["timeWindow"] == "PT1H30M"
    assert parse_condition("RequestsPerMinute >= 100 total 30s")["timeAggregation"] == "Total"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("CpuUtilizationPercentage > 70", "METRIC {==,!=,>,>=,<,<=} THRESHOLD"),
        ("Bogus > 70 avg 5m", "unknown metric"),
        ("CpuUtilizationPercentage => 70 avg 5m", "operator"),
        ("CpuUtilizationPercentage > high avg 5m", "not a number"),
        ("CpuUtilizationPercentage > 70 mean 5m", "aggregation"),
        ("CpuUtilizationPercentage > 70 avg soon", "not a duration"),
    ],
)
def test_bad_condition_names_the_accepted_form(text: str, named: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_condition(text)
    assert named in str(caught.value)


def test_scale_forms() -> None:
    assert parse_scale(["out", "2"]) == {"direction": "Increase", "type": "ChangeCount", "value": "2"}
    assert parse_scale("in 1")["direction"] == "Decrease"
    assert parse_scale("out 50%")["type"] == "PercentChangeCount"
    assert parse_scale("to 4") == {"direction": "None", "type": "ExactCount", "value": "4"}
    for bad in ("up 2", "out", "out 0", "to 5%", "in x"):
        with pytest.raises(SpecError, match="out N, in N"):
            parse_scale(bad)


def test_rule_cooldown_defaults_to_five_minutes_as_az() -> None:
    assert rule_spec("RequestsPerMinute > 5 avg 1m", "out 1")["scaleAction"]["cooldown"] == "PT5M"
    assert rule_spec("RequestsPerMinute > 5 avg 1m", "out 1", cooldown="30s")["scaleAction"]["cooldown"] == "PT30S"
    assert parse_duration("PT1M30S") == timedelta(seconds=90)


def test_counts_must_be_ordered() -> None:
    with pytest.raises(SpecError, match="--min-count"):
        profile_spec("p", minimum=3, maximum=5, default=2)
    with pytest.raises(SpecError, match="--max-count"):
        profile_spec("p", minimum=1, maximum=2, default=3)


def test_weekend_profile_is_active_on_saturday_in_its_time_zone() -> None:
    weekend = profile_spec(
        "weekend-profile",
        minimum=2,
        maximum=2,
        default=2,
        recurrence=["week", "sat", "sun"],
        timezone="Pacific Standard Time",
    )
    assert weekend["recurrence"]["schedule"]["days"] == ["Saturday", "Sunday"]
    spec = setting(how_to_default(), weekend)
    assert active_profile(spec, SATURDAY)["name"] == "weekend-profile"
    assert active_profile(spec, WEDNESDAY)["name"] == "default"
    # Saturday 03:00 UTC is still Friday in Los Angeles; Monday 03:00 UTC is still Sunday there.
    assert active_profile(spec, datetime(2026, 12, 5, 3, 0, tzinfo=UTC))["name"] == "default"
    assert active_profile(spec, datetime(2026, 12, 7, 3, 0, tzinfo=UTC))["name"] == "weekend-profile"


def test_fixed_date_profile_wins_over_recurring() -> None:
    holiday = profile_spec("holiday", minimum=4, maximum=8, default=4, start="2026-12-05", end="2026-12-06")
    weekend = profile_spec("weekend", minimum=2, maximum=2, default=2, recurrence=["week", "sat"])
    spec = setting(how_to_default(), weekend, holiday)
    assert active_profile(spec, SATURDAY)["name"] == "holiday"
    assert evaluate(spec, metrics(), 2, SATURDAY)[0] == 4  # below the holiday's minimum


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(SpecError, match="time zone"):
        profile_spec("p", minimum=1, maximum=1, default=1, recurrence=["week", "sat"], timezone="Mars Standard Time")
    with pytest.raises(SpecError, match="not a day"):
        profile_spec("p", minimum=1, maximum=1, default=1, recurrence=["week", "caturday"])
    with pytest.raises(SpecError, match="--start and --end"):
        profile_spec("p", minimum=1, maximum=1, default=1, start="2026-12-05")


def test_any_scale_out_rule_scales_out_and_the_largest_wins() -> None:
    spec = setting(how_to_default())
    assert evaluate(spec, metrics(CpuUtilizationPercentage=80, RequestLatency=10), 2, WEDNESDAY)[0] == 4
    count, reason = evaluate(spec, metrics(CpuUtilizationPercentage=50, RequestLatency=90), 2, WEDNESDAY)
    assert count == 3
    assert "RequestLatency 90 > 70" in reason
    # Both fire: out 2 beats out 1; the maximum is never passed.
    assert evaluate(spec, metrics(CpuUtilizationPercentage=90, RequestLatency=90), 4, WEDNESDAY)[0] == 5
    assert evaluate(spec, metrics(CpuUtilizationPercentage=90), 5, WEDNESDAY)[0] == 5


def test_scale_in_needs_every_scale_in_rule() -> None:
    two_in = profile_spec(
        "default",
        minimum=1,
        maximum=5,
        default=1,
        rules=[
            rule_spec("CpuUtilizationPercentage < 25 avg 5m", "in 1"),
            rule_spec("RequestsPerMinute < 10 avg 5m", "in 2"),
        ],
    )
    spec = setting(two_in)
    assert evaluate(spec, metrics(CpuUtilizationPercentage=10, RequestsPerMinute=50), 4, WEDNESDAY)[0] == 4
    # Both fire: the most cautious (largest resulting count) wins, as Azure does.
    count, reason = evaluate(spec, metrics(CpuUtilizationPercentage=10, RequestsPerMinute=5), 4, WEDNESDAY)
    assert count == 3
    assert "scale in to 3" in reason


def test_minimum_holds_on_scale_in_and_counts_outside_bounds_are_brought_in() -> None:
    spec = setting(how_to_default())
    assert evaluate(spec, metrics(CpuUtilizationPercentage=5, RequestLatency=1), 2, WEDNESDAY)[0] == 2
    assert evaluate(spec, metrics(CpuUtilizationPercentage=5, RequestLatency=1), 1, WEDNESDAY) == (
        2,
        "profile 'default' (2..5): 1 is below the minimum",
    )
    assert evaluate(spec, metrics(), 9, WEDNESDAY)[0] == 5


def test_flapping_guard_keeps_per_instance_load_below_the_scale_out_threshold() -> None:
    spec = setting(how_to_default())
    # 3 instances at 24% CPU: on 2 they would be at 36%, below 70: scale in.
    assert evaluate(spec, metrics(CpuUtilizationPercentage=24, RequestLatency=1), 3, WEDNESDAY)[0] == 2
    flappy = profile_spec(
        "default",
        minimum=1,
        maximum=5,
        default=1,
        rules=[
            rule_spec("CpuUtilizationPercentage > 40 avg 5m", "out 1"),
            rule_spec("CpuUtilizationPercentage < 30 avg 5m", "in 1"),
        ],
    )
    # 2 instances at 25%: one instance would be at 50%, above 40: Azure skips the scale-in.
    count, reason = evaluate(setting(flappy), metrics(CpuUtilizationPercentage=25), 2, WEDNESDAY)
    assert (count, "flapping" in reason) == (2, True)


def test_cooldown_holds_back_a_rule_after_a_scale_action() -> None:
    last = WEDNESDAY - timedelta(minutes=2)
    spec = setting(how_to_default(), lastScaleTime=last.isoformat())
    count, reason = evaluate(spec, metrics(CpuUtilizationPercentage=90), 2, WEDNESDAY)
    assert (count, "cooldown" in reason) == (2, True)
    assert evaluate(spec, metrics(CpuUtilizationPercentage=90), 2, WEDNESDAY + timedelta(minutes=4))[0] == 4


def test_no_metric_data_keeps_the_count_but_not_below_default() -> None:
    spec = setting(profile_spec("default", minimum=1, maximum=5, default=3, rules=how_to_default()["rules"]))
    assert evaluate(spec, metrics(), 4, WEDNESDAY)[0] == 4
    count, reason = evaluate(spec, metrics(), 1, WEDNESDAY)
    assert (count, "no metric data" in reason) == (3, True)


def test_profile_without_rules_sets_default_and_disabled_does_nothing() -> None:
    weekend = profile_spec("weekend-profile", minimum=2, maximum=2, default=2, recurrence=["week", "sat", "sun"])
    spec = setting(how_to_default(), weekend)
    assert evaluate(spec, metrics(CpuUtilizationPercentage=99), 2, SATURDAY)[0] == 2
    assert evaluate({**spec, "enabled": False}, metrics(CpuUtilizationPercentage=99), 3, WEDNESDAY) == (
        3,
        "autoscale setting is disabled",
    )


def test_metric_is_asked_with_short_aggregation_and_window_seconds() -> None:
    metric = metrics(CpuUtilizationPercentage=50)
    evaluate(setting(how_to_default()), metric, 2, WEDNESDAY)
    assert ("CpuUtilizationPercentage", "avg", 300.0) in metric.seen  # type: ignore[attr-defined]


def test_percent_and_exact_scale_actions() -> None:
    rules = [rule_spec("RequestsPerMinute > 100 avg 1m", "out 50%"), rule_spec("RequestsPerMinute < 1 avg 1m", "to 1")]
    spec = setting(profile_spec("default", minimum=1, maximum=10, default=1, rules=rules))
    assert evaluate(spec, metrics(RequestsPerMinute=500), 3, WEDNESDAY)[0] == 5  # 50% of 3 rounded up
    assert evaluate(spec, metrics(RequestsPerMinute=0), 3, WEDNESDAY)[0] == 1


def test_scale_in_to_zero_with_a_minimum_of_zero() -> None:
    rules = [
        rule_spec("CpuUtilizationPercentage > 70 avg 5m", "out 1"),
        rule_spec("CpuUtilizationPercentage < 5 avg 5m", "in 1"),
    ]
    spec = setting(profile_spec("default", minimum=0, maximum=3, default=0, rules=rules))
    assert evaluate(spec, metrics(CpuUtilizationPercentage=1), 1, WEDNESDAY)[0] == 0


def test_recurrence_hours_in_an_iana_zone() -> None:
    office = profile_spec(
        "office", minimum=3, maximum=6, default=3, recurrence=["week", "mon", "tue", "wed", "thu", "fri"],
        start="09:00", end="17:00", timezone="Europe/Paris",
    )  # fmt: skip
    spec = setting(how_to_default(), office)
    # 12:00 UTC is 13:00 in Paris in December: office hours; 17:30 UTC is 18:30 there: not.
    assert active_profile(spec, WEDNESDAY)["name"] == "office"
    assert active_profile(spec, WEDNESDAY.replace(hour=17, minute=30))["name"] == "default"
    assert active_profile(spec, WEDNESDAY.replace(hour=7, minute=59))["name"] == "default"  # 08:59 in Paris
    assert active_profile(spec, SATURDAY)["name"] == "default"
