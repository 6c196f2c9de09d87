"""Fixtures for the advanced tests: a fresh in-memory world per test."""

from __future__ import annotations

import pytest

from cqrs_ddd_core.testing.pytest_plugin import metric_capture, span_capture
from tests.advanced.domain import World

__all__ = ["metric_capture", "span_capture", "world"]


@pytest.fixture
def world() -> World:
    return World()
