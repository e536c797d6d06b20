"""The supervisor: keeps the replica processes of every online deployment in line with the store.

    from tiffin.supervisor import Supervisor

    supervisor = Supervisor(store, home, on_change=rebuild_routing_table)
    await supervisor.start()
    ...
    supervisor.ready_replicas("my-endpoint", "blue")   # -> (Replica(id, "unix:/…/d1-r0.sock"), ...)
    await supervisor.stop()                             # every replica process stopped

Modules: :mod:`.policy` (pure decisions: probe thresholds, backoff, rollout plan), :mod:`.probes`
(HTTP probes), :mod:`.process` (one replica process), :mod:`.sockets` (where replicas listen: Unix
sockets in a 0700 folder), :mod:`.reconciler` (one deployment), with :mod:`.slots` (its replicas and
what it asks of the supervisor), :mod:`.desired` (its parsed spec and spec files), :mod:`.health` (its
replicas' probes) and :mod:`.provisioning` (the state it writes), :mod:`.supervisor` (the loop, the store, the
public class) with :mod:`.host` (what it offers the reconcilers).
"""

from .slots import ReplicaState, ReplicaStatus
from .supervisor import Supervisor

__all__ = ["ReplicaState", "ReplicaStatus", "Supervisor"]
