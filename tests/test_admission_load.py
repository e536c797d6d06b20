"""The admission's load area (requests holding or waiting for a slot, integrated over time): the autoscaler's
average concurrency between two samples (tiffin.gateway.limits.Admission.load_area)."""

from __future__ import annotations

import asyncio

import pytest

from tiffin.errors import CapacityError
from tiffin.gateway.limits import Admission


def test_a_request_held_for_a_while_adds_its_seconds():
    async def run() -> float:
        admission = Admission("blue", 2)
        before = admission.load_area()
        await admission.acquire(1)
        await asyncio.sleep(0.05)
        admission.release()
        await asyncio.sleep(0.05)  # nothing in flight: nothing added
        return admission.load_area() - before

    assert asyncio.run(run()) == pytest.approx(0.05, abs=0.02)


def test_waiting_counts_as_load_too_and_a_wait_that_runs_out_stops_counting():
    async def run() -> tuple[float, float]:
        admission = Admission("blue", 0)  # no replica: requests wait (scaled to zero, or starting)
        before = admission.load_area()
        with pytest.raises(CapacityError):
            await admission.acquire(0.05)
        waited = admission.load_area() - before
        await asyncio.sleep(0.05)
        return waited, admission.load_area() - before

    waited, later = asyncio.run(run())
    assert waited == pytest.approx(0.05, abs=0.02)
    assert later == pytest.approx(waited, abs=0.005)


def test_two_at_once_count_twice_and_a_mirror_slot_counts():
    async def run() -> float:
        admission = Admission("blue", 3)
        before = admission.load_area()
        await admission.acquire(1)
        await admission.acquire(1)
        admission.take()
        await asyncio.sleep(0.05)
        for _ in range(3):
            admission.release()
        return admission.load_area() - before

    assert asyncio.run(run()) == pytest.approx(0.15, abs=0.05)
