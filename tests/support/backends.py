"""One persistence backend per adapter, behind the same shape, for the shared suites.

A :class:`Backend` bundles what a test needs from an adapter: a unit-of-work
factory, the four stores, and a way to count what is stored, so one test
body runs against the in-memory, SQLite and PostgreSQL adapters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.memory import (
    InMemoryAuditStore,
    InMemoryEventStore,
    InMemoryOutboxStore,
    InMemoryStateRepository,
    InMemoryUnitOfWork,
)
from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyAuditStore,
    SQLAlchemyEventStore,
    SQLAlchemyOutboxStore,
    SQLAlchemyStateRepository,
    SQLAlchemyUnitOfWork,
    create_engine,
    create_tables,
    metadata,
)
from cqrs_ddd_core.persistence import UnitOfWork

__all__ = ["Backend", "empty_tables", "memory_backend", "sql_backend", "sqlite_engine"]

TABLES = ("events", "outbox", "audit_log", "aggregate_state")


@dataclass
class Backend:
    """An adapter's stores and unit of work, and how to count its rows."""

    name: str
    uow_factory: Callable[[], UnitOfWork]
    event_store: Any
    outbox_store: Any
    audit_store: Any
    make_repository: Callable[[type[Any]], Any]
    counts: Callable[[], Awaitable[dict[str, int]]]
    engine: AsyncEngine | None = None
    repositories: dict[type[Any], Any] = field(default_factory=dict)

    def repository(self, aggregate_type: type[Any]) -> Any:
        """The backend's one repository for ``aggregate_type``."""
        found = self.repositories.get(aggregate_type)
        if found is None:
            found = self.repositories[aggregate_type] = self.make_repository(aggregate_type)
        return found

    async def total_rows(self) -> int:
        return sum((await self.counts()).values())


def memory_backend() -> Backend:
    events, outbox, audit = InMemoryEventStore(), InMemoryOutboxStore(), InMemoryAuditStore()
    backend: Backend

    async def counts() -> dict[str, int]:
        return {
            "events": await events.latest_position(),
            "outbox": len(outbox),
            "audit_log": len(await audit.list_records()),
            "aggregate_state": sum(len(r._rows) for r in backend.repositories.values()),
        }

    backend = Backend(
        name="memory",
        uow_factory=InMemoryUnitOfWork,
        event_store=events,
        outbox_store=outbox,
        audit_store=audit,
        make_repository=InMemoryStateRepository,
        counts=counts,
    )
    return backend


def sql_backend(engine: AsyncEngine) -> Backend:
    async def counts() -> dict[str, int]:
        found: dict[str, int] = {}
        async with engine.connect() as conn:
            for name in TABLES:
                table = metadata.tables[name]
                found[name] = (
                    await conn.execute(select(func.count()).select_from(table))
                ).scalar_one()
        return found

    return Backend(
        name=engine.dialect.name,
        uow_factory=SQLAlchemyUnitOfWork.factory(engine),
        event_store=SQLAlchemyEventStore(engine),
        outbox_store=SQLAlchemyOutboxStore(engine),
        audit_store=SQLAlchemyAuditStore(engine),
        make_repository=lambda aggregate_type: SQLAlchemyStateRepository(aggregate_type, engine),
        counts=counts,
        engine=engine,
    )


@asynccontextmanager
async def sqlite_engine(
    directory: Path, synchronous: str = "NORMAL", flush: str = "auto"
) -> AsyncIterator[AsyncEngine]:
    """An engine on a new SQLite file in ``directory``, tables created, disposed after.

    At the default ``NORMAL`` the writer flushes inline on the event loop's
    thread; ``synchronous="FULL"`` (the library's default) or
    ``flush="thread"`` makes it hop to the aiosqlite thread.
    """
    engine = create_engine(
        f"sqlite:///{directory / 'cqrs.db'}",
        sqlite_synchronous=synchronous,  # type: ignore[arg-type]
        sqlite_flush=flush,  # type: ignore[arg-type]
    )
    try:
        await create_tables(engine)
        yield engine
    finally:
        await engine.dispose()


async def empty_tables(engine: AsyncEngine) -> None:
    """Delete every row of the adapters' tables (between Hypothesis examples)."""
    from sqlalchemy import delete, text

    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY"))
        else:
            for name in TABLES:
                await conn.execute(delete(metadata.tables[name]))
