"""SQLAlchemy 2 async adapters: SQLite (aiosqlite) and PostgreSQL (asyncpg).

Everything takes the same ``AsyncEngine``::

    engine = create_engine("sqlite:///app.db")          # or postgresql://...
    await create_tables(engine)                          # or your Alembic migrations
    uow_factory = SQLAlchemyUnitOfWork.factory(engine)
    event_store = SQLAlchemyEventStore(engine)
    outbox_store = SQLAlchemyOutboxStore(engine)

The stores stage their writes on the unit of work, which flushes and commits
them at once: one hop to the database thread on SQLite, one round trip on
PostgreSQL. See ``docs/persistence.md``.
"""

from __future__ import annotations

from cqrs_ddd_core.extras import translated as _translated

# Without an extra (sqlalchemy, aiosqlite, asyncpg): one error naming it, not a
# bare ModuleNotFoundError from deep inside an import.
with _translated("The SQLAlchemy adapter"):
    from cqrs_ddd_core.adapters.sqlalchemy.audit import SQLAlchemyAuditStore
    from cqrs_ddd_core.adapters.sqlalchemy.engine import (
        SQLiteFlushMode,
        SQLiteSynchronous,
        create_engine,
    )
    from cqrs_ddd_core.adapters.sqlalchemy.event_store import SQLAlchemyEventStore
    from cqrs_ddd_core.adapters.sqlalchemy.inbox import SQLAlchemyInboxStore
    from cqrs_ddd_core.adapters.sqlalchemy.outbox import SQLAlchemyOutboxStore
    from cqrs_ddd_core.adapters.sqlalchemy.outbox_listen import OutboxListener
    from cqrs_ddd_core.adapters.sqlalchemy.postgres import EVENTS_LOCK_KEY
    from cqrs_ddd_core.adapters.sqlalchemy.projections import SQLAlchemyProjectionStore
    from cqrs_ddd_core.adapters.sqlalchemy.repository import SQLAlchemyStateRepository
    from cqrs_ddd_core.adapters.sqlalchemy.snapshots import SQLAlchemySnapshotStore
    from cqrs_ddd_core.adapters.sqlalchemy.tables import (
        EVENTS_CHANNEL,
        aggregate_state,
        audit_log,
        create_tables,
        drop_tables,
        events,
        inbox,
        metadata,
        outbox,
        projection_checkpoints,
        snapshots,
    )
    from cqrs_ddd_core.adapters.sqlalchemy.unit_of_work import SQLAlchemyUnitOfWork

__all__ = [
    "EVENTS_CHANNEL",
    "EVENTS_LOCK_KEY",
    "OutboxListener",
    "SQLAlchemyAuditStore",
    "SQLAlchemyEventStore",
    "SQLAlchemyInboxStore",
    "SQLAlchemyOutboxStore",
    "SQLAlchemyProjectionStore",
    "SQLAlchemySnapshotStore",
    "SQLAlchemyStateRepository",
    "SQLAlchemyUnitOfWork",
    "SQLiteFlushMode",
    "SQLiteSynchronous",
    "aggregate_state",
    "audit_log",
    "create_engine",
    "create_tables",
    "drop_tables",
    "events",
    "inbox",
    "metadata",
    "outbox",
    "projection_checkpoints",
    "snapshots",
]
