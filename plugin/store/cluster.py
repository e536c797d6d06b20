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

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tiffin.batch.planner import QueuedJob, admit, compute_name, instances_of

from .core import StoreCore, now_utc
from .models import Compute, Counter, Deployment, Job, Node

__all__ = ["ClusterRepository", "ComputeUsage", "DeploymentOwner", "NodeRecord"]

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


@dataclass(frozen=True, slots=True)
class ComputeUsage:
    """What runs on a compute now (``compute show``): Azure's ``current_node_count`` is the instances the
    running jobs use (``instance_count`` each); nothing is kept warm between jobs (``min_instances`` aside)."""

    current_node_count: int
    running_jobs: int
    queued_jobs: int


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

        A deployment runs at most ``per_deployment`` jobs at once across every node, and the running jobs
        on an ``amlcompute`` compute use at most its ``max_instances`` instances together, across every
        deployment on it (:func:`tiffin.batch.planner.admit` decides). The check and the claim are one
        transaction that first locks the ``jobs`` counter row, so nodes claim one at a time (SQLite's write
        lock does the same there).
        """
        if limit <= 0:
            return []
        with self.session(write=True) as session:
            session.execute(update(Counter).where(Counter.name == JOBS_COUNTER).values(value=Counter.value + 1))
            running: Tally[tuple[str, str | None]] = Tally()
            in_use: Tally[str] = Tally()
            for endpoint, deployment, spec in session.execute(
                select(Job.endpoint_name, Job.deployment_name, Job.spec).where(Job.status == "Running")
            ):
                running[(endpoint, deployment)] += 1
                compute = compute_name(spec)
                if compute is not None:
                    in_use[compute] += instances_of(spec)
            rows = {row.name: row for row in session.scalars(
                select(Job).where(Job.status == "Queued").order_by(Job.created_at, Job.name)
            )}  # fmt: skip
            queued = [
                QueuedJob(row.name, (row.endpoint_name, row.deployment_name), compute_name(row.spec),
                          instances_of(row.spec))
                for row in rows.values()
            ]  # fmt: skip
            claimed = admit(queued, running, in_use, self._compute_caps(session), per_deployment, limit)
            for name in claimed:
                row = rows[name]
                row.status, row.owner = "Running", node_id
                if row.started_at is None:
                    row.started_at = now_utc()
            return claimed

    @staticmethod
    def _compute_caps(session: Session) -> dict[str, int]:
        """Each ``amlcompute`` compute's ``max_instances`` (Azure's default 1); other types have no cap here."""
        return {
            row.name: int(row.spec.get("max_instances") or 1)
            for row in session.scalars(select(Compute))
            if row.spec.get("type", "amlcompute") == "amlcompute"
        }

    def compute_usage(self) -> dict[str, ComputeUsage]:
        """For each compute named by a running or queued job: instances in use, running and queued jobs."""
        nodes: Tally[str] = Tally()
        running: Tally[str] = Tally()
        queued: Tally[str] = Tally()
        with self.session() as session:
            rows = session.execute(select(Job.status, Job.spec).where(Job.status.in_(("Running", "Queued"))))
            for status, spec in rows:
                compute = compute_name(spec)
                if compute is not None and status == "Running":
                    nodes[compute] += instances_of(spec)
                    running[compute] += 1
                elif compute is not None:
                    queued[compute] += 1
        return {name: ComputeUsage(nodes[name], running[name], queued[name]) for name in {*running, *queued}}

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
