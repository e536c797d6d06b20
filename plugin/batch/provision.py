"""A batch deployment provisioned when it is created or updated, as Azure does before ``az ml batch-deployment create``
returns: its environment built, then spare workers started for its first job.

A deployment whose jobs run in an environment (it declares one, or its MLflow model has its own requirements), or on
tiffin's own Python with a local MLflow model (whose flavour forked spares import), and not on Ray, is stored
``Creating`` (``Updating``) by the API (:meth:`tiffin.api.batch.BatchControl.put_deployment`); the
scheduler (:class:`tiffin.batch.scheduler.BatchScheduler`) finds it and runs :func:`provision` in a thread: the
environment (if any) is built as a job builds it (:func:`tiffin.batch.launch.job_environment`, uv's output in the
deployment's ``environment.log``), spare workers are started (on its interpreter, or forked) and waited for until
their imports are done (:meth:`tiffin.batch.pool.LocalPool.keep_spares`), and the deployment becomes
``Succeeded``, or ``Failed`` with uv's message. The state is written only if no newer spec was stored meanwhile
(the deployment's generation).

A job invoked meanwhile waits for that provisioning (:func:`wait_for_provisioning`), then finds the environment
built and takes the spares; two builds of one environment never run at once anyway (the builder's lock per key).
With several servers on one store, each that sees the deployment ``Creating`` provisions it for itself (a job may
run on any of them; they share the build when they share ``envs/``): the first to finish makes it ``Succeeded``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tiffin.batch.launch import BuildInterrupted, job_environment, ray_address, warm_model
from tiffin.errors import EnvironmentBuildError, NotFoundError, TiffinError
from tiffin.store import DeploymentRecord, Store

__all__ = ["SPARES_READY_S", "needs_provisioning", "provision", "start_provisioning", "wait_for_provisioning"]

logger = logging.getLogger("tiffin.batch")

SPARES_READY_S = 120.0
"""How long provisioning waits for its spare workers' imports; past that it is ``Succeeded`` all the same (a job
takes the spares as they are, or starts its own)."""

_BUSY: dict[tuple[str, str], threading.Event] = {}  # (endpoint, deployment) -> set when its provisioning ends
_BUSY_LOCK = threading.Lock()


def needs_provisioning(deployment: Any) -> bool:
    """Whether the (loaded, assets inlined) batch deployment is provisioned when it is created: its jobs run in an
    environment built on this machine, or on tiffin's own Python with a local MLflow model whose flavour spare workers
    import ahead of its first job. One whose environment cannot be read counts: provisioning fails it, saying why."""
    from tiffin.batch.pool import spares_wanted
    from tiffin.environments.sources import environment_of
    from tiffin.runners.batch import scorer_settings

    if ray_address(deployment):  # Ray's actors run in the cluster's own Python
        return False
    try:
        scorer = scorer_settings(deployment, model_dir=None)
        owner = f"batch deployment '{deployment.name}'"
        if environment_of(deployment, kind=scorer["kind"], owner=owner) is not None:
            return True
    except TiffinError:
        return True
    return spares_wanted() and warm_model(scorer) is not None


def start_provisioning(
    store: Store, home: Path, record: DeploymentRecord, *, max_workers: int, stop: threading.Event,
    done: Callable[[], None] = lambda: None,
) -> bool:  # fmt: skip
    """Provision ``record`` in a thread of its own unless this process provisions it already; whether it started.
    ``done`` is called when it ends (the scheduler looks again: the deployment may have been updated meanwhile)."""
    key = (record.endpoint_name, record.name)
    with _BUSY_LOCK:
        if key in _BUSY:
            return False
        event = _BUSY[key] = threading.Event()

    def run() -> None:
        try:
            provision(store, home, record, max_workers=max_workers, stop=stop)
        except Exception as exc:  # a bug of ours: Failed with why (not Creating, tried again at every pass)
            logger.exception("provisioning batch deployment %s/%s failed", *key)
            with contextlib.suppress(Exception):
                reason = f"internal error while provisioning: {type(exc).__name__}: {exc}"
                store.set_deployment_state(*key, "Failed", reason, expected_generation=record.generation)
        finally:
            with _BUSY_LOCK:
                _BUSY.pop(key, None)
            event.set()
            done()

    name = f"tiffin-provision-{record.endpoint_name}-{record.name}"
    threading.Thread(target=run, name=name, daemon=True).start()
    return True


def wait_for_provisioning(endpoint: str, name: str, interrupted: Callable[[], bool], poll_s: float = 0.5) -> None:
    """Return once this process is not provisioning deployment ``name`` of ``endpoint`` (at once if it is not);
    :class:`~tiffin.batch.launch.BuildInterrupted` when ``interrupted()`` says so first."""
    with _BUSY_LOCK:
        event = _BUSY.get((endpoint, name))
    while event is not None and not event.wait(poll_s):
        if interrupted():
            raise BuildInterrupted


def provision(store: Store, home: Path, record: DeploymentRecord, *, max_workers: int, stop: threading.Event) -> str:
    """Build the deployment's environment and start its spares; record and return the state it is in now
    (``"Succeeded"``, ``"Failed"``, or its state unchanged when the server stops meanwhile)."""
    from tiffin.assets.resolve import inline_assets
    from tiffin.batch.pool import LocalPool
    from tiffin.environments.sources import environment_of
    from tiffin.paths import environment_log_path
    from tiffin.runners.batch import scorer_settings
    from tiffin.specs import BatchDeployment, parse_spec

    owner = f"batch deployment '{record.name}'"

    def record_state(state: str, reason: str | None = None) -> str:
        try:
            done = store.set_deployment_state(
                record.endpoint_name, record.name, state, reason, expected_generation=record.generation
            )
        except NotFoundError:  # deleted meanwhile
            return "Deleted"
        if done is None:  # updated meanwhile: the newer spec is provisioned next
            return record.state
        logger.info("batch deployment %s/%s: %s%s", record.endpoint_name, record.name, state,
                    f" ({reason})" if reason else "")  # fmt: skip
        return state

    try:
        deployment = parse_spec(inline_assets(store, record.spec, source=owner), BatchDeployment, owner).spec
        scorer = scorer_settings(deployment, model_dir=None)
        if ray_address(deployment):
            return record_state("Succeeded")
        spec = environment_of(deployment, kind=scorer["kind"], owner=owner)
        log = environment_log_path(home, record.endpoint_name, record.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        prepared = None
        if spec is not None:
            prepared = job_environment(
                spec, home=home, log_path=log, title=f"environment of {owner}", interrupted=stop.is_set
            )
    except BuildInterrupted:  # the server stops: the next one provisions it (the build went on, in envs/)
        return record.state
    except EnvironmentBuildError as exc:  # uv's message, naming the environment's source
        return record_state("Failed", exc.message)
    except TiffinError as exc:  # an environment that cannot be read or translated, an asset gone
        return record_state("Failed", f"the environment of {owner} cannot be used: {exc.message}")
    overrides = {str(k): str(v) for k, v in deployment.environment_variables.items()}
    size = min(deployment.instance_count * deployment.settings.max_concurrency_per_instance, max_workers)
    # On tiffin's own Python (no environment) spares are forked from the fork server, and warm the model's flavour.
    pool = LocalPool(
        size=max(1, size), job=f"{record.endpoint_name}-{record.name}", settings={}, log=log, env=overrides,
        python=str(prepared.python) if prepared else None,
        process_env=prepared.process_env({**os.environ, **overrides}) if prepared else None,
        warm_mlflow=warm_model(scorer),
    )  # fmt: skip
    if not stop.is_set():
        try:
            pool.keep_spares(ready_within=SPARES_READY_S)
        except Exception:  # spares are an optimisation: the first job starts its workers itself
            logger.exception("starting spare workers for %s/%s failed", record.endpoint_name, record.name)
    return record_state("Succeeded")
