"""A test kit for applications: capture spans, metrics and log events of dispatches.

Plain helpers (no pytest needed) live here; pytest fixtures over them are in
:mod:`cqrs_ddd_core.testing.pytest_plugin`. Needs the ``[otel]`` extra (the SDK).
"""

from __future__ import annotations

from cqrs_ddd_core.testing.telemetry import (
    MetricCapture,
    SpanCapture,
    TelemetryCapture,
    capture_log_events,
)

__all__ = ["MetricCapture", "SpanCapture", "TelemetryCapture", "capture_log_events"]
