"""Observability of ``tiffin serve``: Prometheus metrics, the traffic log and OpenTelemetry traces.

See docs/observability.md for what each exposes and the settings that turn them off or on.
"""
