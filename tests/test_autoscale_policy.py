"""The autoscale policies (tiffin.autoscale.policy): pure, no clock, no processes."""

from __future__ import annotations

import pytest

from tiffin.autoscale.policy import ConcurrencyPolicy, Readings, bounded, target_utilization
from tiffin.errors import SpecError
from tiffin.specs import OnlineDeployment, TargetConcurrencyScaleSettings, parse_spec


def test_bounded() -> None:
    assert [bounded(n, 1, 3) for n in (0, 1, 2, 3, 9)] == [1, 1, 2, 3, 3]


def test_readings_average_over_window() -> None:
    r = Readings(keep_s=10)
    for t in range(20):
        r.add(float(t), float(t))
    assert r.average(19.0, 2) == 18.5  # samples at 18 and 19
    assert r.average(19.0, 100) == pytest.approx(sum(range(9, 20)) / 11)  # older ones were dropped
    assert Readings(5).average(0.0, 5) is None


def test_target_utilization_is_azures_formula() -> None:
    d = target_utilization(2, 140.0, 70, 1, 10)
    assert d.desired == 4
    assert "ceil(2 * 2.00) = 4" in d.reason
    assert target_utilization(2, 74.0, 70, 1, 10).desired == 2  # within the 10 % tolerance
    assert target_utilization(4, 10.0, 70, 1, 10).desired == 1
    assert target_utilization(2, 700.0, 70, 1, 5).desired == 5  # max never passed
    assert "bounded" in target_utilization(2, 700.0, 70, 1, 5).reason
    assert target_utilization(3, 1.0, 70, 2, 5).desired == 2  # min respected
    assert target_utilization(0, None, 70, 2, 5).desired == 2


def test_target_utilization_scale_down_is_stabilised() -> None:
    d = target_utilization(4, 10.0, 70, 1, 10, recent=[4, 3, 1])
    assert d.desired == 4
    assert "stabilisation" in d.reason
    assert target_utilization(4, 10.0, 70, 1, 10, recent=[2, 1]).desired == 2
    held = target_utilization(4, 10.0, 70, 1, 10, recent=[4])
    assert (held.desired, held.recommended) == (4, 1)  # the window keeps 1, so the hold ends with the window


def test_concurrency_scales_to_in_flight_over_target() -> None:
    p = ConcurrencyPolicy(2, 1, 10, panic_threshold_percentage=1000, scale_down_delay_s=0)
    assert p.decide(0, 1, None, None).desired == 1
    assert p.decide(1, 2, 7.0, 7.0).desired == 4  # ceil(7 / 2)
    assert p.decide(2, 4, 2.0, 2.0).desired == 1


def test_concurrency_bounds_hold() -> None:
    p = ConcurrencyPolicy(1, 2, 3, panic_threshold_percentage=1000, scale_down_delay_s=0)
    assert p.decide(0, 2, 50.0, 50.0).desired == 3
    assert p.decide(100, 3, 0.0, 0.0).desired == 2


def test_concurrency_panics_on_a_burst_and_never_scales_in_while_panicking() -> None:
    p = ConcurrencyPolicy(1, 1, 20, stable_window_s=60, panic_window_s=6, scale_down_delay_s=0)
    d = p.decide(0, 2, 1.0, 8.0)  # the stable window has not seen the burst yet; the panic window has
    assert d.desired == 8
    assert d.reason.startswith("panic")
    assert p.decide(10, 8, 1.0, 1.0).desired == 8  # still panicking: no scale in
    assert p.decide(61, 8, 1.0, 1.0).desired == 1  # 60 s without panic: stable again


def test_concurrency_scale_down_delay_holds() -> None:
    p = ConcurrencyPolicy(1, 1, 10, panic_threshold_percentage=1000, scale_down_delay_s=30)
    assert p.decide(0, 4, 4.0, 4.0).desired == 4
    held = p.decide(10, 4, 1.0, 1.0)
    assert held.desired == 4
    assert "scale-down delay" in held.reason
    assert p.decide(20, 4, 1.0, 1.0).desired == 4
    assert p.decide(31, 4, 1.0, 1.0).desired == 1


