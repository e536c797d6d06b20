"""A deployment as a BentoML service, so ``bentoml serve`` and ``bentoml build`` work on it.

Serve a deployment YAML with plain BentoML::

    TIFFIN_DEPLOYMENT=examples/quickstart/blue-deployment.yml \\
        bentoml serve tiffin.replica.service:Deployment --port 5001

The service mounts the replica's ASGI app (:class:`tiffin.replica.app.ReplicaApp`) at ``/``, so the
same Azure contract (``GET /``, ``POST /score``, ``GET /swagger.json``) is served; BentoML's own
``/livez``, ``/readyz`` and ``/metrics`` stay available beside it. Requests then pass through
BentoML's middleware stack (metrics, OpenTelemetry), which costs throughput: ``tiffin replica
serve`` runs the same app without it (docs/performance.md has the figures).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# BentoML builds an OpenTelemetry span for every request even when nothing exports them (a third of
# a worker's time, docs/performance.md). Unless the user configured tracing, switch the SDK off before BentoML
# creates its tracer provider.
os.environ.setdefault("OTEL_SDK_DISABLED", "true")

import bentoml

from tiffin.replica.factory import app_from_file

__all__ = ["deployment_service"]

_ENV = "TIFFIN_DEPLOYMENT"


def deployment_service(path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """A BentoML service serving the deployment YAML at ``path``."""
    app, loaded = app_from_file(path, overrides)
    deployment = loaded.spec
    name = re.sub(r"[^a-z0-9-]+", "-", f"{deployment.endpoint_name or 'tiffin'}-{deployment.name}".lower()).strip("-")
    timeout_s = max(1, deployment.request_settings.request_timeout_ms // 1000 + 1)

    class Deployment:
        """One replica: the scoring runner loads in each BentoML worker as it starts."""

        def __init__(self) -> None:
            app.startup()

        def __del__(self) -> None:
            app.shutdown()

    Deployment.__qualname__ = Deployment.__name__ = "Deployment"
    mounted = bentoml.asgi_app(app, path="/", name="tiffin-replica")(Deployment)
    return bentoml.service(name=name, traffic={"timeout": timeout_s}, workers=1)(mounted)


def __getattr__(attr: str) -> Any:
    # `bentoml serve tiffin.replica.service:Deployment` looks this attribute up; build it lazily so that
    # importing the module needs no TIFFIN_DEPLOYMENT.
    if attr == "Deployment":
        path = os.environ.get(_ENV)
        if not path:
            raise RuntimeError(
                f"set {_ENV} to a deployment YAML, e.g. {_ENV}=blue-deployment.yml bentoml serve "
                "tiffin.replica.service:Deployment"
            )
        service = deployment_service(path)
        globals()["Deployment"] = service
        return service
    raise AttributeError(attr)
