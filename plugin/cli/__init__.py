"""The ``tiffin`` command line, mirroring ``az ml``'s verbs and flags."""

from tiffin.cli.main import app, main

__all__ = ["app", "main", "run"]


def run() -> None:
    """Console-script entry: exit with :func:`main`'s code."""
    import sys

    sys.exit(main())
