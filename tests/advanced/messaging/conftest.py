"""Fixtures for the messaging tests: a real RabbitMQ node, SQLite files and PostgreSQL."""

from __future__ import annotations

from tests.support.postgres import pg_engine, postgres_database_url
from tests.support.rabbitmq import rabbitmq_server, rabbitmq_url

__all__ = ["pg_engine", "postgres_database_url", "rabbitmq_server", "rabbitmq_url"]
