"""For bench_gateway.py's "no tracing code" arm: ``tiffin serve`` with the gateway's tracing lines removed.

On ``PYTHONPATH`` with ``TIFFIN_BENCH_NO_TRACING_CODE=1``, this runs at interpreter start (Python's
``sitecustomize`` hook) in ``tiffin serve`` only: it reads tiffin/gateway/exchange.py and tiffin/gateway/app.py
(the gateway's request path), deletes every block between a ``# tracing:begin`` and a ``# tracing:end`` marker
line (the gateway's tracing code: the ``is None`` tests and what they guard) and re-executes each module's code
in its own namespace, exchange.py first (app.py's ``Gateway`` subclasses its ``Forwarding``), so the ``Gateway``
class that ``tiffin.server`` imports is compiled from the same source minus those lines. Nothing else differs.
"""

from __future__ import annotations

import importlib
import os
import re
import sys

_MARKED = re.compile(r"^[ \t]*# tracing:begin\n.*?^[ \t]*# tracing:end\n", re.MULTILINE | re.DOTALL)
_MODULES = ("tiffin.gateway.exchange", "tiffin.gateway.app")  # in this order: app imports exchange's class
_LEFT = ("self.tracing is not None", "outcome.trace is not None", "trace is not None")

if os.environ.get("TIFFIN_BENCH_NO_TRACING_CODE") == "1" and sys.argv[1:2] == ["serve"]:
    import tiffin.gateway

    _total = 0
    for _name in _MODULES:
        _module = importlib.import_module(_name)
        with open(_module.__file__, encoding="utf-8") as _f:
            _source = _f.read()
        _stripped, _count = _MARKED.subn("", _source)
        if not _count or any(left in _stripped for left in _LEFT):
            raise SystemExit(f"bench: could not strip the tracing code of {_module.__file__} ({_count} blocks)")
        exec(compile(_stripped, _module.__file__, "exec"), _module.__dict__)
        _total += _count
    if _total < 6:
        raise SystemExit(f"bench: only {_total} tracing blocks found in the gateway's modules; were markers lost?")
    tiffin.gateway.Gateway = sys.modules["tiffin.gateway.app"].Gateway
    print(f"bench: gateway without its tracing code ({_total} blocks removed)", file=sys.stderr, flush=True)
