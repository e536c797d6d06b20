"""tiffin's state store: the desired state of endpoints, deployments, keys and jobs.

SQLite (``$TIFFIN_HOME/tiffin.db``) by default, any SQLAlchemy URL (PostgreSQL tested) through
``TIFFIN_STORE_URL``. The schema is managed by the Alembic migrations in ``migrations/``, applied by
:meth:`Store.open`. Endpoint keys and token secrets are sealed at rest with a key kept outside the database
(``TIFFIN_SECRET_KEY`` or ``$TIFFIN_HOME/secret-key``, see :mod:`tiffin.store.sealing`); records hold their
plaintext::

    from tiffin.store import Store

    with Store.open() as store:
        store.create_endpoint("online", "my-endpoint", {"description": "demo"})
        print(store.get_endpoint("my-endpoint").primary_key)
"""

from __future__ import annotations

from .engine import default_url, head_revision
from .records import (
    DEPLOYMENT_STATES,
    ENDPOINT_KINDS,
    JOB_STATUSES,
    PROVISIONING_STATES,
    TERMINAL_JOB_STATUSES,
    AssetRecord,
    ComputeRecord,
    DeploymentRecord,
    DeploymentState,
    EndpointKind,
    EndpointRecord,
    JobRecord,
    JobStatus,
    MiniBatchRecord,
)
from .store import Store

__all__ = [
    "DEPLOYMENT_STATES",
    "ENDPOINT_KINDS",
    "JOB_STATUSES",
    "PROVISIONING_STATES",
    "TERMINAL_JOB_STATUSES",
    "AssetRecord",
    "ComputeRecord",
    "DeploymentRecord",
    "DeploymentState",
    "EndpointKind",
    "EndpointRecord",
    "JobRecord",
    "JobStatus",
    "MiniBatchRecord",
    "Store",
    "default_url",
    "head_revision",
]
