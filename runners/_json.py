"""JSON encoding of what scoring code returns (numpy, pandas and pydantic values included)."""

from __future__ import annotations

import json
from typing import Any

from tiffin.errors import ScoringError

__all__ = ["dumps", "to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """``json.dumps``'s ``default`` hook: numpy arrays/scalars, pandas objects, pydantic models."""
    # Look the types up by module name so numpy/pandas are only imported by scripts that use them.
    module = type(value).__module__
    if module.startswith("numpy"):
        return value.tolist()
    if module.startswith("pandas"):
        if hasattr(value, "to_dict"):
            kind = type(value).__name__
            return value.to_dict(orient="records") if kind == "DataFrame" else value.tolist()
        return str(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """Encode ``value`` as UTF-8 JSON; a value that cannot be encoded is a ScoringError."""
    try:
        return json.dumps(value, default=to_jsonable).encode()
    except (TypeError, ValueError) as exc:
        raise ScoringError(
            f"run() returned a value that cannot be encoded as JSON ({exc}); return lists, dicts, "
            "numbers, strings, numpy arrays or pandas DataFrames"
        ) from exc
