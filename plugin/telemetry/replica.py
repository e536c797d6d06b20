"""The replica's side of tracing: a ``replica scoring`` span around each call of the runner, child of the
gateway's ``upstream call`` (the ``traceparent`` header), and current while the scoring code runs, so spans the
scoring script makes with the OpenTelemetry API are its children.

A replica runs in its deployment's own environment (Python 3.8 to 3.13), which may not have OpenTelemetry:
this module imports only the standard library until :func:`instrument` is called (only when the plan says
tracing is on), and then skips tracing with one log line when the SDK or the OTLP exporter is missing.
"""

from __future__ import annotations

import atexit
import inspect
import logging
import os
from typing import Any

__all__ = ["instrument"]

logger = logging.getLogger("tiffin.replica")

_NEEDS = "opentelemetry-sdk and opentelemetry-exporter-otlp-proto-http"


def instrument(runner: Any, settings: dict[str, Any]) -> Any | None:
    """Wrap ``runner.predict`` in a span; the tracer provider (also the process's global one, for the scoring
    code), or None when OpenTelemetry is not importable here (the runner is left as it was)."""
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError as exc:
        logger.warning(
            "tracing is on but this deployment's environment lacks %s (%s): its replica spans are skipped; "
            "add them to the environment's conda file or requirements to trace scoring",
            _NEEDS,
            exc,
        )
        return None
    replica = f"{settings.get('deployment') or 'replica'}-{os.getpid()}"
    resource = Resource.create({"service.name": "tiffin-replica", "service.instance.id": replica})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings["traces_url"])))
    trace.set_tracer_provider(provider)  # trace.get_tracer() in score.py exports through it too
    atexit.register(provider.shutdown)
    tracer = provider.get_tracer("tiffin.replica")
    propagator = TraceContextTextMapPropagator()
    attributes = {
        "tiffin.endpoint": settings.get("endpoint") or "",
        "tiffin.deployment": settings.get("deployment") or "",
        "tiffin.replica": replica,
    }
    error = Status(StatusCode.ERROR)
    original = runner.predict

    def _start(request: Any) -> Any:
        parent = propagator.extract(request.headers)  # the replica's headers: lower-case names
        return tracer.start_as_current_span(
            "replica scoring", context=parent, kind=SpanKind.SERVER, attributes=attributes
        )

    def _status(span: Any, response: Any) -> None:
        status = getattr(response, "status", 200)
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(error)

    if inspect.iscoroutinefunction(original):

        async def predict(request: Any) -> Any:
            with _start(request) as span:
                response = await original(request)
                _status(span, response)
                return response

    else:

        def predict(request: Any) -> Any:  # type: ignore[misc]
            # On the scoring thread: the span is current there, where the scoring code runs.
            with _start(request) as span:
                response = original(request)
                _status(span, response)
                return response

    try:
        runner.predict = predict
    except AttributeError:  # a runner with __slots__: no place to wrap
        logger.warning("tracing: the %s runner cannot be wrapped; its replica spans are skipped", type(runner).__name__)
        return None
    return provider
