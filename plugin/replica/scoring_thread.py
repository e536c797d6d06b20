"""Threads that run a sync ``predict`` off the event loop, with the least hand-off cost.

``loop.run_in_executor`` wraps every call in a ``concurrent.futures.Future`` chained to an asyncio one;
at several thousand requests a second that wrapping is a visible share of a replica's time. Here a
worker takes (function, argument, asyncio future) from a ``SimpleQueue`` and resolves the future with one
``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, TypeVar

__all__ = ["ScoringThreads"]

T = TypeVar("T")
_STOP = object()


class ScoringThreads:
    """``count`` daemon threads serving calls in arrival order."""

    def __init__(self, count: int = 1, name: str = "tiffin-score") -> None:
        self._queue: SimpleQueue[Any] = SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(count)]
        for thread in self._threads:
            thread.start()

    async def run(self, function: Callable[[Any], T], argument: Any) -> T:
        """``function(argument)`` on a scoring thread; its result or exception, awaited."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((function, argument, future, loop))
        return await future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            function, argument, future, loop = item
            try:
                result = function(argument)
            except BaseException as exc:  # handed to the awaiting request, which maps it to a response
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)

    def shutdown(self) -> None:
        """Let the threads finish the calls already queued, then end."""
        for _ in self._threads:
            self._queue.put(_STOP)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the request was cancelled (client gone, timeout) while scoring
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
