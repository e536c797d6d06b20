"""Several ``tiffin serve`` on one store: who is alive, and what a node should take over (pure logic).

Each node writes a heartbeat (a growing ``beat``) into its row of the store. A node is alive while its
beat keeps changing: :class:`Liveness` watches the beats on the *observer's* monotonic clock, as
Kubernetes' leader election watches a lease's renewals, so machines with unsynchronised clocks still
agree. A node whose beat has not moved for ``lease_s`` is dead; its deployments and running jobs are
taken over by compare-and-set in the store (:mod:`tiffin.store.cluster`), so exactly one node wins each.

:class:`DeploymentClaims` spreads unowned deployments: a node takes them while it owns no more than the
least busy other node (so counts stay within one of each other, ties settled by the store); a
deployment left unowned for longer than the lease is taken by whoever sees it (a node that should have
taken it may be stuck). Nothing is moved between live nodes.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from tiffin.store.cluster import DeploymentOwner, NodeRecord

__all__ = ["DeploymentClaims", "Liveness", "jobs_to_run"]


@dataclass(slots=True)
class _Seen:
    incarnation: str
    beat: int
    at: float  # observer's monotonic time the beat last changed


class Liveness:
    """Which nodes are alive, judged from successive reads of the node rows."""

    def __init__(self, me: str, lease_s: float) -> None:
        self.me = me
        self.lease_s = lease_s
        self._seen: dict[str, _Seen] = {}

    def observe(self, nodes: Iterable[NodeRecord], now: float, wall_now: datetime) -> frozenset[str]:
        """The live nodes after one read of the rows (``now``: monotonic seconds; ``wall_now``: UTC)."""
        live = {self.me}
        present = set()
        for node in nodes:
            present.add(node.id)
            if node.id == self.me:
                continue
            seen = self._seen.get(node.id)
            if seen is None:
                # First sight. A row whose heartbeat is far older than the lease (three leases leave room for
                # clock skew) was left by a node that died long ago: dead at once, so a restarted lone
                # server does not wait a lease before taking its work over. Anything else gets a lease.
                if wall_now - node.heartbeat_at > timedelta(seconds=3 * self.lease_s):
                    continue
                seen = self._seen[node.id] = _Seen(node.incarnation, node.beat, now)
            elif seen.beat != node.beat or seen.incarnation != node.incarnation:
                seen.incarnation, seen.beat, seen.at = node.incarnation, node.beat, now
            if now - seen.at < self.lease_s:
                live.add(node.id)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return frozenset(live)


class DeploymentClaims:
    """Which unowned (or orphaned) online deployments this node should take, one pass at a time."""

    def __init__(self, me: str, patience_s: float) -> None:
        self.me = me
        self.patience_s = patience_s
        self._orphaned_since: dict[str, float] = {}

    def plan(self, owners: Iterable[DeploymentOwner], live: frozenset[str], now: float) -> list[DeploymentOwner]:
        """The deployments to try to take now (the store's compare-and-set decides who gets each)."""
        rows = list(owners)
        counts = Counter(row.owner for row in rows if row.owner in live)
        mine = counts[self.me]
        # Alone, every orphan is this node's; with others, it takes while it owns no more than the least busy.
        fewest = min((counts[node] for node in live if node != self.me), default=math.inf)
        orphans = [row for row in rows if row.owner is None or row.owner not in live]
        since = self._orphaned_since
        for key in set(since) - {row.id for row in orphans}:
            del since[key]
        chosen = []
        for row in orphans:
            overdue = now - since.setdefault(row.id, now) >= self.patience_s
            if mine <= fewest or overdue:
                chosen.append(row)
                mine += 1
        return chosen


def jobs_to_run(
    owners: Mapping[str, str | None], me: str, live: frozenset[str], running_here: Iterable[str]
) -> tuple[list[str], list[tuple[str, str | None]]]:
    """Of the Running jobs (name → owner): (this node's own ones it is not running, which it resumes;
    the (name, owner) of those with no live owner, which it tries to take over)."""
    here = set(running_here)
    resume, adopt = [], []
    for name, owner in sorted(owners.items()):
        if name in here:
            continue
        if owner == me:
            resume.append(name)
        elif owner is None or owner not in live:
            adopt.append((name, owner))
    return resume, adopt
