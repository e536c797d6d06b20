"""Per-deployment admission: Azure's max_concurrent_requests_per_instance and max_queue_wait_ms.

A deployment with ``n`` ready replicas takes ``n * max_concurrent_requests_per_instance`` requests at
once; more wait in arrival order for up to ``max_queue_wait_ms`` and are then refused with 429. With no
replica ready the capacity is 0: requests wait the same way for one the supervisor is starting.

Once the autoscaler first reads it, an admission also integrates its load (requests holding or waiting for a slot)
over time: the autoscaler reads the average between two of its samples, as Knative's queue-proxy reports average
concurrency, so requests that come and go between samples count (a point reading once a second misses short
ones). Deployments nobody autoscales skip that clock read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from time import monotonic

from tiffin.errors import CapacityError

__all__ = ["Admission"]


class Admission:
    """A FIFO counting semaphore whose size can change while requests hold or wait for slots.

    Not thread-safe: used from the gateway's event loop only.
    """

    __slots__ = ("_area", "_at", "_waiters", "capacity", "in_flight", "name")

    def __init__(self, name: str, capacity: int) -> None:
        self.name = name
        self.capacity = capacity
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._area: float | None = None  # request-seconds of load up to _at; None: not integrated (not asked)
        self._at = 0.0

    def _mark(self) -> None:
        """Add the load since the last change to the area (called before every change of it)."""
        if self._area is not None:
            now = monotonic()
            self._area += (self.in_flight + len(self._waiters)) * (now - self._at)
            self._at = now

    def load_area(self) -> float:
        """Requests holding or waiting for a slot, integrated over time since the first call (request-seconds,
        monotonic clock): the difference of two reads over the seconds between them is the average load."""
        if self._area is None:
            self._area, self._at = 0.0, monotonic()
        self._mark()
        return self._area

    def take(self) -> None:
        """Take a slot without waiting (a mirror copy checks ``in_flight < capacity`` first)."""
        self._mark()
        self.in_flight += 1

    @property
    def queued(self) -> int:
        """Requests waiting for a slot now."""
        return len(self._waiters)

    @property
    def free(self) -> bool:
        """Whether :meth:`acquire` would take a slot at once (nobody queued, a slot unused)."""
        return not self._waiters and self.in_flight < self.capacity

    def resize(self, capacity: int) -> None:
        """Change the number of slots (replicas came or went); wakes waiters if slots opened."""
        self._mark()
        self.capacity = capacity
        self._wake()

    async def acquire(self, max_wait_s: float) -> None:
        """Take a slot, waiting at most ``max_wait_s``; raise CapacityError (429) if none frees up."""
        # Fast path: no queue and a free slot, no future allocated.
        if not self._waiters and self.in_flight < self.capacity:
            if self._area is not None:  # checked here, not in _mark: the hot path skips a call when untracked
                self._mark()
            self.in_flight += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._mark()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), max_wait_s)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as the wait ran out: keep it rather than leak it.
                return
            waiter.cancel()
            self._discard(waiter)
            raise CapacityError(
                f"deployment '{self.name}' is at capacity: {self.in_flight} requests in flight and none "
                f"finished within max_queue_wait_ms ({int(max_wait_s * 1000)} ms); retry later, or raise "
                "instance_count or request_settings.max_concurrent_requests_per_instance"
            ) from None
        except BaseException:
            # Cancelled while queued (client went away): give back a slot handed to us meanwhile.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()
            else:
                waiter.cancel()
                self._discard(waiter)
            raise

    def fail_waiters(self, error: Exception) -> None:
        """Answer every waiting request with ``error`` (no replica is coming: waiting longer is pointless)."""
        self._mark()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def release(self) -> None:
        """Give a slot back: to the next waiter if any, else to the pool."""
        if self._area is not None:
            self._mark()
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        # A waiter handed a slot moves from the queue to in_flight: the load stays the same, no _mark needed.
        while self._waiters and self.in_flight < self.capacity:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        self._mark()
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
