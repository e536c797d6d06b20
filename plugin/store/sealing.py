"""Endpoint keys and token secrets sealed at rest with a key kept outside the database.

``az ml online-endpoint get-credentials`` prints an endpoint's keys at any time, so they cannot be stored as
hashes; they are encrypted instead (Fernet: AES-128-CBC with an HMAC-SHA256, from ``cryptography``) with a
key that is not in the database: ``TIFFIN_SECRET_KEY`` if set (what several servers sharing one PostgreSQL
store must all be given), else ``$TIFFIN_HOME/secret-key`` (0600), made on first use. A copy of the database
alone (a backup, a dump, a stray WAL file) gives no key away.

A sealed value reads ``fernet:<token>``; anything else is plaintext from before sealing, which
:meth:`tiffin.store.Store.open` seals in place. ``TIFFIN_SECRET_KEY`` may list several keys separated by
commas, newest first: new values are sealed with the first, all are tried when reading (key rotation).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tiffin.errors import StoreError
from tiffin.paths import secret_key_path, write_private_once

from .models import Endpoint

Sessions = Callable[..., AbstractContextManager[Session]]
"""``Store.session``: ``sessions()`` reads, ``sessions(write=True)`` writes."""

__all__ = [
    "PREFIX",
    "SECRET_COLUMNS",
    "SECRET_KEY_ENV",
    "SecretBox",
    "find_secret_box",
    "is_sealed",
    "load_secret_box",
    "seal_plaintext",
]

SECRET_KEY_ENV = "TIFFIN_SECRET_KEY"
PREFIX = "fernet:"
#: The endpoint columns sealed at rest; records hold their plaintext.
SECRET_COLUMNS = ("primary_key", "secondary_key", "token_secret")
_MAKE_ONE = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


def is_sealed(value: str | None) -> bool:
    """Whether ``value`` (a column's content) is sealed rather than plaintext from before sealing."""
    return value is not None and value.startswith(PREFIX)


class SecretBox:
    """Seals and opens column values with the store's key(s). ``source`` names where the key came from."""

    def __init__(self, keys: list[bytes], source: str) -> None:
        self.source = source
        self._newest = Fernet(keys[0])
        self._newest_key = keys[0]
        self._fernet = MultiFernet([Fernet(key) for key in keys])
        self._rotating = len(keys) > 1
        # Opening costs an HMAC and an AES pass; the routing table reads every endpoint's secrets on each
        # rebuild, so what was opened once is remembered (bounded; plaintext lives in records anyway).
        self._opened: dict[str, str] = {}

    @classmethod
    def from_text(cls, text: str, source: str) -> SecretBox:
        """A box from one key or several (comma-separated, newest first); :class:`StoreError` when malformed."""
        keys = [part.strip().encode() for part in text.split(",") if part.strip()]
        try:
            if not keys:
                raise ValueError("no key")
            return cls(keys, source)
        except ValueError:
            raise StoreError(
                f"{source} does not hold a valid secret key: it must be 32 url-safe base64-encoded bytes (44 "
                f"characters) as `{_MAKE_ONE}` prints, or several separated by commas, newest first"
            ) from None

    def seal(self, value: str | None) -> str | None:
        """``value`` encrypted (None stays None)."""
        if value is None:
            return None
        sealed = PREFIX + self._fernet.encrypt(value.encode()).decode()
        self._remember(sealed, value)
        return sealed

    def _remember(self, sealed: str, value: str) -> None:
        if len(self._opened) >= 4096:
            self._opened.clear()
        self._opened[sealed] = value

    def open(self, value: str | None) -> str | None:
        """The plaintext of a sealed ``value``; plaintext from before sealing comes back as it is."""
        if value is None or not is_sealed(value):
            return value
        opened = self._opened.get(value)
        if opened is None:
            try:
                opened = self._fernet.decrypt(value[len(PREFIX) :].encode()).decode()
            except InvalidToken:
                raise self.wrong_key() from None
            self._remember(value, opened)
        return opened

    def derive(self, purpose: str) -> str:
        """A secret for ``purpose``, the same on every server holding this box's newest key (HMAC-SHA256 of
        the purpose under the key): servers sharing a store authenticate each other with it."""
        return hmac.new(self._newest_key, b"tiffin:" + purpose.encode(), hashlib.sha256).hexdigest()

    def needs_resealing(self, value: str | None) -> bool:
        """Whether ``value`` is plaintext, or (while rotating keys) sealed with an older key than the newest."""
        if value is None:
            return False
        if not is_sealed(value):
            return True
        if not self._rotating:
            return False
        try:
            self._newest.decrypt(value[len(PREFIX) :].encode())
        except InvalidToken:
            return True
        return False

    def wrong_key(self) -> StoreError:
        """The error for secrets sealed with another key than this box's."""
        return StoreError(
            f"the endpoint keys in the state store were sealed with another key than the one in {self.source}: "
            f"restore the secret key this store was created with (the file $TIFFIN_HOME/secret-key, or "
            f"{SECRET_KEY_ENV} where several servers share one store); without it, endpoint keys cannot be "
            "read and must be regenerated"
        )


def load_secret_box(home: Path, environ: Mapping[str, str], *, create: bool) -> SecretBox | None:
    """The box of ``$TIFFIN_SECRET_KEY``, else of ``home/secret-key``; with ``create``, that file is made if
    missing (0600); otherwise None when there is no key."""
    text = environ.get(SECRET_KEY_ENV)
    if text is not None:
        return SecretBox.from_text(text, f"the environment variable {SECRET_KEY_ENV}")
    path = secret_key_path(home)
    source = f"the file {path}"
    try:
        text = path.read_text(encoding="utf-8")
        if path.stat().st_mode & 0o077:  # copied in by hand, or restored from a backup: the user's alone again
            with contextlib.suppress(PermissionError):
                os.chmod(path, 0o600)
        return SecretBox.from_text(text, source)
    except FileNotFoundError:
        if not create:
            return None
    except OSError as exc:
        raise StoreError(f"cannot read the secret key in {source}: {exc.strerror or exc}; check its owner") from exc
    write_private_once(path, Fernet.generate_key() + b"\n")  # or another server's, made a moment ago
    return SecretBox.from_text(path.read_text(encoding="utf-8"), source)


def find_secret_box(sessions: Sessions, home: Path, environ: Mapping[str, str]) -> SecretBox:
    """The store's box; a new key file only while the store holds nothing sealed (else it would hide the
    lost key behind a wrong one)."""
    box = load_secret_box(home, environ, create=False)
    if box is not None:
        return box
    with sessions() as session:
        sealed = any(is_sealed(v) for row in session.execute(select(*_columns())) for v in row)
    if sealed:
        raise missing_key_error(home)
    box = load_secret_box(home, environ, create=True)
    assert box is not None
    return box


def seal_plaintext(sessions: Sessions, box: SecretBox) -> None:
    """Seal plaintext secrets (rows from before sealing), check the key opens the sealed ones, and re-seal
    with the newest key while rotating. No generation moves: nothing a reader sees changes."""
    with sessions() as session:
        rows = session.execute(select(Endpoint.name, *_columns())).all()
    for name, *values in rows:
        plain = [box.open(value) for value in values]  # a wrong key fails here, at start-up
        if not any(box.needs_resealing(value) for value in values):
            continue
        sealed = {column: box.seal(value) for column, value in zip(SECRET_COLUMNS, plain, strict=True)}
        # Only if unchanged since read: keys regenerated meanwhile (by another server) are not put back.
        unchanged = [column == value for column, value in zip(_columns(), values, strict=True)]
        with sessions(write=True) as session:
            session.execute(update(Endpoint).where(Endpoint.name == name, *unchanged).values(**sealed))


def _columns() -> tuple[Any, ...]:
    return tuple(getattr(Endpoint, column) for column in SECRET_COLUMNS)


def missing_key_error(home: Path) -> StoreError:
    """The error for a store with sealed secrets and no key to open them."""
    return StoreError(
        f"the state store holds sealed endpoint keys but there is no secret key: neither {SECRET_KEY_ENV} nor the "
        f"file {secret_key_path(home)} is set; restore the key the store was created with (a new one cannot "
        "read them)"
    )
