"""Fixtures for the CLI tests: the session's PostgreSQL and RabbitMQ (skipped without
them, failing in CI)."""

from __future__ import annotations

from tests.support.postgres import pg_engine, postgres_database_url
from tests.support.rabbitmq import rabbitmq_url

__all__ = ["pg_engine", "postgres_database_url", "rabbitmq_url"]
