"""The demo shop, used from code: a few commands by hand, then a small concurrent workload.

Run it with ``python examples/shop/run.py`` (add ``--memory`` for the in-memory
adapters instead of a SQLite file in a temporary directory). ``cqrs-ddd demo``
runs the same shop at scale; see ``examples/shop/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from cqrs_ddd_advanced_core.demo import Shop, UnitOfWorkCapture, Workload
from cqrs_ddd_advanced_core.demo.domain import OrderLine, UserPreferences
from cqrs_ddd_advanced_core.demo.messages import (
    AddOrderLine,
    ConfirmOrder,
    GetOrderSummary,
    GetPreferences,
    PlaceOrder,
    UpdatePreferences,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


def memory_shop() -> Shop:
    from cqrs_ddd_core.adapters.memory import (
        InMemoryAuditStore,
        InMemoryEventStore,
        InMemoryOutboxStore,
        InMemoryStateRepository,
        InMemoryUnitOfWork,
    )

    return Shop(
        uow_factory=UnitOfWorkCapture(InMemoryUnitOfWork),
        event_store=InMemoryEventStore(),
        outbox_store=InMemoryOutboxStore(),
        preferences=InMemoryStateRepository(UserPreferences),
        audit_store=InMemoryAuditStore(),
    )


async def sqlite_shop(path: Path) -> tuple[Shop, AsyncEngine]:
    from cqrs_ddd_core.adapters.sqlalchemy import (
        SQLAlchemyAuditStore,
        SQLAlchemyEventStore,
        SQLAlchemyOutboxStore,
        SQLAlchemyStateRepository,
        SQLAlchemyUnitOfWork,
        create_engine,
        create_tables,
    )

    engine = create_engine(f"sqlite:///{path}")
    await create_tables(engine)
    shop = Shop(
        uow_factory=UnitOfWorkCapture(SQLAlchemyUnitOfWork.factory(engine)),
        event_store=SQLAlchemyEventStore(engine),
        outbox_store=SQLAlchemyOutboxStore(engine),
        preferences=SQLAlchemyStateRepository(UserPreferences, engine),
        audit_store=SQLAlchemyAuditStore(engine),
    )
    return shop, engine


async def by_hand(shop: Shop) -> None:
    print("pipeline:", shop.mediator.pipeline.describe())
    book = OrderLine(sku="book", quantity=2, unit_price_cents=1250)
    lamp = OrderLine(sku="lamp", quantity=1, unit_price_cents=399)
    send = shop.mediator.send
    await send(PlaceOrder(order_id="order-1", customer_id="alice", lines=[book]))
    await send(AddOrderLine(order_id="order-1", line=lamp))
    invoice = await send(ConfirmOrder(order_id="order-1"))  # issues the invoice (nested)
    summary = await shop.mediator.query(GetOrderSummary(order_id="order-1"))
    print(
        f"{summary.order_id}: {summary.status}, {summary.lines} lines, "
        f"total {summary.total_cents} cents, version {summary.version}"
    )
    issued = await shop.invoices.load(invoice.result)
    print(f"invoice {issued.id}: {issued.amount_cents} cents for {issued.order_id}")
    await send(UpdatePreferences(user_id="alice", language="fr", currency="EUR"))
    preferences = await shop.mediator.query(GetPreferences(user_id="alice"))
    assert preferences is not None
    print(
        f"preferences of alice: {preferences.language}/{preferences.currency}, "
        f"version {preferences.version}"
    )


async def workload(shop: Shop) -> None:
    stats = await Workload(shop, commands=200, concurrency=4, seed=7).run()
    figures = stats.as_dict()
    print(
        f"workload: {figures['commands']} commands, {figures['succeeded']} committed, "
        f"{figures['conflicts']} conflicts, events {figures['events_stored_by_aggregate_type']}"
    )
    p50 = figures["persistence_latency_s"]["p50"] * 1000
    print(
        f"workload: persistence p50 {p50:.2f} ms over {figures['committed_units_of_work']} commits"
    )


async def main(memory: bool) -> None:
    if memory:
        shop = memory_shop()
        await by_hand(shop)
        await workload(shop)
        return
    with tempfile.TemporaryDirectory() as directory:
        shop, engine = await sqlite_shop(Path(directory) / "shop.db")
        try:
            await by_hand(shop)
            await workload(shop)
        finally:
            await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--memory", action="store_true", help="in-memory adapters")
    # The workload's conflicts and refusals are expected; keep the output to what we print.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    asyncio.run(main(parser.parse_args().memory))
