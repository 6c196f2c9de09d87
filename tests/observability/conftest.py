"""Fixtures for the observability tests: the shop, and the user test kit's captures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from cqrs_ddd_core.testing.pytest_plugin import (
    log_events,
    metric_capture,
    span_capture,
    telemetry_capture,
)
from tests.observability.app import Shop

__all__ = ["log_events", "metric_capture", "span_capture", "telemetry_capture"]


@pytest.fixture
def shop() -> Shop:
    return Shop()


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """Tests may configure structlog (as an application would); put it back after."""
    saved: dict[str, Any] = structlog.get_config()
    processors = list(saved["processors"])
    yield
    structlog.configure(**{**saved, "processors": saved["processors"]})
    saved["processors"][:] = processors
    structlog.contextvars.clear_contextvars()
