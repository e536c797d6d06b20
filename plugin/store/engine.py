"""Engines and migrations: where the database is, how connections are set up, how the schema is upgraded.

Only :func:`default_url` reads the environment, and only when asked to; everything else here takes
explicit values.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool, StaticPool

from tiffin.errors import StoreError

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_MS",
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "default_url",
    "head_revision",
    "is_sqlite_memory",
    "make_engine",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
DEFAULT_BUSY_TIMEOUT_MS = 15_000
#: Execution option naming the statement that opens a SQLite transaction (see ``make_engine``).
SQLITE_BEGIN_OPTION = "tiffin_sqlite_begin"
# Any fixed 64-bit number: the PostgreSQL advisory lock that serialises concurrent upgrades.
_PG_MIGRATION_LOCK_KEY = 0x7469_6666_696E  # "tiffin"


def home_of(home: Path | None = None) -> Path:
    """``home``, else ``$TIFFIN_HOME``, else ``~/.tiffin``: where the store and its secret key live."""
    if home is None:
        home = Path(os.environ.get("TIFFIN_HOME") or "~/.tiffin")
    return Path(home).expanduser().resolve()


def default_url(home: Path | None = None) -> str:
    """The SQLAlchemy URL of the default SQLite store: ``<home>/tiffin.db``.

    ``home`` defaults to ``$TIFFIN_HOME``, else ``~/.tiffin``. ``TIFFIN_STORE_URL`` is *not* read
    here; :meth:`tiffin.store.Store.open` gives it precedence.
    """
    path = home_of(home) / "tiffin.db"
    return URL.create("sqlite", database=str(path)).render_as_string()


def is_sqlite_memory(url: URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database (one that lives only in one connection)."""
    if url.get_backend_name() != "sqlite":
        return False
    db = url.database or ""
    return db in ("", ":memory:") or "mode=memory" in db or url.query.get("mode") == "memory"


def sqlite_file(url: URL) -> Path | None:
    """The database file of a file-backed SQLite URL, else None."""
    if url.get_backend_name() != "sqlite" or is_sqlite_memory(url):
        return None
    db = url.database or ""
    if db.startswith("file:"):  # a sqlite URI (``?uri=true``): the path ends at the query string
        db = db[len("file:") :].split("?", 1)[0]
    return Path(db)


def make_engine(
    url: str | URL,
    *,
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    foreign_keys: bool = True,
    single_use: bool = False,
    **kwargs: Any,
) -> Engine:
    """Create an engine for ``url``, with the SQLite connection settings tiffin relies on.

    For SQLite every new connection gets WAL mode (readers never block the writer, so the gateway
    can poll while the CLI writes), ``foreign_keys=ON`` (SQLite ignores ``ON DELETE CASCADE``
    otherwise) and a busy timeout (a writer waits for another instead of failing at once). The
    ``sqlite3`` module's own transaction handling is replaced by explicit ``BEGIN`` statements, so
    that DDL is transactional (a migration applies entirely or not at all) and a write transaction
    can open with ``BEGIN IMMEDIATE`` (see :data:`SQLITE_BEGIN_OPTION`). ``single_use`` gives a
    pool-less engine, used for migrations whose connection settings must not be reused.
    """
    url = make_url(url)
    if url.get_backend_name() != "sqlite":
        if single_use:
            kwargs.setdefault("poolclass", NullPool)
        return create_engine(url, **kwargs)

    if is_sqlite_memory(url):
        # One shared connection, or every checkout would see a different empty database.
        kwargs.setdefault("poolclass", StaticPool)
        kwargs.setdefault("connect_args", {"check_same_thread": False})
    elif single_use:
        kwargs.setdefault("poolclass", NullPool)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level: SQLAlchemy emits BEGIN itself in ``_on_begin``.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL needs a lock another process may briefly hold.
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if not is_sqlite_memory(url):  # memory databases cannot use WAL
                cursor.execute("PRAGMA journal_mode = WAL")
                # NORMAL is crash-safe in WAL mode and avoids an fsync per commit.
                cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "BEGIN"))

    return engine


