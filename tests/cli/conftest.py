"""Fixtures for the CLI tests: the session's PostgreSQL (skipped without one, failing in CI)."""

from __future__ import annotations

from tests.support.postgres import pg_engine, postgres_database_url

__all__ = ["pg_engine", "postgres_database_url"]
