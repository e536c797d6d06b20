"""The one small interface every runner implements, and the request/response it speaks.

A runner owns one model (a scoring script, an MLflow model, a Triton model, a user's HTTP server).
The replica's HTTP layer turns a request into a :class:`ScoreRequest`, calls :meth:`Runner.predict`,
and writes the :class:`ScoreResponse` back; it never needs to know which kind of runner it holds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from tiffin._compat import SLOTS

__all__ = ["JSON_CONTENT_TYPE", "Runner", "RunnerSchema", "ScoreRequest", "ScoreResponse"]

JSON_CONTENT_TYPE = "application/json"


@dataclass(frozen=True, **SLOTS)
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


@dataclass(**SLOTS)
class ScoreResponse:
    """What a runner answers; the replica adds the request-id headers."""

    body: bytes
    status: int = 200
    content_type: str = JSON_CONTENT_TYPE
    headers: list[tuple[str, str]] = field(default_factory=list)
    run_function_failed: bool = False


@dataclass(frozen=True, **SLOTS)
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
    """Serves one model. ``predict`` and ``health`` may be plain or ``async`` methods.

    The replica calls ``load`` once per worker process before the first request and ``close`` at
    shutdown. A sync ``predict`` runs in the replica's scoring thread, so it may block; an async
    one runs on the event loop and must not. ``health`` is called on the event loop: a sync one must
    answer at once (a flag, a ``poll()``); one that asks another process over the network is async.

    The class attributes say what else a runner serves; tiffin's runners subclass this protocol to
    inherit the defaults (a runner that does not subclass it must define them itself).
    """

    score_paths: ClassVar[tuple[str, ...]] = ("/score",)
    """Routes that score (Azure's ``/score``; MLflow's runner adds ``/invocations``)."""
    passthrough: ClassVar[bool] = False
    """Paths the replica does not serve itself go to :meth:`predict` as they came (a user's own server)."""
    v2_native: ClassVar[bool] = False
    """V2 (Open Inference Protocol) requests go to :meth:`predict` as they came (the model server speaks V2)."""
    v2_input_key: ClassVar[str | None] = None
    """Where the replica's own V2 adapter puts the input tensors in the JSON body it scores: under this key,
    or (None) as the body itself."""

    @property
    def v2_upstream(self) -> tuple[str, str | None] | None:
        """(URL, default model) of a V2 server the gateway may call directly, once loaded; None: none."""
        return None

    def load(self) -> None:
        """Load the model (and run the user's ``init()``); raise RunnerLoadError on failure."""

    def predict(self, request: ScoreRequest) -> ScoreResponse | Awaitable[ScoreResponse]:
        """Score one request."""

    def health(self) -> bool | Awaitable[bool]:
        """True while the runner can take requests."""

    def close(self) -> None:
        """Release what ``load`` took."""

    def schema(self) -> RunnerSchema:
        """Request/response schemas for the swagger document."""