def alembic_config() -> Config:
    """An Alembic config pointing at the packaged migrations; no ``alembic.ini`` is read."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    """The newest migration revision this version of tiffin knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the packaged migrations have no head revision"
    return head


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str | URL, revision: str = "head", *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
    """Upgrade the database at ``url`` to ``revision``; safe to run from many processes at once.

    Concurrent upgrades (two CLI commands on a fresh machine, several gateway workers) are
    serialised: SQLite by a lock file next to the database plus a ``BEGIN IMMEDIATE`` transaction,
    PostgreSQL by a transaction-scoped advisory lock. The process that waits then finds the schema
    current and does nothing. In-memory SQLite is not handled here (see ``Store``).
    """
    url = make_url(url)
    db_file = sqlite_file(url)
    if db_file is not None:
        _private_sqlite_files(db_file)
    # Foreign keys off while migrating: SQLite "batch" migrations rebuild a table by copying and
    # dropping it, and dropping ``endpoints`` with foreign keys on would cascade-delete every
    # deployment. Hence also a pool-less engine, so this connection is never reused.
    engine = make_engine(url, busy_timeout_ms=busy_timeout_ms, foreign_keys=False, single_use=True)
    try:
        with _file_lock(db_file.with_name(db_file.name + ".migrate.lock")) if db_file else _nolock():
            run_migrations(engine, revision)
    finally:
        engine.dispose()


def run_migrations(engine: Engine, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` in one transaction on ``engine`` (no file lock)."""
    known = ScriptDirectory.from_config(alembic_config())
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(**{SQLITE_BEGIN_OPTION: "BEGIN IMMEDIATE"})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY})
            _refuse_unknown_revision(conn, known, engine)
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            if engine.dialect.name == "sqlite":
                problems = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise StoreError(
                        f"migrating the state store left rows pointing at missing rows: {problems[:5]}; "
                        "this is a bug in a tiffin migration, please report it"
                    )


def _refuse_unknown_revision(conn: Any, known: ScriptDirectory, engine: Engine) -> None:
    current = MigrationContext.configure(conn).get_current_revision()
    if current is None:
        return
    try:
        known.get_revision(current)
    except (CommandError, RevisionError) as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise StoreError(
            f"the state store at {where} is at schema revision {current!r}, which this tiffin does not "
            "know: it was written by a newer tiffin. Upgrade tiffin, or point TIFFIN_STORE_URL / "
            "TIFFIN_HOME at another store"
        ) from exc


def _private_sqlite_files(db_file: Path) -> None:
    """The database private to its user (0600) before SQLite opens it, so its WAL and shared-memory files,
    which SQLite creates with the database's permissions, are private too; files of an older tiffin made so."""
    db_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not db_file.exists():
        # An empty file is an empty SQLite database.
        os.close(os.open(db_file, os.O_WRONLY | os.O_CREAT, 0o600))
    for path in (db_file, *(db_file.with_name(db_file.name + s) for s in ("-wal", "-shm", "-journal"))):
        # Missing, or not ours (a store shared on purpose): left as it is.
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)


@contextmanager
def _nolock() -> Iterator[None]:
    yield


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed), held for the ``with`` block."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+b") as fh:
        if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
            import msvcrt

            fh.seek(0)
            while True:
                try:
                    msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after ~10 s; keep waiting like flock does
                    continue
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def wrap_db_error(exc: SQLAlchemyError, url: URL, doing: str) -> StoreError:
    """A :class:`StoreError` for a database failure, saying where the store is and what to try."""
    where = url.render_as_string(hide_password=True)
    detail = getattr(exc, "orig", None) or exc
    hint = "check that the database is reachable and TIFFIN_STORE_URL is right"
    if "locked" in str(detail).lower() or "busy" in str(detail).lower():
        hint = "another tiffin process held the database too long; retry the command"
    return StoreError(f"{doing} failed on the state store at {where}: {detail}; {hint}")
