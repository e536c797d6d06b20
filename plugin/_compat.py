"""What tiffin's runtime modules need to run on Python 3.8 to 3.13 (see :mod:`tiffin.environments.runtime`).

tiffin's own side is Python 3.11 code; the modules a replica or batch worker imports inside a deployment's
environment run on that environment's interpreter, as old as 3.8. They take what differs from here.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["SLOTS", "removeprefix", "removesuffix"]

SLOTS: dict[str, Any] = {"slots": True} if sys.version_info >= (3, 10) else {}
"""``@dataclass(**SLOTS)``: slots where dataclasses make them (3.10+), so tiffin's own hot path keeps its smaller,
faster objects, and plain dataclasses on older interpreters."""


def removeprefix(text: str, prefix: str) -> str:
    """``str.removeprefix`` (3.9+)."""
    return text[len(prefix) :] if prefix and text.startswith(prefix) else text


def removesuffix(text: str, suffix: str) -> str:
    """``str.removesuffix`` (3.9+)."""
    return text[: -len(suffix)] if suffix and text.endswith(suffix) else text
