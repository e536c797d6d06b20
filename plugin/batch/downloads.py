"""``http(s)://`` batch inputs: a file URL downloaded once into a cache under ``$TIFFIN_HOME``, as Azure's
samples give them (``--input https://.../heart.csv``).

The cache is keyed by URL (``$TIFFIN_HOME/cache/inputs/DIGEST/``): the first job over a URL downloads it,
the next ones ask the server whether it changed (``If-None-Match`` / ``If-Modified-Since`` with the ETag and
Last-Modified it answered) and download it again only if so. A server that gives neither is not asked again:
its file is downloaded once. Each version lives in a folder of its own, named after its validators, so a job
reading one version is not handed half of another; a download is written to a temporary file and renamed into
place whole. Downloads are bounded in size (``TIFFIN_INPUT_URL_MAX_BYTES``) and time
(``TIFFIN_INPUT_URL_TIMEOUT``), and one URL is downloaded by one job at a time.

Who may name a URL is :func:`url_allowed`'s rule (see docs/security.md): the admin token any URL, an endpoint
key or token only URLs under ``TIFFIN_INPUT_URL_PREFIXES``, and its downloads follow no redirect.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tiffin.errors import SpecError, TiffinError

__all__ = ["DownloadStopped", "InputDownloadError", "UrlLimits", "cache_root", "fetch_url", "is_url", "url_allowed"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_CHUNK = 1 << 20
_DEFAULT_PORTS = {"http": 80, "https": 443}


class InputDownloadError(TiffinError):
    """An ``http(s)://`` input could not be downloaded (unreachable, refused, too large, too slow)."""


class DownloadStopped(Exception):
    """The caller's ``stopped`` said to give up (the job was canceled, the server is stopping)."""


@dataclass(frozen=True)
class UrlLimits:
    """How much one download may fetch and how long it may take."""

    max_bytes: int = 1 << 30
    timeout_s: float = 600.0


def is_url(value: str) -> bool:
    """Whether ``value`` is an ``http://`` or ``https://`` URL (what this module downloads)."""
    return value.lower().startswith(("http://", "https://"))


def cache_root(home: Path) -> Path:
    """Where downloaded inputs are kept: ``home/cache/inputs``."""
    return home / "cache" / "inputs"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


def _segments(path: str) -> list[str]:
    return unquote(path).split("/")


def check_url(url: str, field: str = "input") -> None:
    """Refuse what is no plain file URL: no host, credentials in it (they would be stored with the job and
    shown by ``job show``), a fragment, or a NUL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError:
        raise SpecError(f"{url!r} is not a valid URL", field=field) from None
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        raise SpecError(f"{url!r} is not an http(s) URL with a host", field=field)
    if parts.username is not None or parts.password is not None:
        raise SpecError(
            "a URL input cannot carry credentials (they would be kept with the job and shown by `job show`); give "
            "a URL that needs none, or download the file and give its path",
            field=field,
        )
    if "\0" in url or any(ch.isspace() for ch in url):
        raise SpecError("a URL input cannot hold spaces or NUL characters; percent-encode them", field=field)


def url_allowed(url: str, prefixes: Sequence[str]) -> bool:
    """Whether ``url`` lies under one of ``prefixes``: the same scheme, host and port, and a path that starts
    with the prefix's path at a ``/`` boundary. A path with ``.``/``..`` segments (plain or percent-encoded)
    is never under a prefix: the server would resolve it somewhere else."""
    scheme, host, port = _origin(url)
    path = urlsplit(url).path or "/"
    if any(segment in (".", "..") for segment in _segments(path)):
        return False
    for prefix in prefixes:
        if _origin(prefix) != (scheme, host, port):
            continue
        base = urlsplit(prefix).path or "/"
        if path == base or path.startswith(base if base.endswith("/") else base + "/"):
            return True
    return False


def _file_name(url: str) -> str:
    """The URL's last path segment as a safe file name (its suffix decides how MLflow deployments read it)."""
    name = _SAFE.sub("_", _segments(urlsplit(url).path)[-1])
    return name if name.strip(".") else "input"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One download of a URL at a time (jobs on the same URL wait, then find it cached)."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_meta(folder: Path) -> dict[str, str]:
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    file = meta.get("file")
    return meta if isinstance(file, str) and (folder / file).is_file() else {}


