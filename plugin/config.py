"""Where tiffin keeps its files. Read from the environment here, at the edge, and passed down."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["DEFAULT_URL", "configure_logging", "tiffin_home", "tiffin_url"]

DEFAULT_URL = "http://127.0.0.1:7700"


def tiffin_home(environ: Mapping[str, str] = os.environ) -> Path:
    """``$TIFFIN_HOME`` or ``~/.tiffin``: the store, replica logs, model mounts, the admin token."""
    return Path(environ.get("TIFFIN_HOME") or Path.home() / ".tiffin").expanduser()


def tiffin_url(environ: Mapping[str, str] = os.environ) -> str:
    """``$TIFFIN_URL``: where the CLI and SDK find ``tiffin serve``."""
    return (environ.get("TIFFIN_URL") or DEFAULT_URL).rstrip("/")


def configure_logging() -> None:
    """tiffin's own messages at INFO on stderr, with time and process; once per process.

    Only the ``tiffin`` logger: the root logger (a scoring script's ``logging.info()``) keeps Python's
    WARNING default, as under Azure's server, so per-request logging in ``run()`` costs nothing.
    """
    logger = logging.getLogger("tiffin")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
