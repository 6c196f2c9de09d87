"""Projections the tests share: totals per account, and every event id applied once.

The SQL read model has ``applied_events`` keyed by event id, so applying an
event twice fails its batch (a primary-key clash) instead of passing unseen;
the memory one counts applications per event id.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cqrs_ddd_advanced_core.projections import Projection
from cqrs_ddd_core.adapters.memory import InMemoryProjectionStore, InMemoryProjectionTransaction
from cqrs_ddd_core.persistence import StoredEvent

read_model = MetaData()
account_totals = Table(
    "test_account_totals",
    read_model,
    Column("account_id", String(255), primary_key=True),
    Column("deposits", Integer, nullable=False),
    Column("balance", BigInteger, nullable=False),
)
applied_events = Table(
    "test_applied_events",
    read_model,
    Column("event_id", String(255), primary_key=True),
    Column("position", BigInteger, nullable=False, unique=True),
)


async def create_read_model(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(read_model.drop_all)
        await conn.run_sync(read_model.create_all)


def sql_projection(name: str = "account_totals") -> Projection[AsyncConnection]:
    projection = Projection[AsyncConnection](name, reset=_sql_reset)

    @projection.on("Deposited")
    async def deposited(event: StoredEvent, tx: AsyncConnection) -> None:
        insert = pg_insert if tx.dialect.name == "postgresql" else sqlite_insert
        statement = insert(account_totals).values(
            account_id=event.aggregate_id, deposits=1, balance=event.payload["amount"]
        )
        await tx.execute(
            statement.on_conflict_do_update(
                index_elements=[account_totals.c.account_id],
                set_={
                    "deposits": account_totals.c.deposits + 1,
                    "balance": account_totals.c.balance + statement.excluded.balance,
                },
            )
        )
        await tx.execute(
            applied_events.insert().values(event_id=event.event_id, position=event.position)
        )

    @projection.on("Opened")
    async def opened(event: StoredEvent, tx: AsyncConnection) -> None:
        await tx.execute(
            applied_events.insert().values(event_id=event.event_id, position=event.position)
        )

    return projection


async def _sql_reset(tx: AsyncConnection) -> None:
    await tx.execute(delete(account_totals))
    await tx.execute(delete(applied_events))


async def sql_read_model(engine: AsyncEngine) -> tuple[dict[str, tuple[int, int]], list[int]]:
    """Totals by account, and the positions applied (sorted)."""
    async with engine.connect() as conn:
        totals = {
            row[0]: (row[1], row[2])
            for row in await conn.execute(
                select(
                    account_totals.c.account_id, account_totals.c.deposits, account_totals.c.balance
                )
            )
        }
        positions = sorted(row[0] for row in await conn.execute(select(applied_events.c.position)))
    return totals, positions


def memory_projection(name: str = "account_totals") -> Projection[InMemoryProjectionTransaction]:
    projection = Projection[InMemoryProjectionTransaction](name, reset=_memory_reset)

    def applied(event: StoredEvent, tx: InMemoryProjectionTransaction) -> None:
        counts: dict[str, int] = tx.data.setdefault("applied", {})
        counts[event.event_id] = counts.get(event.event_id, 0) + 1
        tx.data.setdefault("positions", []).append(event.position)

    @projection.on("Deposited")
    async def deposited(event: StoredEvent, tx: InMemoryProjectionTransaction) -> None:
        totals: dict[str, Any] = tx.data.setdefault("totals", {})
        deposits, balance = totals.get(event.aggregate_id, (0, 0))
        totals[event.aggregate_id] = (deposits + 1, balance + event.payload["amount"])
        applied(event, tx)

    @projection.on("Opened")
    async def opened(event: StoredEvent, tx: InMemoryProjectionTransaction) -> None:
        applied(event, tx)

    return projection


async def _memory_reset(tx: InMemoryProjectionTransaction) -> None:
    tx.data.clear()


def memory_read_model(
    store: InMemoryProjectionStore,
) -> tuple[dict[str, tuple[int, int]], list[int]]:
    return dict(store.data.get("totals", {})), sorted(store.data.get("positions", []))
