"""HTTP to the control plane: finding the server and its admin token, and turning error answers
into tiffin's exceptions (one mapping, :func:`raise_for_status`)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx

from tiffin.config import tiffin_home
from tiffin.errors import (
    AuthError,
    BadRequestError,
    CapacityError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    RequestTimeoutError,
    SpecError,
    TiffinError,
    UnavailableError,
    UnsupportedMediaTypeError,
)
from tiffin.paths import admin_token_path

__all__ = ["Transport", "find_admin_token", "path", "raise_for_status"]

# What each status the server answers means on this side; 422 is a spec the server refused.
_BY_STATUS: dict[int, type[TiffinError]] = {
    400: BadRequestError,
    401: AuthError,
    404: NotFoundError,
    408: RequestTimeoutError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: SpecError,
    429: CapacityError,
    503: UnavailableError,
}


def path(*parts: str) -> str:
    """A URL path from names, each escaped so that a stray '/' or '?' cannot change the route."""
    return "/" + "/".join(quote(part, safe="") for part in parts)


def find_admin_token(environ: Mapping[str, str] = os.environ) -> str:
    """``$TIFFIN_ADMIN_TOKEN``, else the file ``tiffin serve`` writes, ``$TIFFIN_HOME/admin-token``."""
    token = environ.get("TIFFIN_ADMIN_TOKEN", "").strip()
    if token:
        return token
    file = admin_token_path(tiffin_home(environ))
    try:
        token = file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    except OSError as exc:
        raise TiffinError(f"cannot read the admin token at {file}: {exc.strerror or exc}") from None
    if not token:
        raise TiffinError(
            f"no admin token: start the server with `tiffin serve` (it writes {file}), or set TIFFIN_ADMIN_TOKEN "
            "(and TIFFIN_HOME or TIFFIN_URL if the server runs elsewhere)"
        )
    return token


def raise_for_status(response: httpx.Response) -> None:
    """Raise the tiffin exception matching a non-2xx answer, with the server's own message."""
    if response.is_success:
        return
    message = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            message = str(body.get("message") or body.get("detail") or "")
    except ValueError:
        message = response.text.strip()
    message = message or f"{response.status_code} {response.reason_phrase}"
    error = _BY_STATUS.get(response.status_code, TiffinError)
    if error is TiffinError:
        message = f"HTTP {response.status_code} from {response.request.url}: {message}"
    raise error(message)


class Transport:
    """The control plane at ``url`` (``/api`` below it), authenticated with the admin token.

    Scoring requests go through a separate client that never carries the admin token, so a local
    endpoint (no auth) cannot pass it on to a deployment's code.
    """

    def __init__(self, url: str, admin_token: str, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._api = httpx.Client(
            base_url=f"{self.url}/api", headers={"Authorization": f"Bearer {admin_token}"}, timeout=timeout
        )
        self._scoring: httpx.Client | None = None

    def request(self, method: str, route: str, *, json: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        """Call the control plane; the decoded JSON answer (text for text/plain, None for 204)."""
        response = self._send(self._api, method, route, json=json, params=params)
        raise_for_status(response)
        if response.status_code == 204:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def response(self, method: str, route: str, *, params: Mapping[str, Any] | None = None) -> httpx.Response:
        """Call the control plane; the whole answer (headers, bytes), once it is known to be a success."""
        response = self._send(self._api, method, route, params=params)
        raise_for_status(response)
        return response

    def stream_to(self, method: str, route: str, file: BinaryIO) -> None:
        """Call the control plane and write the answer's body into ``file`` as it arrives (a large download
        never sits in memory whole); an error answer raises as :meth:`request` does."""
        with self._transport_errors(), self._api.stream(method, route) as response:
            if not response.is_success:
                response.read()
                raise_for_status(response)
            for chunk in response.iter_bytes(1 << 20):
                file.write(chunk)

    def stream_lines(
        self, method: str, route: str, *, json: Any = None, accept: str, read_timeout: float | None
    ) -> Iterator[str]:
        """Call the control plane and yield its answer's lines as they arrive (a long operation's progress); an
        error answer raises as :meth:`request` does. ``read_timeout``: the longest wait for the next bytes."""
        timeout = httpx.Timeout(self.timeout, read=read_timeout)
        headers = {"Accept": accept}
        with (
            self._transport_errors(),
            self._api.stream(method, route, json=json, headers=headers, timeout=timeout) as response,
        ):
            if not response.is_success:
                response.read()
                raise_for_status(response)
            yield from response.iter_lines()

    def score(self, url: str, content: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POST ``content`` to a scoring URL; the raw answer (the caller decides what an error is)."""
        if self._scoring is None:
            self._scoring = httpx.Client(timeout=self.timeout)
        return self._send(self._scoring, "POST", url, content=content, headers=headers)

    def _send(self, client: httpx.Client, method: str, url: str, **kwargs: Any) -> httpx.Response:
        with self._transport_errors():
            return client.request(method, url, **kwargs)

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        """httpx's connection and timeout failures as tiffin errors saying what to check."""
        try:
            yield
        except httpx.ConnectError:
            raise TiffinError(f"cannot reach tiffin at {self.url}; is `tiffin serve` running?") from None
        except httpx.TimeoutException:
            raise RequestTimeoutError(
                f"tiffin at {self.url} did not answer within {self.timeout:g}s; try again, or raise the timeout"
            ) from None
        except httpx.HTTPError as exc:
            raise TiffinError(f"request to tiffin at {self.url} failed: {exc}") from None

    def close(self) -> None:
        """Close the connections."""
        self._api.close()
        if self._scoring is not None:
            self._scoring.close()
