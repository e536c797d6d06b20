"""Alembic migrations of the tiffin state store; run by :meth:`tiffin.store.Store.open`."""
