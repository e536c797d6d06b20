"""Helpers shared by the tests; import them with ``from conftest import eventually``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Call ``check`` until it returns a true value without raising AssertionError, and return that value.

    For what a test waits on (a process exits, a copy lands, a probe notices), instead of a sleep long enough
    on a quiet machine: this returns as soon as the condition holds, and waits up to ``timeout`` seconds on a
    busy one. Once time is up, the last AssertionError is raised again (or one saying the value stayed false),
    so a failure shows what was last seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        else:
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"still {value!r} after {timeout:g}s")
        time.sleep(interval)
