"""Two services for the messaging tests: a shop that sends commands (events reach its
outbox) and a billing service that consumes them into its own table through its inbox."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Column, MetaData, String, Table, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_advanced_core.cqrs import EventSourcedMediator
from cqrs_ddd_advanced_core.event_sourcing import EventSourcedPersistenceOrchestrator
from cqrs_ddd_advanced_core.messaging import IncomingMessage, MessageConsumer, Outcome
from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyInboxStore,
    SQLAlchemyOutboxStore,
    SQLAlchemyUnitOfWork,
)
from cqrs_ddd_core.cqrs import HandlerRegistry
from cqrs_ddd_core.persistence import InboxTransaction
from tests.advanced.domain import AddItem, Order, PlaceOrder, World

__all__ = ["Billing", "Shop", "charges", "create_billing_tables", "until"]

billing_metadata = MetaData()
charges = Table(
    "charges",
    billing_metadata,
    Column("message_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("event_type", String(64), nullable=False),
)


async def create_billing_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(billing_metadata.drop_all)
        await conn.run_sync(billing_metadata.create_all)


class Shop:
    """An event-sourced order service on ``engine``, writing outbox messages."""

    def __init__(self, engine: AsyncEngine, *, tracer_provider: Any = None) -> None:
        self.engine = engine
        self.outbox = SQLAlchemyOutboxStore(engine)
        world = World()  # its handlers; its stores are replaced by the SQL ones
        registry = HandlerRegistry()
        from cqrs_ddd_advanced_core.event_sourcing import EventSourcedRepository
        from tests.advanced.domain import ORDER_EVENTS

        store = SQLAlchemyEventStore(engine)
        world.orders = EventSourcedRepository(store, Order, event_types=ORDER_EVENTS)
        registry.register_command_handler(PlaceOrder, world.place_order)
        registry.register_command_handler(AddItem, world.add_item)
        orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=store)
        orchestrator.register_event_sourced_type(Order)
        self.mediator = EventSourcedMediator(
            registry,
            SQLAlchemyUnitOfWork.factory(engine),
            orchestrator,
            outbox_store=self.outbox,
            tracer_provider=tracer_provider,
        )

    async def place(self, order_id: str, items: int = 0) -> int:
        """Place an order and add ``items`` items: 1 + items events."""
        await self.mediator.send(PlaceOrder(order_id=order_id))
        for i in range(items):
            await self.mediator.send(AddItem(order_id=order_id, sku=f"sku-{i}"))
        return 1 + items


@dataclass
class Billing:
    """Charges each order event once, in its own database, through its inbox."""

    engine: AsyncEngine
    name: str = "billing"
    tracer_provider: Any = None
    meter_provider: Any = None
    fail: Callable[[IncomingMessage], bool] = lambda message: False
    handled: list[tuple[str, int]] = field(default_factory=list)  # (order, version), committed
    handled_ids: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    attempts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    attempt_numbers: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self) -> None:
        self.inbox = SQLAlchemyInboxStore(self.engine)
        self.consumer = MessageConsumer(
            self.name,
            self.inbox,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
        )
        for event_type in ("OrderPlaced", "ItemAdded"):
            self.consumer.subscribe(event_type, self.charge)
        self._waiters: list[tuple[int, asyncio.Event]] = []

    async def charge(self, message: IncomingMessage, tx: InboxTransaction) -> None:
        self.attempts[message.message_id] += 1
        self.attempt_numbers[message.message_id].append(message.attempt)
        if self.fail(message):
            raise RuntimeError(f"billing refuses {message.message_id}")
        assert message.aggregate_id is not None
        assert message.aggregate_version is not None
        await tx.connection.execute(
            insert(charges).values(
                message_id=message.message_id,
                order_id=message.aggregate_id,
                version=message.aggregate_version,
                event_type=message.message_type,
            )
        )
        key = (message.aggregate_id, message.aggregate_version)
        tx.after_commit(lambda: self._committed(key, message.message_id))

    async def process(self, message: IncomingMessage) -> Outcome:
        """The consumer's ``process``, counting outcomes (give it to the subscriber)."""
        outcome = await self.consumer.process(message)
        self.outcomes[outcome.value] += 1
        return outcome

    async def process_batch(
        self, messages: Sequence[IncomingMessage]
    ) -> list[Outcome | Exception | None]:
        """The consumer's ``process_batch``, counting outcomes (the subscriber batches with it)."""
        results = await self.consumer.process_batch(messages)
        for result in results:
            if isinstance(result, Outcome):
                self.outcomes[result.value] += 1
        return results

    def _committed(self, key: tuple[str, int], message_id: str) -> None:
        self.handled.append(key)
        self.handled_ids.append(message_id)
        for count, event in self._waiters:
            if len(self.handled) >= count:
                event.set()

    async def wait_for(self, count: int, seconds: float = 60.0) -> None:
        """Until ``count`` charges committed in this process (bounded)."""
        event = asyncio.Event()
        if len(self.handled) >= count:
            return
        self._waiters.append((count, event))
        async with asyncio.timeout(seconds):
            await event.wait()

    async def stored(self) -> list[tuple[str, int]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(charges.c.order_id, charges.c.version))
            return [(row[0], row[1]) for row in rows]


async def until(predicate: Callable[[], bool], seconds: float = 30.0) -> None:
    """Wait (bounded) for a condition that no event announces, such as a metric's value."""
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 (there is no event to wait on)
            await asyncio.sleep(0.02)
