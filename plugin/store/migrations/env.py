"""Alembic environment of the tiffin state store.

tiffin runs migrations itself (:func:`tiffin.store.engine.upgrade`) and hands over an open
connection, already inside a locked transaction, as ``config.attributes["connection"]``. For
developers, ``alembic -c plugin/store/alembic.ini -x url=sqlite:///path/to/tiffin.db upgrade head``
also works; ``alembic ... revision -m "..."`` needs no database at all.
"""

from __future__ import annotations

from alembic import context

from tiffin.store.engine import make_engine
from tiffin.store.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("pass the database with -x url=<sqlalchemy url>")
    return url


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    """Write the migration SQL to stdout (``alembic upgrade --sql``)."""
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on a new one to ``-x url=...``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url(), foreign_keys=False, single_use=True)
    try:
        with engine.begin() as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
