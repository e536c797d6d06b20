"""What one gateway request came to, filled in as it goes, for the meters, the traffic log and the trace."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tiffin.asgi import Scope

if TYPE_CHECKING:
    from tiffin.telemetry.meters import DeploymentMeter
    from tiffin.telemetry.tracing import RequestTrace
    from tiffin.telemetry.traffic_log import Entry

__all__ = ["Outcome", "traffic_entry"]


class Outcome:
    """One request's status, answering deployment, body sizes, answer headers, meter and trace."""

    __slots__ = ("bytes_in", "bytes_out", "deployment", "headers", "meter", "status", "trace")

    def __init__(self) -> None:
        self.status = 200
        self.deployment = ""
        self.meter: DeploymentMeter | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.headers: list[tuple[bytes, bytes]] | tuple[()] = ()
        self.trace: RequestTrace | None = None


def traffic_entry(scope: Scope, endpoint: str, outcome: Outcome, seconds: float) -> Entry:
    """The traffic log's entry of a request (formatted later, by the log's writer thread)."""
    return (
        time.time(),
        endpoint,
        outcome.deployment,
        scope["method"],
        scope["path"],  # the query string is scope["query_string"]: never logged
        outcome.status,
        seconds,
        scope["headers"],  # only the request-id headers are read from these, by the writer thread
        outcome.headers,
        outcome.bytes_in,
        outcome.bytes_out,
        scope.get("client"),
    )
