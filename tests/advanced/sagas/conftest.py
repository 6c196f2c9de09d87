"""The saga suites run on every backend: in-memory, SQLite and PostgreSQL."""

from __future__ import annotations

from cqrs_ddd_core.testing.pytest_plugin import metric_capture, span_capture
from tests.contracts.conftest import backend, backend_kind, postgres_database_url

__all__ = ["backend", "backend_kind", "metric_capture", "postgres_database_url", "span_capture"]
