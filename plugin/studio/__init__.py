"""The studio: a web page at ``/studio`` to run endpoints from, over the same REST API as the CLI and SDK.

The page is static (HTML, CSS and JavaScript modules shipped in ``static/``, no build step, nothing loaded
from elsewhere) and holds no data: it signs in with the admin token, keeps it in the tab's
``sessionStorage`` and sends it as ``Authorization: Bearer`` to ``/api``. Serving its files needs no
credential for that reason; every answer carries a strict Content-Security-Policy (scripts from this
origin only, no inline code), so data the page shows cannot run as code even if a bug let it in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tiffin.asgi import Receive, Scope, Send, send_bytes, send_error

__all__ = ["PREFIX", "SECURITY_HEADERS", "Studio", "wants_html"]

PREFIX = "/studio"
STATIC = Path(__file__).parent / "static"

_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
}

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    # connect-src 'self': the page talks to /api and the gateway on this same port, nothing else.
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        b"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    # The files change with tiffin's version only, but a stale module next to a fresh one breaks the page.
    (b"cache-control", b"no-cache"),
)


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    content_type: bytes


def _load(folder: Path) -> dict[str, _Asset]:
    """Every servable file under ``folder`` by its URL path below the prefix (``index.html``, ``js/app.js``).

    Read once: requests are answered from this table, so no request path ever reaches the file system.
    """
    assets = {}
    for path in sorted(folder.rglob("*")):
        content_type = _TYPES.get(path.suffix)
        if path.is_file() and content_type is not None:
            assets[path.relative_to(folder).as_posix()] = _Asset(path.read_bytes(), content_type)
    return assets


def wants_html(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request's ``Accept`` header asks for HTML first-hand (a browser), not JSON (curl, a client)."""
    for name, value in headers:
        if name.lower() == b"accept":
            return b"text/html" in value.lower()
    return False


class Studio:
    """The ASGI app serving ``/studio/...``: ``/studio`` redirects to ``/studio/``, which is ``index.html``."""

    def __init__(self, folder: Path = STATIC) -> None:
        self.assets: Mapping[str, _Asset] = _load(folder)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if scope["method"] not in ("GET", "HEAD"):
            await send_error(send, 405, "the studio's files are read with GET", [(b"allow", b"GET, HEAD")])
            return
        if path == PREFIX:
            await send_bytes(send, 308, b"", b"text/plain", [(b"location", PREFIX.encode() + b"/")])
            return
        name = path[len(PREFIX) + 1 :] or "index.html"
        asset = self.assets.get(name)
        if asset is None:
            await send_error(send, 404, f"{path} is not a file of the studio; open {PREFIX}/")
            return
        body = b"" if scope["method"] == "HEAD" else asset.body
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", asset.content_type),
                    (b"content-length", b"%d" % len(asset.body)),
                    *SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