def test_concurrency_scale_up_delay_holds() -> None:
    p = ConcurrencyPolicy(1, 1, 10, panic_threshold_percentage=1000, scale_up_delay_s=5)
    assert p.decide(0, 1, 1.0, 1.0).desired == 1
    assert p.decide(1, 1, 3.0, 3.0).desired == 1  # up only once it held for 5 s
    assert p.decide(7, 1, 3.0, 3.0).desired == 3


def test_target_concurrency_spec() -> None:
    spec = parse_spec(
        {
            "name": "blue",
            "endpoint_name": "ep",
            "model": {"path": "."},
            "scale_settings": {"type": "target_concurrency", "min_instances": 1, "max_instances": 4},
        },
        OnlineDeployment,
    ).spec
    scale = spec.scale_settings
    assert isinstance(scale, TargetConcurrencyScaleSettings)
    assert (scale.stable_window, scale.panic_window, scale.target_concurrency_per_instance) == (60, 6, 1.0)
    with pytest.raises(SpecError, match="min_instances"):
        parse_spec(
            {
                "name": "b",
                "endpoint_name": "ep",
                "model": {"path": "."},
                "scale_settings": {"type": "target_concurrency", "min_instances": 5, "max_instances": 4},
            },
            OnlineDeployment,
        )


def test_target_utilization_never_scales_to_zero() -> None:
    """CPU cannot bring back a deployment with no replica (as Kubernetes' HPA, whose minReplicas is at least 1)."""
    d = target_utilization(2, 0.0, 70, 0, 4)
    assert d.desired == 1
    assert target_utilization(0, None, 70, 0, 4).desired == 1


def test_concurrency_scales_to_zero_only_after_a_full_stable_window_and_the_delay() -> None:
    p = ConcurrencyPolicy(2, 0, 2, stable_window_s=10, panic_window_s=2, scale_down_delay_s=5)
    # A fresh deployment (instance_count 1) has no history: zero in flight so far is no reason to go to 0.
    first = p.decide(0, 1, 0.0, 0.0)
    assert first.desired == 1
    assert "stable window" in first.reason
    assert p.decide(9, 1, 0.0, 0.0).desired == 1
    # A full stable window without requests: 0 is recommended, and the scale-down delay holds 1 for 5 s more.
    assert p.decide(10, 1, 0.0, 0.0).desired == 1
    assert p.decide(13, 1, 0.0, 0.0).desired == 1  # the last 1 was recommended at 9
    assert p.decide(14, 1, 0.0, 0.0).desired == 0


def test_concurrency_scales_from_zero_on_a_queued_request() -> None:
    p = ConcurrencyPolicy(2, 0, 3, stable_window_s=10, panic_window_s=2, scale_down_delay_s=5)
    assert p.decide(0, 0, 0.0, 0.0).desired == 0  # at zero and nothing waits: stays at zero
    d = p.decide(1, 0, 0.1, 0.5)  # one request queued at the gateway in one sample of the panic window
    assert d.desired == 1
    assert d.reason.startswith("panic")
    assert p.decide(2, 0, 8.0, 8.0).desired == 3  # a burst at zero goes to what it asks (within max)


def test_concurrency_in_flight_keeps_one_instance() -> None:
    """Any request in flight over the stable window keeps at least one instance (ceil of a positive average)."""
    p = ConcurrencyPolicy(2, 0, 2, stable_window_s=10, panic_window_s=2, scale_down_delay_s=0)
    assert p.decide(0, 1, 0.0, 0.0).desired == 1
    assert p.decide(20, 1, 0.05, 0.0).desired == 1
    assert p.decide(30, 1, 0.0, 0.0).desired == 0
