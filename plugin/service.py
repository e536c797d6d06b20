"""``tiffin serve`` as a BentoML service, for those who want ``bentoml serve`` to run it::

    TIFFIN_URL=http://127.0.0.1:3000 bentoml serve tiffin.service:Tiffin --port 3000

The control plane, the gateway and the supervisor are the same objects as under ``tiffin serve``
(:class:`tiffin.server.TiffinServer`), mounted at ``/`` beside BentoML's own ``/livez`` and
``/metrics``; BentoML runs their start-up and shutdown through a Starlette lifespan. One worker only:
two supervisors over one store would each start every replica. Requests pass through BentoML's
middleware, which costs throughput; ``tiffin serve`` is the fast way (docs/performance.md).
``TIFFIN_URL`` is the URL clients use (scoring URIs are built from it); the default assumes
BentoML's default port. It listens on 127.0.0.1 (BentoML's own default is every interface); pass
``--host`` to ``bentoml serve`` to choose otherwise.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

# As in tiffin.replica.service: no OpenTelemetry spans nobody exports, unless configured.
os.environ.setdefault("OTEL_SDK_DISABLED", "true")

import bentoml
from starlette.applications import Starlette
from starlette.routing import Mount

from tiffin.config import configure_logging, tiffin_home
from tiffin.paths import prepare_home
from tiffin.server import TiffinServer, ensure_admin_token
from tiffin.store import Store

__all__ = ["tiffin_service"]


def tiffin_service(public_url: str | None = None) -> Any:
    """A BentoML service running tiffin's control plane, gateway and supervisor."""
    configure_logging()
    home = prepare_home(tiffin_home())
    store = Store.open(url=os.environ.get("TIFFIN_STORE_URL"), home=home)
    token, created = ensure_admin_token(home)
    if created:
        print(f"admin token (saved to {home / 'admin-token'}, shown once): {token}", flush=True)
    url = (public_url or os.environ.get("TIFFIN_URL") or "http://127.0.0.1:3000").rstrip("/")
    server = TiffinServer(home=home, store=store, public_url=url, admin_token=token)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await server.startup()
        try:
            yield
        finally:
            await server.shutdown()

    # BentoML runs the lifespan of mounted Starlette apps only, hence the thin wrapper.
    app = Starlette(routes=[Mount("/", app=server)], lifespan=lifespan)

    class Tiffin:
        """tiffin serve inside BentoML."""

    mounted = bentoml.asgi_app(app, path="/", name="tiffin")(Tiffin)
    # BentoML listens on 0.0.0.0 unless told otherwise; this service holds the admin API and every
    # endpoint, so it stays on loopback as `tiffin serve` does (`bentoml serve --host` still overrides it).
    return bentoml.service(name="tiffin", workers=1, http={"host": "127.0.0.1"})(mounted)


def __getattr__(attr: str) -> Any:
    # Built on first lookup by `bentoml serve tiffin.service:Tiffin`, so importing the module is free.
    if attr == "Tiffin":
        service = tiffin_service()
        globals()["Tiffin"] = service
        return service
    raise AttributeError(attr)
