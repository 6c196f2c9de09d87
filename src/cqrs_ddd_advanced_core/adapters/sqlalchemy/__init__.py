"""SQLAlchemy adapters of the advanced package (SQLite and PostgreSQL)."""

from __future__ import annotations

from cqrs_ddd_advanced_core.adapters.sqlalchemy.sagas import SQLAlchemySagaStore

__all__ = ["SQLAlchemySagaStore"]
