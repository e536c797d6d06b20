"""The studio's file server (``tiffin.studio``), in-process: what it serves, with which headers, and what the
page's files may contain. The page itself, in a real browser: tests/test_studio.py."""

from __future__ import annotations

import asyncio
import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

from tiffin.studio import Studio, wants_html

ROOT = Path(__file__).resolve().parents[1]


async def _call(app: Studio, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    scope = {"type": "http", "method": method, "path": path, "headers": []}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def call(app: Studio, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    return asyncio.run(_call(app, method, path))


def test_studio_serves_its_files_with_a_strict_csp_and_nothing_else():
    app = Studio()
    status, headers, body = call(app, "GET", "/studio/")
    assert status == 200 and headers["content-type"].startswith("text/html") and b'src="js/app.js"' in body
    csp = headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    status, headers, body = call(app, "GET", "/studio/js/traffic.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript") and b"trafficProblem" in body
    assert call(app, "GET", "/studio") [:2] == (308, {"content-type": "text/plain", "content-length": "0",
                                                        "location": "/studio/"})  # fmt: skip
    assert call(app, "HEAD", "/studio/studio.css")[2] == b""
    for path in ("/studio/../server.py", "/studio/js/../../__init__.py", "/studio/nope.js", "/studio/%2e%2e/x"):
        assert call(app, "GET", path)[0] == 404, path
    status, headers, _ = call(app, "POST", "/studio/")
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_the_page_has_no_inline_script_or_style_and_builds_no_markup_from_strings():
    static = ROOT / "plugin" / "studio" / "static"
    html = (static / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [] and "style=" not in html and "<style" not in html
    for module in (static / "js").glob("*.js"):
        text = module.read_text()
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", text), (
            module
        )
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text, module


def test_wants_html_is_a_browser_asking_for_a_page():
    browser = [(b"accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")]
    assert wants_html(browser)
    assert (
        not wants_html([(b"accept", b"application/json")])
        and not wants_html([])
        and not wants_html([(b"accept", b"*/*")])
    )


def test_every_file_of_the_page_is_package_data():
    """A file added to static/ that pyproject.toml's globs miss would be absent from the wheel (404 when installed);
    tests/test_packaging.py builds the wheel, this checks the globs without building."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "tiffin.studio" in setuptools["packages"]
    globs = setuptools["package-data"]["tiffin.studio"]
    package = ROOT / "plugin" / "studio"
    files = [p.relative_to(package).as_posix() for p in (package / "static").rglob("*") if p.is_file()]
    assert files and [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)] == []
    assert sorted(Studio().assets) == sorted(f.removeprefix("static/") for f in files)
