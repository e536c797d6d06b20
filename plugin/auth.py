"""Endpoint credentials: keys (``auth_mode: key``) and expiring signed tokens (``aml_token``/``aad_token``).

Pure functions; the store keeps each endpoint's keys and token secret, the gateway calls
:func:`authenticate` with them. Keys are compared in constant time and never logged or echoed in errors.

Tokens are JWTs (HS256, PyJWT) signed with the endpoint's own secret and naming the endpoint, so a token
of one endpoint never opens another and regenerating the secret revokes every token at once.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from tiffin.errors import AuthError, BadRequestError

__all__ = [
    "TOKEN_LIFETIME",
    "Credentials",
    "IssuedToken",
    "authenticate",
    "authorization_header",
    "bearer_value",
    "issue_token",
    "new_key",
    "new_token_secret",
    "verify_token",
]

TOKEN_LIFETIME = timedelta(hours=1)
_ALGORITHM = "HS256"
_ISSUER = "tiffin"
TOKEN_MODES = frozenset({"aml_token", "aad_token"})


def new_key() -> str:
    """A new endpoint key: 32 random bytes, URL-safe (43 characters), never starting with '-'.

    A key that starts with '-' reads as an option when pasted after a command (``script.py URI KEY``)."""
    while True:
        key = secrets.token_urlsafe(32)
        if not key.startswith("-"):
            return key


def new_token_secret() -> str:
    """A new secret for signing an endpoint's tokens."""
    return secrets.token_urlsafe(48)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What an endpoint accepts. Hidden from ``repr`` so a stray log line leaks nothing."""

    auth_mode: str
    primary_key: str | None = None
    secondary_key: str | None = None
    token_secret: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(auth_mode={self.auth_mode!r}, ...)"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token and its expiry, as ``az ml online-endpoint get-credentials`` prints them."""

    access_token: str
    expiry: datetime

    def as_azure(self) -> dict[str, str]:
        """Azure CLI's field names: ``accessToken``, ``expiryTimeUtc``, ``tokenType``."""
        return {
            "accessToken": self.access_token,
            "expiryTimeUtc": self.expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "refreshAfterTimeUtc": (self.expiry - TOKEN_LIFETIME / 2).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tokenType": "Bearer",
        }


def issue_token(
    endpoint: str, secret: str, *, now: datetime | None = None, lifetime: timedelta = TOKEN_LIFETIME
) -> IssuedToken:
    """Sign a token for ``endpoint`` valid from ``now`` for ``lifetime``."""
    now = now or datetime.now(UTC)
    expiry = (now + lifetime).replace(microsecond=0)
    claims = {"iss": _ISSUER, "aud": endpoint, "iat": int(now.timestamp()), "exp": int(expiry.timestamp())}
    return IssuedToken(jwt.encode(claims, secret, algorithm=_ALGORITHM), expiry)


def verify_token(token: str, endpoint: str, secret: str, *, now: datetime | None = None) -> None:
    """Raise AuthError unless ``token`` was signed with ``secret`` for ``endpoint`` and has not expired."""
    options = {"require": ["exp", "aud", "iss"]}
    try:
        if now is None:
            jwt.decode(token, secret, algorithms=[_ALGORITHM], audience=endpoint, issuer=_ISSUER, options=options)
        else:  # tests pass a clock; PyJWT reads the real one, so check expiry here instead
            claims = jwt.decode(
                token,
                secret,
                algorithms=[_ALGORITHM],
                audience=endpoint,
                issuer=_ISSUER,
                options={**options, "verify_exp": False},
            )
            if claims["exp"] <= now.timestamp():
                raise jwt.ExpiredSignatureError
    except jwt.ExpiredSignatureError:
        raise AuthError(
            f"the token for endpoint '{endpoint}' has expired; get a new one with "
            f"`tiffin online-endpoint get-credentials -n {endpoint}`"
        ) from None
    except jwt.InvalidTokenError:
        raise AuthError(f"the token is not valid for endpoint '{endpoint}'") from None


def bearer_value(authorization: str | None) -> str | None:
    """The credential in an ``Authorization: Bearer <value>`` header (None when absent or malformed)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authorization_header(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The value of the one ``Authorization`` header among ASGI ``headers`` (None when there is none).

    Two are refused (BadRequestError): proxies and servers disagree on which one counts (first or last),
    so a request carrying two could be checked with one credential and logged or forwarded with the other.
    """
    found: bytes | None = None
    for key, value in headers:
        if key == b"authorization":
            if found is not None:
                raise BadRequestError("the request has two Authorization headers; send exactly one")
            found = value
    return None if found is None else found.decode("latin-1")


def authenticate(authorization: str | None, endpoint: str, credentials: Credentials) -> None:
    """Raise AuthError (401) unless the Authorization header carries a credential ``endpoint`` accepts."""
    mode = credentials.auth_mode
    if mode == "none":  # --local endpoints, Azure's local-endpoint semantics
        return
    value = bearer_value(authorization)
    if value is None:
        what = "a key" if mode == "key" else "a token"
        raise AuthError(
            f"endpoint '{endpoint}' needs {what}: send the header 'Authorization: Bearer <{what[2:]}>' "
            f"(see `tiffin online-endpoint get-credentials -n {endpoint}`)"
        )
    if mode == "key":
        # Compare against both keys every time: how long the check takes says nothing about which matched.
        matches = [
            hmac.compare_digest(value.encode(), key.encode())
            for key in (credentials.primary_key, credentials.secondary_key)
            if key
        ]
        if not any(matches):
            raise AuthError(f"the key is not valid for endpoint '{endpoint}'")
        return
    if mode in TOKEN_MODES and credentials.token_secret:
        verify_token(value, endpoint, credentials.token_secret)
        return
    raise AuthError(f"endpoint '{endpoint}' has auth_mode '{mode}', which tiffin cannot check")
