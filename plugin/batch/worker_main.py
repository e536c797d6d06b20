"""``python -m tiffin.batch.worker_main --fd N``: a batch worker on a deployment environment's interpreter.

Started by :class:`tiffin.batch.pool.LocalPool` (see :func:`tiffin.batch.worker.main`). A module of its own, so
``-m`` does not run :mod:`tiffin.batch.worker` as ``__main__`` beside a second, imported copy of it.
"""

from __future__ import annotations

import contextlib
import os
import sys

from tiffin.batch.worker import main

if __name__ == "__main__":
    code = main()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    # As a forked worker does: threads the scoring code left running must not keep a finished worker alive.
    os._exit(code)
