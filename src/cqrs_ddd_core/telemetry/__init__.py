"""OpenTelemetry API helpers: the fixed-scope tracer and meter, names, redaction.

Everything here uses only the OpenTelemetry *API*. Wiring the SDK (exporters,
Prometheus reader) is the application's job; :mod:`cqrs_ddd_core.telemetry.setup`
does it from the standard ``OTEL_*`` variables and is the only module of the
library that imports the SDK — import it explicitly::

    from cqrs_ddd_core.telemetry.setup import setup_telemetry
"""

from __future__ import annotations

from cqrs_ddd_core.telemetry.api import error_type, get_meter, get_tracer
from cqrs_ddd_core.telemetry.commit_counts import CommitCounts, commit_counts
from cqrs_ddd_core.telemetry.instruments import Instruments
from cqrs_ddd_core.telemetry.logs import add_trace_context
from cqrs_ddd_core.telemetry.names import DURATION_BUCKETS, SCOPE_NAME
from cqrs_ddd_core.telemetry.outcomes import DEFAULT_REFUSALS, Refusals
from cqrs_ddd_core.telemetry.redaction import (
    DEFAULT_SECRET_MARKERS,
    REDACTED,
    Redactor,
    is_secret_key,
    redact,
)

__all__ = [
    "DEFAULT_REFUSALS",
    "DEFAULT_SECRET_MARKERS",
    "DURATION_BUCKETS",
    "REDACTED",
    "SCOPE_NAME",
    "CommitCounts",
    "Instruments",
    "Redactor",
    "Refusals",
    "add_trace_context",
    "commit_counts",
    "error_type",
    "get_meter",
    "get_tracer",
    "is_secret_key",
    "redact",
]
