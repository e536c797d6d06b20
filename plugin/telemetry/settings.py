"""The settings of ``tiffin serve``'s telemetry, read once at start from its environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from tiffin.errors import ValidationError

__all__ = ["TelemetrySettings"]

METRICS_ENV = "TIFFIN_METRICS"
TRAFFIC_LOG_ENV = "TIFFIN_TRAFFIC_LOG"
TRAFFIC_LOG_MAX_BYTES_ENV = "TIFFIN_TRAFFIC_LOG_MAX_BYTES"
TRAFFIC_LOG_BACKUPS_ENV = "TIFFIN_TRAFFIC_LOG_BACKUPS"
OTLP_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTLP_TRACES_ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
TRACE_ALL_ENV = "TIFFIN_TRACE_ALL_DEPLOYMENTS"

_OFF = frozenset({"0", "false", "no", "off"})
_ON = frozenset({"1", "true", "yes", "on", ""})


def _switch(environ: Mapping[str, str], name: str, default: bool = True) -> bool:
    value = environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in _OFF:
        return False
    if value in _ON:
        return True
    raise ValidationError(f"{name}={environ[name]!r} is neither on nor off; set it to 1 or 0")


def _int(environ: Mapping[str, str], name: str, default: int, least: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < least:
        raise ValidationError(f"{name}={raw!r} must be a whole number of at least {least}")
    return int(raw)


@dataclass(frozen=True)
class TelemetrySettings:
    """``TIFFIN_METRICS`` (default on: /metrics and the stats API's latency window), ``TIFFIN_TRAFFIC_LOG``
    (default on) with ``TIFFIN_TRAFFIC_LOG_MAX_BYTES`` (default 50 MiB) and ``TIFFIN_TRAFFIC_LOG_BACKUPS``
    (default 5), the OTLP exporter's endpoint (traces; none: no tracing at all) and ``TIFFIN_TRACE_ALL_DEPLOYMENTS``
    (default off: only deployments with ``app_insights_enabled: true`` are traced)."""

    metrics: bool = True
    traffic_log: bool = True
    traffic_log_max_bytes: int = 50 * 1024 * 1024
    traffic_log_backups: int = 5
    otlp_endpoint: str | None = None
    """Where spans go: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as given, else ``OTEL_EXPORTER_OTLP_ENDPOINT`` +
    ``/v1/traces`` (the OTLP/HTTP rule); None: nothing is traced."""
    trace_all_deployments: bool = False
    """Trace every deployment, whatever its ``app_insights_enabled`` (only with an exporter)."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> TelemetrySettings:
        """Read the settings; a malformed value is an error that names the variable."""
        otlp = environ.get(OTLP_TRACES_ENDPOINT_ENV, "").strip()
        base = environ.get(OTLP_ENDPOINT_ENV, "").strip()
        if not otlp and base:
            otlp = base.rstrip("/") + "/v1/traces"
        return cls(
            metrics=_switch(environ, METRICS_ENV),
            traffic_log=_switch(environ, TRAFFIC_LOG_ENV),
            traffic_log_max_bytes=_int(environ, TRAFFIC_LOG_MAX_BYTES_ENV, cls.traffic_log_max_bytes, 1024),
            traffic_log_backups=_int(environ, TRAFFIC_LOG_BACKUPS_ENV, cls.traffic_log_backups, 0),
            otlp_endpoint=otlp or None,
            trace_all_deployments=_switch(environ, TRACE_ALL_ENV, default=False),
        )

    def traces(self, app_insights_enabled: bool) -> bool:
        """Whether a deployment with this ``app_insights_enabled`` is traced on this server."""
        return self.otlp_endpoint is not None and (app_insights_enabled or self.trace_all_deployments)
