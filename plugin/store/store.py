"""The :class:`Store`: tiffin's desired state (endpoints, deployments, keys, jobs) in one database."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet

from . import engine as _engine
from .assets import AssetRepository
from .autoscale import AutoscaleRepository
from .cluster import ClusterRepository
from .endpoints import EndpointRepository
from .jobs import JobRepository
from .rollouts import RolloutRepository
from .sealing import SecretBox, find_secret_box, seal_plaintext

__all__ = ["Store"]


class Store(
    EndpointRepository, JobRepository, ClusterRepository, AssetRepository, RolloutRepository, AutoscaleRepository
):
    """Repository over the state database; hands out plain records, never ORM objects.

    Every method runs one short transaction. Writes to endpoints and deployments also bump the
    ``routing`` counter (:meth:`routing_generation`) in the same transaction, so readers polling it
    never miss a change. Open stores with :meth:`open`, which applies pending migrations; the
    constructor takes explicit values and touches neither the environment nor the schema.
    """

    # Modules: .core (connection, transactions, the routing counter), .endpoints (endpoints, deployments,
    # keys), .jobs (batch jobs, mini-batches), .cluster (servers sharing the store, owners), .assets (registered
    # models, environments, data, computes), .autoscale (autoscale settings); each a base class of this one.

    @classmethod
    def open(
        cls,
        url: str | None = None,
        home: Path | None = None,
        *,
        revision: str = "head",
        busy_timeout_ms: int = _engine.DEFAULT_BUSY_TIMEOUT_MS,
    ) -> Store:
        """Open the store and upgrade its schema to ``revision`` (normally the newest).

        ``url`` wins; else ``$TIFFIN_STORE_URL``; else SQLite at ``<home>/tiffin.db`` where ``home``
        defaults to ``$TIFFIN_HOME`` or ``~/.tiffin``. This is the one place the store reads the
        environment. Safe to call from several processes at once on a fresh database.
        """
        resolved = url or os.environ.get("TIFFIN_STORE_URL") or _engine.default_url(home)
        store = cls(resolved, busy_timeout_ms=busy_timeout_ms)
        try:
            store.upgrade(revision)
            if _engine.is_sqlite_memory(store.url):  # a throwaway database: a throwaway key
                store._box = SecretBox([Fernet.generate_key()], "a key made for this in-memory store")
            else:
                store._box = find_secret_box(store.session, _engine.home_of(home), os.environ)
            seal_plaintext(store.session, store._box)
        except BaseException:
            store.close()
            raise
        return store
