"""The pure parts of guarded rollouts: guard decisions, step traffic, option parsing, answer agreement."""

from __future__ import annotations

import pytest

from tiffin.errors import SpecError
from tiffin.rollout.agreement import MAX_COMPARED_BYTES, AgreementCheck, answers_agree
from tiffin.rollout.plan import (
    ADVANCE,
    CONTINUE,
    HOLD,
    ROLL_BACK,
    Guards,
    Reading,
    decide,
    parse_duration,
    parse_percent,
    parse_steps,
    step_traffic,
)

GUARDS = Guards(max_error_rate=0.01, max_p99_ratio=1.5, min_requests=100)
HEALTHY = Reading(1000, 0, 10.0)


def test_nothing_is_judged_before_min_requests():
    assert decide(Reading(99, 99, 500.0), HEALTHY, GUARDS, False).action == CONTINUE
    held = decide(Reading(99, 99, 500.0), HEALTHY, GUARDS, True)
    assert held.action == HOLD and "99" in held.reason


def test_error_rate_rolls_back_before_the_interval_ends():
    decision = decide(Reading(100, 10, 10.0), HEALTHY, GUARDS, False)
    assert decision.action == ROLL_BACK
    assert "10.00%" in decision.reason and "10 of 100" in decision.reason and "1.00%" in decision.reason
    assert decide(Reading(100, 1, 10.0), HEALTHY, GUARDS, False).action == CONTINUE  # 1% is the limit, kept


def test_p99_ratio_is_judged_at_the_end_of_the_step():
    slow = Reading(100, 0, 20.0)
    assert decide(slow, HEALTHY, GUARDS, False).action == CONTINUE
    decision = decide(slow, HEALTHY, GUARDS, True)
    assert decision.action == ROLL_BACK and "2.00x" in decision.reason
    assert decide(Reading(100, 0, 15.0), HEALTHY, GUARDS, True).action == ADVANCE
    # No reading of the current deployment (it served nothing): the ratio cannot be judged, so it is not.
    assert decide(slow, Reading(0, 0, None), GUARDS, True).action == ADVANCE


def test_step_traffic_shares_the_rest_in_proportion():
    assert step_traffic({"blue": 100}, "green", 5) == {"blue": 95, "green": 5}
    assert step_traffic({"blue": 100, "green": 0}, "green", 100) == {"blue": 0, "green": 100}
    split = step_traffic({"a": 50, "b": 50}, "c", 25)
    assert split == {"a": 38, "b": 37, "c": 25} and sum(split.values()) == 100
    assert sum(step_traffic({"a": 33, "b": 33, "c": 34}, "d", 10).values()) == 100


@pytest.mark.parametrize("bad", ["", "5,x", "5,25", "25,5,100", "0,100", "5,150"])
def test_bad_steps_are_refused(bad: str):
    with pytest.raises(SpecError):
        parse_steps(bad)


def test_parsing_durations_and_percentages():
    assert parse_steps("5, 25,50%,100") == [5, 25, 50, 100]
    assert parse_duration("60s", "x") == 60 and parse_duration("5m", "x") == 300 and parse_duration(2, "x") == 2
    assert parse_duration("500ms", "x") == 0.5
    assert parse_percent("1%", "x") == 0.01 and parse_percent("0.05", "x") == 0.05
    for bad in ("0s", "soon", "-1m"):
        with pytest.raises(SpecError):
            parse_duration(bad, "x")
    with pytest.raises(SpecError):
        parse_percent("150%", "x")


def test_answers_agree_bytes_or_json_within_tolerance():
    assert answers_agree(b"abc", b"abc", 0)
    assert answers_agree(b'{"y": [1.0, 2.0]}', b'{"y":[1.0,2.0000000001]}', 1e-6)
    assert not answers_agree(b'{"y": [1.0, 2.0]}', b'{"y": [1.0, 2.001]}', 1e-6)
    assert not answers_agree(b'{"y": [1.0]}', b'{"y": [1.0, 2.0]}', 1e-6)
    assert not answers_agree(b'{"y": true}', b'{"y": 1}', 1e-6)
    assert not answers_agree(b"not json", b"not json!", 1e-6)


def test_agreement_report_counts_not_bodies():
    check = AgreementCheck("green", 1e-6)
    check.record((200, b'{"y": 1}', 0.010), 200, b'{"y": 1.0}', 0.020)
    check.record((200, b'{"y": 1}', 0.010), 200, b'{"y": 2}', 0.020)
    check.record((200, b'{"y": 1}', 0.010), 500, b"boom", 0.020)
    check.record((200, None, 0.010), 200, b"x", 0.020)  # the primary's body was too large to keep
    check.record((200, b"x", 0.010), 200, b"x" * (MAX_COMPARED_BYTES + 1), 0.020)
    check.record((200, b"x", 0.010), None, None, 0.020)  # the copy got no answer
    report = check.report()
    assert report["compared"] == 3 and report["equal"] == 1 and report["differing"] == 2
    assert report["skipped"] == 3 and report["agreement"] == pytest.approx(1 / 3, abs=1e-6)
    assert report["errors"] == {"primary": 0, "mirror": 2, "delta": 2}
    assert report["latency_ms"]["delta"]["p50"] == pytest.approx(10.0)
    assert "x" not in str(report)
    assert report["by_deployment"] == {}  # no answering deployment named


def test_agreement_report_per_deployment_that_answered():
    check = AgreementCheck("green", 1e-6)
    check.record((200, b'{"y": 1}', 0.030), 200, b'{"y": 1}', 0.020, "blue")
    check.record((200, b'{"y": 1}', 0.010), 200, b'{"y": 3}', 0.020, "teal")
    check.record((503, b"busy", 0.001), 200, b'{"y": 1}', 0.020, "teal")
    report = check.report()
    assert report["compared"] == 3 and report["equal"] == 1
    by = report["by_deployment"]
    assert by.keys() == {"blue", "teal"}
    assert by["blue"]["compared"] == 1 and by["blue"]["agreement"] == 1.0
    assert by["blue"]["latency_ms"]["delta"]["p50"] == pytest.approx(-10.0)
    assert by["teal"]["compared"] == 2 and by["teal"]["differing"] == 2 and by["teal"]["agreement"] == 0.0
    assert by["teal"]["errors"] == {"primary": 1, "mirror": 0, "delta": -1}


@pytest.mark.parametrize("bad", [5, {"a": 1}, None, [5, "x"]])
def test_steps_of_the_wrong_type_are_refused(bad: object):
    with pytest.raises(SpecError):
        parse_steps(bad)  # type: ignore[arg-type]
