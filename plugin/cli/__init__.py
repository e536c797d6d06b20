"""The ``tiffin`` command line, mirroring ``az ml``'s verbs and flags."""

import sys

from tiffin.cli.main import app, main

__all__ = ["app", "main", "run"]


def skip_httpx_cli() -> None:
    """Keep httpx from importing its own command line (``httpx._main``: click, Pygments' lexers, Rich's tables and
    progress bars, ~40 ms) when a command imports httpx: httpx falls back to a stub ``httpx.main`` when that
    module cannot be imported, and the ``tiffin`` process never runs httpx's CLI. Only the console script and
    ``python -m tiffin.cli`` do this, not an importer of :mod:`tiffin.cli` (a test, an application)."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[assignment]


def run() -> None:
    """Console-script entry: exit with :func:`main`'s code."""
    skip_httpx_cli()
    sys.exit(main())
