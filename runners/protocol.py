"""The one small interface every runner implements, and the request/response it speaks.

A runner owns one model (a scoring script, an MLflow model, a Triton model, a user's HTTP server).
The replica's HTTP layer turns a request into a :class:`ScoreRequest`, calls :meth:`Runner.predict`,
and writes the :class:`ScoreResponse` back; it never needs to know which kind of runner it holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["JSON_CONTENT_TYPE", "Runner", "RunnerSchema", "ScoreRequest", "ScoreResponse"]

JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """One scoring call as bytes: runners decode the body themselves, only when they must."""

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    """Request headers, names lower-cased."""
    method: str = "POST"
    path: str = "/score"
    query_string: bytes = b""

    @property
    def content_type(self) -> str:
        """The media type without parameters, lower-cased ('' when absent)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@dataclass(slots=True)
class ScoreResponse:
    """What a runner answers; the replica adds the request-id headers."""

    body: bytes
    status: int = 200
    content_type: str = JSON_CONTENT_TYPE
    headers: list[tuple[str, str]] = field(default_factory=list)
    run_function_failed: bool = False


@dataclass(frozen=True, slots=True)
class RunnerSchema:
    """JSON schemas of the scoring request and response, for swagger/OpenAPI documents.

    ``None`` means "any JSON". ``swagger`` holds documents the user wrote themselves (Azure lets a
    scoring directory carry ``swagger2.json`` / ``swagger3.json``), keyed by major version; they are
    served as they are.
    """

    input: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    versions: tuple[str, ...] = ("2", "3")
    swagger: Mapping[str, dict[str, Any]] = field(default_factory=dict)


@runtime_checkable
class Runner(Protocol):
    """Serves one model. ``predict`` may be a plain or an ``async`` method.

    The replica calls ``load`` once per worker process before the first request and ``close`` at
    shutdown. A sync ``predict`` runs in the replica's scoring thread, so it may block; an async
    one runs on the event loop and must not.
    """

    def load(self) -> None:
        """Load the model (and run the user's ``init()``); raise RunnerLoadError on failure."""

    def predict(self, request: ScoreRequest) -> ScoreResponse | Awaitable[ScoreResponse]:
        """Score one request."""

    def health(self) -> bool:
        """True while the runner can take requests."""

    def close(self) -> None:
        """Release what ``load`` took."""

    def schema(self) -> RunnerSchema:
        """Request/response schemas for the swagger document."""
