"""What ``begin_*`` methods return, shaped like azure-ai-ml's ``LROPoller``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Poller"]

T = TypeVar("T")


class Poller(Generic[T]):
    """A started operation; :meth:`result` waits for its outcome (once) and returns it."""

    def __init__(self, wait: Callable[[], T]) -> None:
        self._wait: Callable[[], T] | None = wait
        self._result: T | None = None

    def result(self) -> T:
        """Wait until the operation is done; its result, or the exception it failed with."""
        if self._wait is not None:
            self._result = self._wait()
            self._wait = None
        return self._result  # type: ignore[return-value]  # set above, T may itself include None

    def wait(self) -> None:
        """Wait until the operation is done."""
        self.result()

    def done(self) -> bool:
        """Whether :meth:`result` has returned already."""
        return self._wait is None

    def status(self) -> str:
        """``"InProgress"`` until :meth:`result` returned, then ``"Succeeded"``."""
        return "Succeeded" if self.done() else "InProgress"
