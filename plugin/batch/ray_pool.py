"""Mini-batches on a Ray cluster: one Ray actor per slot, each running ``init()`` once, as a worker process would.

Used when ``TIFFIN_RAY_ADDRESS`` names a cluster (``ray://HOST:10001``, ``auto`` for the one this machine
belongs to, or ``local`` to start a Ray here). Ray is an optional extra: ``pip install 'tiffin[ray]'``.
The actors read the inputs and write the output parts at the paths tiffin gives them, so on a cluster of
several machines those paths must be on storage every node sees (as Azure mounts its datastores).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tiffin.batch.pool import Event
from tiffin.errors import RunnerLoadError

__all__ = ["RayPool"]


class _Worker:
    """The actor: a scorer loaded once, scoring mini-batches into output parts."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from tiffin.batch.worker import make_scorer

        self.scorer = make_scorer(settings)
        self.error: str | None = None
        try:
            self.scorer.load()
        except Exception as exc:
            self.error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"

    def ready(self) -> str | None:
        return self.error

    def run(self, index: int, items: list[str], part: str | None) -> tuple[int, int]:
        from pathlib import Path

        from tiffin.batch.worker import write_part

        output = self.scorer.score(items)
        if part:
            write_part(Path(part), output.csv)
        return output.rows, output.failed_items


@dataclass
class RayPool:
    """``size`` Ray actors, one CPU each."""

    size: int
    address: str
    settings: dict[str, Any]
    _actors: list[Any] = field(default_factory=list)
    _pending: dict[Any, tuple[str, int, int | None]] = field(default_factory=dict)  # ref -> (what, slot, index)

    def start(self) -> None:
        """Connect to the cluster (once per process) and create the actors."""
        try:
            import ray
        except ImportError as exc:
            raise RunnerLoadError(
                "TIFFIN_RAY_ADDRESS is set but Ray is not installed; pip install 'tiffin[ray]'"
            ) from exc
        if not ray.is_initialized():
            address = None if self.address == "local" else self.address
            ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                     runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1"}})  # fmt: skip
        self._remote = ray.remote(num_cpus=1, max_restarts=0)(_Worker)
        self._actors = [None] * self.size
        for slot in range(self.size):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        actor = self._remote.remote(self.settings)
        self._actors[slot] = actor
        self._pending[actor.ready.remote()] = ("ready", slot, None)

    def submit(self, slot: int, index: int, items: list[str], part: str | None) -> None:
        """Run the mini-batch on the slot's actor."""
        self._pending[self._actors[slot].run.remote(index, items, part)] = ("run", slot, index)

    def wait(self, timeout: float) -> list[Event]:
        """Finished actor calls as events; a lost actor is a death."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        if not self._pending:
            return []
        done, rest = ray.wait(list(self._pending), num_returns=1, timeout=timeout)
        if done and rest:  # and whatever else finished meanwhile, without waiting for it
            done += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        events = []
        for ref in done:
            what, slot, index = self._pending.pop(ref)
            try:
                value = ray.get(ref)
            except RayTaskError as exc:
                cause = exc.cause if exc.cause is not None else exc
                message = getattr(cause, "message", None) or f"{type(cause).__name__}: {cause}"
                events.append(Event("error", slot, index, message=message))
                continue
            except RayActorError as exc:
                events.append(Event("died", slot, index, message=f"the Ray actor died: {exc}"))
                continue
            if what == "ready":
                events.append(Event("load_failed", slot, message=value) if value else Event("ready", slot))
            else:
                events.append(Event("done", slot, index, rows=value[0], failed_items=value[1]))
        return events

    def restart(self, slot: int) -> None:
        """Kill the slot's actor (and forget what it was doing); create a new one."""
        import ray

        for ref, (_, owner, _) in list(self._pending.items()):
            if owner == slot:
                del self._pending[ref]
        if self._actors[slot] is not None:
            ray.kill(self._actors[slot], no_restart=True)
        self._spawn(slot)

    def close(self) -> None:
        """Kill every actor; the connection to the cluster stays for the next job."""
        import ray

        for actor in self._actors:
            if actor is not None:
                ray.kill(actor, no_restart=True)
        self._actors = []
        self._pending.clear()
