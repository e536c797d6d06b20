"""Traces of the gateway (OpenTelemetry SDK, exported over OTLP/HTTP), made only when an exporter is configured.

As on Azure, the exporter says where spans go and a deployment is traced when its YAML says
``app_insights_enabled: true`` (:attr:`~tiffin.routing.DeploymentRoute.traced`), or every deployment when the
server is started with ``TIFFIN_TRACE_ALL_DEPLOYMENTS=1``. So a request's trace begins once the gateway knows
the deployment that answers it; its ``gateway routing`` span still starts when the request arrived.

A traced request gets a ``gateway routing`` span (a child of the caller's W3C ``traceparent`` when it sent
one), a ``queue wait`` span (the wait for a slot of the deployment) and an ``upstream call`` span per attempt,
whose context goes to the replica in the ``traceparent`` header; the replica's ``replica scoring`` span
(:mod:`tiffin.telemetry.replica`) is its child. A request to an untraced deployment makes no span, and the
caller's ``traceparent`` reaches the replica as it was sent. Without an exporter the gateway holds no tracer
and its hot path pays one ``is None`` test per hook (this module imports OpenTelemetry only when a tracer is
made).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tiffin.routing import DeploymentRoute, Replica, RoutingTable

__all__ = ["GatewayTracing", "RequestTrace", "untraced_asks"]

logger = logging.getLogger("tiffin.telemetry")

_CONTEXT_HEADERS = (b"traceparent", b"tracestate")
Headers = list[tuple[bytes, bytes]]


class GatewayTracing:
    """The gateway's tracer provider, exporting in batches to ``traces_url`` (an OTLP/HTTP ``/v1/traces``);
    ``all_deployments``: trace every deployment, not only those with ``app_insights_enabled: true``."""

    def __init__(self, traces_url: str, service_name: str = "tiffin-gateway", *, all_deployments: bool = False) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url)))
        self.tracer = self.provider.get_tracer("tiffin.gateway")
        self.propagator = TraceContextTextMapPropagator()
        self.kinds = SpanKind
        self.error = Status(StatusCode.ERROR)
        self.in_context = set_span_in_context
        self.all_deployments = all_deployments

    def arrived(self, scope: dict[str, Any]) -> RequestTrace:
        """The trace of a request that arrives now; no span yet (see :meth:`RequestTrace.begin`)."""
        return RequestTrace(self, scope)

    def shutdown(self) -> None:
        """Export what is buffered and stop."""
        self.provider.shutdown()


class RequestTrace:
    """The spans of one gateway request (see the module docstring): none until :meth:`begin`."""

    __slots__ = ("arrived_ns", "context", "endpoint", "outcome", "scope", "span", "tracing", "upstream_span")

    def __init__(self, tracing: GatewayTracing, scope: dict[str, Any]) -> None:
        self.tracing = tracing
        self.scope = scope
        self.arrived_ns = time.time_ns()
        self.span: Any = None
        self.context: Any = None
        self.upstream_span: Any = None
        self.outcome: Any = None
        self.endpoint = ""
        """The endpoint's name once the gateway found it (the caller's text before: never recorded)."""

    def begin(self, deployment: DeploymentRoute) -> bool:
        """Start the request's spans if ``deployment`` (the one that answers) is traced; whether it is."""
        if not (deployment.traced or self.tracing.all_deployments):
            return False
        tracing = self.tracing
        scope = self.scope
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _CONTEXT_HEADERS}
        parent = tracing.propagator.extract(carrier)
        self.span = tracing.tracer.start_span(
            "gateway routing",
            context=parent,
            kind=tracing.kinds.SERVER,
            attributes={"http.request.method": scope["method"]},
            start_time=self.arrived_ns,  # routing began when the request arrived, not when its deployment was known
        )
        self.context = tracing.in_context(self.span, parent)
        return True

    def queued(self, start_ns: int, end_ns: int) -> None:
        """The request's wait for a slot of its deployment."""
        self.tracing.tracer.start_span("queue wait", context=self.context, start_time=start_ns).end(end_time=end_ns)

    def upstream(self, headers: Headers, replica: Replica, deployment: str) -> Headers:
        """Start the span of one call to ``replica``; the headers to send, with its ``traceparent``."""
        self.upstream_done(None)  # a connection refused before: that attempt ends here
        span = self.tracing.tracer.start_span(
            "upstream call",
            context=self.context,
            kind=self.tracing.kinds.CLIENT,
            attributes={"tiffin.deployment": deployment, "tiffin.replica": replica.id},
        )
        self.upstream_span = span
        carrier: dict[str, str] = {}
        self.tracing.propagator.inject(carrier, context=self.tracing.in_context(span))
        kept = [(k, v) for k, v in headers if k not in _CONTEXT_HEADERS]
        return kept + [(k.encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items()]

    def upstream_done(self, status: int | None) -> None:
        """End the current upstream span: with the replica's status, or (None) with no answer."""
        span = self.upstream_span
        if span is None:
            return
        self.upstream_span = None
        if status is None:
            span.set_status(self.tracing.error)
        else:
            span.set_attribute("http.response.status_code", status)
        span.end()

    def finish(self) -> None:
        """End every span of the request (after the answer is sent); nothing when none began."""
        outcome = self.outcome
        span = self.span
        if span is None:
            return
        span.set_attribute("tiffin.endpoint", self.endpoint)
        if outcome is not None:
            if self.upstream_span is not None:
                self.upstream_done(outcome.status if outcome.status < 500 else None)
            span.set_attribute("tiffin.deployment", outcome.deployment)
            span.set_attribute("http.response.status_code", outcome.status)
            if outcome.status >= 500:
                span.set_status(self.tracing.error)
        span.end(end_time=time.time_ns())


def untraced_asks(table: RoutingTable, warned: set[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (endpoint, deployment) pairs of ``table`` asking for traces (``app_insights_enabled: true``) that are
    not in ``warned`` yet, now added to it: a server without an exporter says so once per deployment."""
    asks = [
        (endpoint.name, deployment.name)
        for endpoint in table.endpoints.values()
        for deployment in endpoint.deployments.values()
        if deployment.traced and (endpoint.name, deployment.name) not in warned
    ]
    warned.update(asks)
    return asks
