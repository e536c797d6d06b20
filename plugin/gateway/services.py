"""Routing each deployment to a Service at a URL (Kubernetes), instead of to replicas this server starts.

With ``TIFFIN_DEPLOYMENT_URL_TEMPLATE`` set, ``tiffin serve`` starts no replica process. Each online deployment
is served by whatever answers at the URL the template gives for it, e.g. ``http://{service}:80``, where
``{service}`` is the Service name ``tiffin export kubernetes`` writes for the deployment
(:func:`tiffin.containers.kubernetes.dns_label`); ``{endpoint}`` and ``{deployment}`` are the names as they
are. ``TIFFIN_DEPLOYMENT_URLS`` (JSON, ``{"ENDPOINT/DEPLOYMENT": URL}``) names the URL of single deployments
instead (a Service in another namespace; the tests' stand-ins on loopback ports).

The gateway does everything else as for any replica: keys and tokens, traffic split, pinning, mirroring,
request timeouts and admission. A deployment counts as ``instance_count`` replicas at its URL, so its capacity
is ``instance_count`` times ``max_concurrent_requests_per_instance`` as with replicas started here.

Its state is what the URL answers: :class:`DeploymentServices` probes ``GET /`` there (the readiness route of
tiffin's image) every ``readiness_probe.period`` seconds, with its ``timeout``. After ``success_threshold``
successes in a row the deployment is routed to and recorded ``Succeeded``; after ``failure_threshold``
failures in a row (counted once ``initial_delay`` has passed) it leaves routing (its requests get 503) and is
recorded ``Failed`` with what was seen, until the URL answers again. Only the URLs the template or the mapping
give are ever called.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from tiffin.containers.kubernetes import DEPLOYMENT_URL_TEMPLATE_ENV, dns_label
from tiffin.errors import NotFoundError, TiffinError
from tiffin.routing import Replica
from tiffin.specs.common import ProbeSettings
from tiffin.store import DeploymentRecord, Store
from tiffin.supervisor.probes import http_probe, probe_session

__all__ = ["TEMPLATE_ENV", "URLS_ENV", "DeploymentServices", "ServiceURLs"]

logger = logging.getLogger("tiffin.services")

TEMPLATE_ENV = DEPLOYMENT_URL_TEMPLATE_ENV  # named where the exported gateway's manifest sets it
URLS_ENV = "TIFFIN_DEPLOYMENT_URLS"
_POLL_S = 1.0
"""How often the store is read for deployments created, changed or deleted through another server."""


class ServiceURLs:
    """Where each deployment is served: ``template`` filled in, or its entry in ``urls`` (``ENDPOINT/NAME``)."""

    def __init__(self, template: str | None, urls: Mapping[str, str] | None = None) -> None:
        self.template = template
        self.urls = dict(urls or {})
        if template is not None:
            self.base_and_prefix("my-endpoint", "blue")  # a bad template fails at start, not at the first request
        for key, url in self.urls.items():
            if key.count("/") != 1:
                raise TiffinError(f"{URLS_ENV}: key {key!r} is not ENDPOINT/DEPLOYMENT")
            _split(url, f"the entry {key!r} of {URLS_ENV}")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> ServiceURLs | None:
        """The set-up the environment asks for; None when neither variable is set (replicas run here)."""
        template = environ.get(TEMPLATE_ENV) or None
        raw = environ.get(URLS_ENV) or None
        if template is None and raw is None:
            return None
        urls: Any = {}
        if raw is not None:
            try:
                urls = json.loads(raw)
            except ValueError:
                urls = None
            if not isinstance(urls, dict) or not all(isinstance(v, str) for v in urls.values()):
                raise TiffinError(f'{URLS_ENV} must be a JSON object {{"ENDPOINT/DEPLOYMENT": "http://HOST:PORT"}}')
        return cls(template, urls)

    def base_and_prefix(self, endpoint: str, deployment: str) -> tuple[str, bytes]:
        """``(http://HOST:PORT, path prefix)`` of the deployment; TiffinError when it has no URL."""
        url = self.urls.get(f"{endpoint}/{deployment}")
        if url is not None:
            return _split(url, f"the entry '{endpoint}/{deployment}' of {URLS_ENV}")
        if self.template is None:
            raise TiffinError(
                f"deployment {endpoint}/{deployment} has no entry in {URLS_ENV} and {TEMPLATE_ENV} is unset"
            )
        names = {"service": dns_label(endpoint, deployment), "endpoint": endpoint, "deployment": deployment}
        try:
            url = self.template.format_map(names)
        except (KeyError, IndexError, ValueError) as exc:
            raise TiffinError(
                f"{TEMPLATE_ENV}={self.template!r} cannot be filled in ({exc!r}); use {{service}}, {{endpoint}} "
                "and {deployment}, e.g. http://{service}:80"
            ) from None
        return _split(url, TEMPLATE_ENV)


def _split(url: str, source: str) -> tuple[str, bytes]:
    parts = urlsplit(url)
    try:
        port = parts.port or 80
    except ValueError:
        port = 0
    if parts.scheme != "http" or not parts.hostname or parts.username or parts.query or parts.fragment or not port:
        raise TiffinError(
            f"{source} gives {url!r}, which is not a plain http URL (http://HOST, then :PORT and /PATH if need "
            "be); write e.g. http://{service}:80"
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"http://{host}:{port}", parts.path.rstrip("/").encode()


class _Watch:
    """One deployment's URL, what its probes saw, and whether it is routed to."""

    def __init__(self, record: DeploymentRecord, base: str, prefix: bytes) -> None:
        self.record = record
        self.base = base
        self.prefix = prefix
        self.ready = False
        self.failed = False
        self.task: asyncio.Task[None] | None = None
        self._replicas: tuple[Replica, ...] = ()

    @property
    def url(self) -> str:
        return self.base + self.prefix.decode()

    def replicas(self) -> tuple[Replica, ...]:
        if not self.ready:
            return ()
        count = max(1, int(self.record.spec.get("instance_count") or 1))
        if len(self._replicas) != count:
            key = f"{self.record.endpoint_name}/{self.record.name}"
            self._replicas = tuple(
                Replica(id=f"service:{key}/{i}", url=self.base, prefix=self.prefix) for i in range(count)
            )
        return self._replicas


class DeploymentServices:
    """Stands in for the supervisor when deployments are served by Services (see the module's docstring):
    the same ``start``/``stop``/``notify``/``ready_replicas``/``replacing`` the server and routing use."""

    def __init__(
        self, store: Store, urls: ServiceURLs, *, on_change: Callable[[], None], poll_interval: float = _POLL_S
    ) -> None:
        self._store = store
        self._urls = urls
        self._on_change = on_change
        self._poll_interval = poll_interval
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Read the store and probe every online deployment's URL from now on."""
        self._session = probe_session()
        self._task = asyncio.create_task(self._run(), name="tiffin-services")
        logger.info("deployments are served at the URLs %s gives; no replica runs here", TEMPLATE_ENV)

    async def stop(self) -> None:
        """Stop probing; every deployment leaves routing."""
        tasks = [self._task] if self._task is not None else []
        tasks += [w.task for w in self._watches.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._watches.clear()
        self._on_change()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def notify(self) -> None:
        """The store changed through this server: read it now."""
        self._wake.set()

    def ready_replicas(self, endpoint: str, deployment: str) -> tuple[Replica, ...]:
        """``instance_count`` replicas at the deployment's URL while it answers, else none."""
        watch = self._watches.get((endpoint, deployment))
        return watch.replicas() if watch is not None else ()

    def replacing(self, endpoint: str, deployment: str) -> bool:
        """Not yet known to answer nor given up on: its requests wait (up to max_queue_wait_ms) for it."""
        watch = self._watches.get((endpoint, deployment))
        return watch is not None and not watch.ready and not watch.failed

    # --- the store ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                records = await asyncio.to_thread(self._store.list_deployments)
                self._reconcile(records)
            except Exception:
                logger.exception("reading the deployments failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)

    def _reconcile(self, records: list[DeploymentRecord]) -> None:
        wanted = {(r.endpoint_name, r.name): r for r in records if r.kind == "online" and r.state != "Deleting"}
        changed = False
        for key in [k for k in self._watches if k not in wanted]:
            watch = self._watches.pop(key)
            if watch.task is not None:
                watch.task.cancel()
            changed = changed or watch.ready
        for key, record in wanted.items():
            watch = self._watches.get(key)
            if watch is not None:
                if record.generation != watch.record.generation or record.state != watch.record.state:
                    count = watch.replicas()
                    watch.record = record
                    changed = changed or watch.replicas() != count
                continue
            try:
                base, prefix = self._urls.base_and_prefix(*key)
            except TiffinError as exc:
                logger.error("deployment %s/%s: %s", key[0], key[1], exc.message)
                continue
            watch = self._watches[key] = _Watch(record, base, prefix)
            watch.task = asyncio.create_task(self._probe_forever(watch), name=f"tiffin-service-{key[0]}/{key[1]}")
        if changed:
            self._on_change()

    # --- probes ------------------------------------------------------------------------------------

    async def _probe_forever(self, watch: _Watch) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        successes = failures = 0
        while True:
            settings = ProbeSettings.model_validate(watch.record.spec.get("readiness_probe") or {})
            assert self._session is not None
            result = await http_probe(self._session, watch.url, settings.timeout)
            if result.ok:
                successes, failures = successes + 1, 0
                if not watch.ready and successes >= settings.success_threshold:
                    watch.ready, watch.failed = True, False
                    logger.info("deployment %s answers at %s: routed to", watch.record.name, watch.url)
                    self._on_change()
            else:
                successes, failures = 0, failures + 1
                counts = loop.time() - started >= settings.initial_delay
                if counts and failures >= settings.failure_threshold and not watch.failed:
                    was_ready, watch.ready, watch.failed = watch.ready, False, True
                    logger.warning(
                        "deployment %s does not answer at %s: %s", watch.record.name, watch.url, result.detail
                    )
                    if was_ready:
                        self._on_change()
            await self._write_state(watch, result.detail, failures)
            await asyncio.sleep(settings.period)

    async def _write_state(self, watch: _Watch, detail: str, failures: int) -> None:
        record = watch.record
        if watch.ready and (record.state != "Succeeded" or record.reason is not None):
            state, reason = "Succeeded", None
        elif watch.failed and record.state != "Failed":
            state = "Failed"
            reason = (
                f"its Service at {watch.url} did not answer GET / {failures} time(s) in a row (last: {detail}); "
                "check the Service and its pods (kubectl get pods); the gateway routes to it again once it answers"
            )
        else:
            return

        def write() -> DeploymentRecord | None:
            # Compare-and-set on the generation: never overwrite the Creating/Updating of a newer spec.
            return self._store.set_deployment_state(
                record.endpoint_name, record.name, state, reason, expected_generation=record.generation
            )

        try:
            written = await asyncio.to_thread(write)
        except NotFoundError:  # deleted meanwhile; the next read of the store drops it
            return
        except Exception:
            logger.exception("recording the state of deployment %s failed", record.name)
            return
        if written is not None:
            watch.record = written
