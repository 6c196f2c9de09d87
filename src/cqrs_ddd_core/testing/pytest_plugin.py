"""Optional pytest fixtures over :mod:`cqrs_ddd_core.testing`.

Enable them in a ``conftest.py``::

    pytest_plugins = ["cqrs_ddd_core.testing.pytest_plugin"]

Fixtures: ``span_capture`` (:class:`SpanCapture`), ``metric_capture``
(:class:`MetricCapture`), ``log_events`` (the list of captured structlog
event dicts) and ``telemetry_capture`` (:class:`TelemetryCapture`, logs
captured for the whole test).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from cqrs_ddd_core.testing.telemetry import (
    MetricCapture,
    SpanCapture,
    TelemetryCapture,
    capture_log_events,
)

if TYPE_CHECKING:
    from structlog.typing import EventDict

__all__ = ["log_events", "metric_capture", "span_capture", "telemetry_capture"]


@pytest.fixture
def span_capture() -> Iterator[SpanCapture]:
    capture = SpanCapture()
    yield capture
    capture.shutdown()


@pytest.fixture
def metric_capture() -> Iterator[MetricCapture]:
    capture = MetricCapture()
    yield capture
    capture.shutdown()


@pytest.fixture
def log_events() -> Iterator[list[EventDict]]:
    with capture_log_events() as entries:
        yield entries


@pytest.fixture
def telemetry_capture() -> Iterator[TelemetryCapture]:
    capture = TelemetryCapture()
    with capture.capturing_logs():
        yield capture
    capture.shutdown()
