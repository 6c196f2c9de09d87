"""Projections the tests share: totals per account, and every event id applied once.

The SQL read model is ``test_applied_events`` keyed by event id, so applying
an event twice fails its batch (a primary-key clash) instead of passing
unseen; the memory one counts applications per event id.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, MetaData, String, Table, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cqrs_ddd_advanced_core.projections import Projection
from cqrs_ddd_core.adapters.memory import InMemoryProjectionStore, InMemoryProjectionTransaction
from cqrs_ddd_core.persistence import StoredEvent

read_model = MetaData()
# One row per applied event: the primary key on the event id and the unique
# position make an event applied twice fail its batch. The totals per account
# are read from it with GROUP BY (one statement per event keeps the proofs fast).
applied_events = Table(
    "test_applied_events",
    read_model,
    Column("event_id", String(255), primary_key=True),
    Column("position", BigInteger, nullable=False, unique=True),
    Column("account_id", String(255), nullable=False),
    Column("event_type", String(255), nullable=False),
    Column("amount", BigInteger, nullable=False),
)


async def create_read_model(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(read_model.drop_all)
        await conn.run_sync(read_model.create_all)


def sql_projection(name: str = "account_totals") -> Projection[AsyncConnection]:
    projection = Projection[AsyncConnection](name, reset=_sql_reset)

    @projection.on("Opened", "Deposited")
    async def applied(event: StoredEvent, tx: AsyncConnection) -> None:
        await tx.execute(
            applied_events.insert().values(
                event_id=event.event_id,
                position=event.position,
                account_id=event.aggregate_id,
                event_type=event.event_type,
                amount=event.payload.get("amount", 0),
            )
        )

    return projection


async def _sql_reset(tx: AsyncConnection) -> None:
    await tx.execute(delete(applied_events))


async def sql_read_model(engine: AsyncEngine) -> tuple[dict[str, tuple[int, int]], list[int]]:
    """Deposits and balance by account, and the positions applied (sorted)."""
    deposits = (
        select(applied_events.c.account_id, func.count(), func.sum(applied_events.c.amount))
        .where(applied_events.c.event_type == "Deposited")
        .group_by(applied_events.c.account_id)
    )
    async with engine.connect() as conn:
        totals = {row[0]: (int(row[1]), int(row[2])) for row in await conn.execute(deposits)}
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