def _write_meta(folder: Path, meta: dict[str, str]) -> None:
    tmp = folder / f".meta.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, folder / "meta.json")


def fetch_url(
    url: str,
    home: Path,
    limits: UrlLimits,
    *,
    follow_redirects: bool = False,
    stopped: Callable[[], bool] | None = None,
) -> tuple[Path, str]:
    """The local copy of the file at ``url`` (downloaded or revalidated now) and a line saying what was done.

    ``stopped`` is asked about twice a second while the file arrives; when it answers True the download is
    dropped (nothing stays in the cache) and :class:`DownloadStopped` raised.

    :class:`InputDownloadError` when it cannot be had: an HTTP error, a file over ``limits.max_bytes``, a
    download over ``limits.timeout_s``, a network failure (a copy already cached is used then, and the line
    says so).
    """
    import httpx

    folder = cache_root(home) / hashlib.sha256(url.encode()).hexdigest()[:32]
    with _locked(folder):
        meta = _read_meta(folder)
        if meta and not (meta.get("etag") or meta.get("last_modified")):
            return folder / meta["file"], f"{url}: the copy downloaded before (the server gives no ETag)"
        headers = {}
        if meta.get("etag"):
            headers["If-None-Match"] = meta["etag"]
        if meta.get("last_modified"):
            headers["If-Modified-Since"] = meta["last_modified"]
        deadline = time.monotonic() + limits.timeout_s
        timeout = httpx.Timeout(min(30.0, limits.timeout_s), connect=min(10.0, limits.timeout_s))
        try:
            with (
                httpx.Client(timeout=timeout, follow_redirects=follow_redirects, max_redirects=5) as client,
                client.stream("GET", url, headers=headers) as response,
            ):
                if response.status_code == 304 and meta:
                    return folder / meta["file"], f"{url}: unchanged since it was downloaded"
                if response.is_redirect:
                    raise InputDownloadError(
                        f"{url} answered {response.status_code}, a redirect, which an endpoint key's input does not "
                        "follow; give the URL it redirects to"
                    )
                if response.status_code != 200:
                    raise InputDownloadError(
                        f"{url} answered HTTP {response.status_code}; give a URL that serves the file"
                    )
                length = response.headers.get("content-length")
                if length and length.isdigit() and int(length) > limits.max_bytes:
                    raise InputDownloadError(_too_large(url, limits))
                etag, modified = response.headers.get("etag", ""), response.headers.get("last-modified", "")
                version = hashlib.sha256(f"{etag}\n{modified}".encode()).hexdigest()[:16]
                target = folder / version / _file_name(url)
                target.parent.mkdir(exist_ok=True)
                size = _save(response, target, limits, deadline, url, stopped)
        except httpx.HTTPError as exc:
            if meta:
                return folder / meta["file"], f"{url}: cannot be reached ({exc}); using the copy downloaded before"
            raise InputDownloadError(f"cannot download {url}: {exc}") from None
        _write_meta(folder, {"url": url, "etag": etag, "last_modified": modified, "file": f"{version}/{target.name}"})
        return target, f"{url}: downloaded {size} bytes"


def _too_large(url: str, limits: UrlLimits) -> str:
    return (
        f"{url} is larger than {limits.max_bytes} bytes (the server's TIFFIN_INPUT_URL_MAX_BYTES); download it "
        "and give its path, or raise the limit where tiffin serve runs"
    )


def _save(
    response: object, target: Path, limits: UrlLimits, deadline: float, url: str, stopped: Callable[[], bool] | None
) -> int:
    """Stream ``response``'s body into ``target`` whole or not at all; its size."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    size, next_check = 0, time.monotonic() + 0.5
    try:
        with open(tmp, "wb") as out:
            for chunk in response.iter_bytes(_CHUNK):  # type: ignore[attr-defined]
                if stopped is not None and time.monotonic() >= next_check:
                    next_check = time.monotonic() + 0.5
                    if stopped():
                        raise DownloadStopped(url)
                size += len(chunk)
                if size > limits.max_bytes:
                    raise InputDownloadError(_too_large(url, limits))
                if time.monotonic() > deadline:
                    raise InputDownloadError(
                        f"downloading {url} took more than {limits.timeout_s:g}s (the server's "
                        "TIFFIN_INPUT_URL_TIMEOUT); download it and give its path, or raise the limit"
                    )
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return size
