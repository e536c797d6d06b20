"""For bench_gateway.py's "no tracing code" arm: ``tiffin serve`` with the gateway's tracing lines removed.

On ``PYTHONPATH`` with ``TIFFIN_BENCH_NO_TRACING_CODE=1``, this runs at interpreter start (Python's
``sitecustomize`` hook) in ``tiffin serve`` only: it reads tiffin/gateway/app.py, deletes every block between a
``# tracing:begin`` and a ``# tracing:end`` marker line (the gateway's tracing code: the ``is None`` tests and
what they guard) and re-executes the module's code in its own namespace, so the ``Gateway`` class that
``tiffin.server`` imports is compiled from the same source minus those lines. Nothing else differs.
"""

from __future__ import annotations

import os
import re
import sys

_MARKED = re.compile(r"^[ \t]*# tracing:begin\n.*?^[ \t]*# tracing:end\n", re.MULTILINE | re.DOTALL)

if os.environ.get("TIFFIN_BENCH_NO_TRACING_CODE") == "1" and sys.argv[1:2] == ["serve"]:
    import tiffin.gateway
    import tiffin.gateway.app as _app

    with open(_app.__file__, encoding="utf-8") as _f:
        _source = _f.read()
    _stripped, _count = _MARKED.subn("", _source)
    if _count < 4 or "self.tracing is not None" in _stripped or "outcome.trace is not None" in _stripped:
        raise SystemExit(f"bench: could not strip the tracing code of {_app.__file__} ({_count} blocks)")
    exec(compile(_stripped, _app.__file__, "exec"), _app.__dict__)
    tiffin.gateway.Gateway = _app.Gateway
    print(f"bench: gateway without its tracing code ({_count} blocks removed)", file=sys.stderr, flush=True)
