"""The supervisor's helpers for its reconcilers: :class:`Host` (what a reconciler asks of the supervisor: probes,
store writes, start slots, wake-ups) and :class:`ErrorLog` (failures logged once with their traceback, then
summarised)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Hashable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tiffin.assets.resolve import inline_assets
from tiffin.errors import NotFoundError
from tiffin.store.records import DeploymentRecord

from .probes import ProbeResult, http_probe
from .sockets import SocketFolder

if TYPE_CHECKING:
    from .supervisor import Supervisor

__all__ = ["ErrorLog", "Host"]

logger = logging.getLogger("tiffin.supervisor")

# The same error from the same place is logged with its traceback once, then summarised this often.
_REPEAT_LOG_S = 60.0


class ErrorLog:
    """Logs failures with their traceback without flooding the log when one repeats every pass."""

    def __init__(self) -> None:
        self._seen: dict[Hashable, tuple[str, float, int]] = {}

    def report(self, key: Hashable, what: str, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        previous = self._seen.get(key)
        if previous is None or previous[0] != text:
            logger.error("%s failed", what, exc_info=exc)
            self._seen[key] = (text, now, 0)
        elif now - previous[1] >= _REPEAT_LOG_S:
            logger.error("%s still failing (%d more times): %s", what, previous[2] + 1, text)
            self._seen[key] = (text, now, 0)
        else:
            self._seen[key] = (text, previous[1], previous[2] + 1)

    def clear(self, key: Hashable) -> None:
        self._seen.pop(key, None)


class Host:
    """The supervisor's side of :class:`~tiffin.supervisor.slots.ReconcilerHost`."""

    def __init__(
        self,
        supervisor: Supervisor,
        home: Path,
        python: str,
        env: Mapping[str, str],
        drain_s: float,
        limits: tuple[int, int],
    ):
        self._supervisor = supervisor
        self.home = home
        self.python = python
        self.env = env
        self.drain_s = drain_s
        self.max_instances, self.max_starts = limits
        self.sockets = SocketFolder(home)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return self._supervisor._spawn(coro, name)

    def inline_assets(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        # Reads the store only for a spec that holds references, once per generation: a primary-key lookup,
        # cheap enough for the event loop.
        return inline_assets(self._supervisor._store, spec)

    def socket_path(self, deployment: int, index: int) -> Path:
        return self.sockets.path_for(deployment, index)

    def may_start(self) -> bool:
        # A replica's start (imports, init()) is CPU-bound: a burst of them, e.g. instance_count: 16 or
        # a server restarting with many deployments, would starve the gateway and each other.
        return sum(r.starting() for r in self._supervisor._reconcilers.values()) < self.max_starts

    async def probe(self, url: str, timeout: float) -> ProbeResult:
        return await http_probe(self._supervisor._probe_session(), url, timeout)

    async def write_state(self, record: DeploymentRecord, state: str, reason: str | None) -> DeploymentRecord | None:
        store = self._supervisor._store

        def write() -> DeploymentRecord | None:
            # Compare-and-set on the generation: a state computed for an older spec must not
            # overwrite the Creating/Updating that a newer put_deployment wrote meanwhile.
            return store.set_deployment_state(
                record.endpoint_name, record.name, state, reason, expected_generation=record.generation
            )

        try:
            written = await asyncio.to_thread(write)
        except NotFoundError:  # deleted meanwhile; the next pass stops its replicas
            return None
        if written is not None:
            # The state is observed, not desired (the generation does not move): the supervisor's copy takes it
            # now, or each pass until the next reload would see the old state and write the new one again.
            self._supervisor._remember(written)
        return written

    def routing_changed(self) -> None:
        self._supervisor._emit_if_changed()

    def wake(self) -> None:
        self._supervisor._wake()
