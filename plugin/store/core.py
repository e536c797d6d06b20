"""The store's core: its connection, transactions, schema and routing counter, which the repositories share.

:class:`StoreCore` is the base of the repositories (:mod:`.endpoints`, :mod:`.jobs`) that
:class:`~tiffin.store.Store` puts together; the helpers below are what they have in common.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Self

from sqlalchemy import Engine, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tiffin.errors import NotFoundError, StoreError

from . import engine as _engine
from .models import Counter, Endpoint
from .sealing import SecretBox

__all__ = ["ROUTING_COUNTER", "StoreCore", "check_state", "endpoint_not_found", "now_utc"]

ROUTING_COUNTER = "routing"

# A sealed value must fit the 255-character columns: generated keys are 43 characters, token secrets 64.
_MAX_SECRET = 100


def now_utc() -> datetime:
    return datetime.now(UTC)


def check_state(state: str, allowed: tuple[str, ...], what: str) -> None:
    if state not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, not {state!r}")


def endpoint_not_found(name: str, kind: str | None) -> NotFoundError:
    if kind is None:
        return NotFoundError(
            f"endpoint '{name}' not found; list them with `tiffin online-endpoint list` or `tiffin batch-endpoint list`"
        )
    return NotFoundError(f"{kind} endpoint '{name}' not found; list them with `tiffin {kind}-endpoint list`")


class StoreCore:
    """The state database's connection and transactions; see :class:`~tiffin.store.Store`, built on it."""

    def __init__(
        self,
        url: str | URL,
        *,
        busy_timeout_ms: int = _engine.DEFAULT_BUSY_TIMEOUT_MS,
        secret_box: SecretBox | None = None,
    ) -> None:
        """Connect to ``url`` (a SQLAlchemy URL) without migrating; see :meth:`open`.

        ``secret_box`` seals endpoint keys and token secrets; without one (tests, tools reading jobs) they are
        written as plaintext and sealed ones cannot be read. :meth:`open` always gives one.
        """
        self.url: URL = make_url(url)
        self._box = secret_box
        self._busy_timeout_ms = busy_timeout_ms
        self.engine: Engine = _engine.make_engine(self.url, busy_timeout_ms=busy_timeout_ms)
        self._reads = sessionmaker(self.engine, expire_on_commit=False)
        # BEGIN IMMEDIATE takes SQLite's write lock up front. A deferred transaction that reads
        # first and writes later fails at once with SQLITE_BUSY when another process committed in
        # between, without waiting for the busy timeout. Other backends ignore the option.
        writer = self.engine.execution_options(**{_engine.SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        self._writes = sessionmaker(writer, expire_on_commit=False)

    def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations up to ``revision``; a no-op when the schema is there already."""
        try:
            if _engine.is_sqlite_memory(self.url):
                # An in-memory database lives only in this engine's one connection, so migrate on
                # it, foreign keys on. Such stores are throwaway (tests), not worth a separate path.
                _engine.run_migrations(self.engine, revision)
            else:
                _engine.upgrade(self.url, revision, busy_timeout_ms=self._busy_timeout_ms)
        except OperationalError as exc:
            raise _engine.wrap_db_error(exc, self.url, "upgrading the schema") from exc

    def _sealed(self, value: str | None) -> str | None:
        if value is not None and len(value) > _MAX_SECRET:
            raise ValueError(f"an endpoint key or token secret is at most {_MAX_SECRET} characters")
        return self._box.seal(value) if self._box is not None else value

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (e.g. ``"0002"``), None if it has no schema."""
        return _engine.current_revision(self.engine)

    def close(self) -> None:
        """Release the store's connections."""
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """One short transaction as an ORM session; committed on success, rolled back on error.

        Low level: other modules should use the repository methods, which return plain records.
        """
        factory = self._writes if write else self._reads
        try:
            with factory.begin() as session:
                yield session
        except OperationalError as exc:
            raise _engine.wrap_db_error(exc, self.url, "a write" if write else "a read") from exc

    @contextmanager
    def _routing_write(self) -> Iterator[Session]:
        """A write session that has already bumped the routing counter.

        Bumping first also serialises writers on PostgreSQL (they queue on the counter's row lock),
        so the checks a method does before writing cannot go stale.
        """
        with self.session(write=True) as session:
            self._bump_routing(session)
            yield session

    @staticmethod
    def _bump_routing(session: Session) -> None:
        session.execute(update(Counter).where(Counter.name == ROUTING_COUNTER).values(value=Counter.value + 1))

    def derive_secret(self, purpose: str) -> str:
        """A secret for ``purpose`` derived from the store's secret key: the same on every server sharing the
        store (they share ``TIFFIN_SECRET_KEY``), unknown to anyone without it."""
        if self._box is None:
            raise StoreError("this Store was made without its secret key; open it with Store.open()")
        return self._box.derive(purpose)

    def routing_generation(self) -> int:
        """A number that grows with every change to any endpoint, deployment, traffic or key.

        One primary-key lookup: cheap enough for a gateway to poll every second.
        """
        with self.session() as session:
            value = session.scalar(select(Counter.value).where(Counter.name == ROUTING_COUNTER))
        return int(value or 0)

    @staticmethod
    def _endpoint(session: Session, name: str, kind: str | None = None) -> Endpoint:
        """The endpoint row ``name``; with ``kind``, one of the other kind counts as missing.

        Here because both repositories need it: deployments belong to an endpoint, jobs to a batch one.
        """
        row = session.get(Endpoint, name)
        if row is None or (kind is not None and row.kind != kind):
            raise endpoint_not_found(name, kind)
        return row
