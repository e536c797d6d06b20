"""The store's side of several servers on one database: node rows, and who owns each deployment and job.

Every write here is a compare-and-set: a node takes a deployment or a job only from the owner it saw, so
two nodes that both decide to take the same thing cannot both succeed. Deciding *what* to take (who is
alive, who owns the fewest deployments) is :mod:`tiffin.cluster`'s pure logic; this module only reads
and swaps owners.
"""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, update

from .core import StoreCore, now_utc
from .models import Counter, Deployment, Job, Node

__all__ = ["ClusterRepository", "DeploymentOwner", "NodeRecord"]

JOBS_COUNTER = "jobs"


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """A ``tiffin serve`` registered in the store."""

    id: str
    url: str | None
    incarnation: str
    beat: int
    heartbeat_at: datetime
    started_at: datetime


@dataclass(frozen=True, slots=True)
class DeploymentOwner:
    """Who runs an online deployment's replicas: just what claiming needs."""

    id: str
    endpoint_name: str
    name: str
    owner: str | None


def _node_record(row: Node) -> NodeRecord:
    return NodeRecord(row.id, row.url, row.incarnation, row.beat, row.heartbeat_at, row.started_at)


class ClusterRepository(StoreCore):
    """Node rows and owners, as plain records; one of the bases of ``Store``."""

    # --- nodes ---------------------------------------------------------------------------------------

    def join_node(self, node_id: str, incarnation: str, url: str | None) -> None:
        """Register this server (a new incarnation replaces the row a previous run of the node left)."""
        now = now_utc()
        with self.session(write=True) as session:
            row = session.get(Node, node_id)
            if row is None:
                session.add(
                    Node(id=node_id, url=url, incarnation=incarnation, beat=0, heartbeat_at=now, started_at=now)
                )
            else:
                row.url, row.incarnation, row.beat, row.heartbeat_at, row.started_at = url, incarnation, 0, now, now

    def beat_node(self, node_id: str, incarnation: str, url: str | None) -> bool:
        """One heartbeat; False when the row is gone or another incarnation of the node holds it."""
        with self.session(write=True) as session:
            result = session.execute(
                update(Node)
                .where(Node.id == node_id, Node.incarnation == incarnation)
                .values(beat=Node.beat + 1, heartbeat_at=now_utc(), url=url)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def leave_node(self, node_id: str, incarnation: str) -> None:
        """Remove this server's row: the others take its deployments and jobs over at once."""
        with self.session(write=True) as session:
            session.execute(delete(Node).where(Node.id == node_id, Node.incarnation == incarnation))

    def list_nodes(self) -> list[NodeRecord]:
        """Every registered node, alive or not (liveness is judged by watching ``beat``)."""
        with self.session() as session:
            return [_node_record(row) for row in session.scalars(select(Node).order_by(Node.id))]

    # --- deployments ---------------------------------------------------------------------------------

    def deployment_owners(self) -> list[DeploymentOwner]:
        """Every online deployment with its owner (batch deployments have no replicas to own)."""
        query = (
            select(Deployment.id, Deployment.endpoint_name, Deployment.name, Deployment.owner)
            .where(Deployment.kind == "online")
            .order_by(Deployment.endpoint_name, Deployment.name)
        )
        with self.session() as session:
            return [DeploymentOwner(*row) for row in session.execute(query)]

    def take_deployment(self, deployment_id: str, expected_owner: str | None, node_id: str) -> bool:
        """Make ``node_id`` the owner if the owner is still ``expected_owner``; True when it now is.

        Moves the routing generation, so every gateway learns where the deployment's replicas now run.
        """
        condition = Deployment.owner.is_(None) if expected_owner is None else Deployment.owner == expected_owner
        with self.session(write=True) as session:
            result = session.execute(
                update(Deployment).where(Deployment.id == deployment_id, condition).values(owner=node_id)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                return False
            self._bump_routing(session)
            return True

    # --- jobs ----------------------------------------------------------------------------------------

    def claim_queued_jobs(self, node_id: str, per_deployment: int, limit: int) -> list[str]:
        """Start up to ``limit`` Queued jobs (oldest first) on ``node_id``; their names.

        A deployment runs at most ``per_deployment`` jobs at once across every node: the check and the
        claim are one transaction that first locks the ``jobs`` counter row, so nodes claim one at a time
        (SQLite's write lock does the same there).
        """
        if limit <= 0:
            return []
        with self.session(write=True) as session:
            session.execute(update(Counter).where(Counter.name == JOBS_COUNTER).values(value=Counter.value + 1))
            running = Tally(
                {
                    (endpoint, deployment): count
                    for endpoint, deployment, count in session.execute(
                        select(Job.endpoint_name, Job.deployment_name, func.count())
                        .where(Job.status == "Running")
                        .group_by(Job.endpoint_name, Job.deployment_name)
                    )
                }
            )
            claimed: list[str] = []
            queued = select(Job).where(Job.status == "Queued").order_by(Job.created_at, Job.name)
            for row in session.scalars(queued):
                key = (row.endpoint_name, row.deployment_name)
                if running[key] >= per_deployment:
                    continue  # waits, in order: a job can't jump the queue of its own deployment
                running[key] += 1
                row.status, row.owner = "Running", node_id
                if row.started_at is None:
                    row.started_at = now_utc()
                claimed.append(row.name)
                if len(claimed) >= limit:
                    break
            return claimed

    def running_job_owners(self) -> dict[str, str | None]:
        """Each Running job's owner."""
        with self.session() as session:
            rows = session.execute(select(Job.name, Job.owner).where(Job.status == "Running"))
            return {name: owner for name, owner in rows}

    def take_job(self, name: str, expected_owner: str | None, node_id: str) -> bool:
        """Make ``node_id`` the owner of Running job ``name`` if its owner is still ``expected_owner``."""
        condition = Job.owner.is_(None) if expected_owner is None else Job.owner == expected_owner
        with self.session(write=True) as session:
            result = session.execute(
                update(Job).where(Job.name == name, Job.status == "Running", condition).values(owner=node_id)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def job_owner(self, name: str) -> tuple[str, str | None] | None:
        """A job's (status, owner); None when it no longer exists."""
        with self.session() as session:
            row = session.execute(select(Job.status, Job.owner).where(Job.name == name)).first()
            return None if row is None else (row[0], row[1])
