"""A small application the observability tests dispatch through: orders that reserve stock.

``PlaceOrder``'s handler appends the order's events and writes an outbox row
carrying the W3C trace context of the span current while it runs, then sends
``ReserveStock`` (nested: same unit of work, child span). Every write is
staged on the in-memory unit of work, which measures each step at commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opentelemetry import propagate
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from pydantic import Field

from cqrs_ddd_core.adapters.memory import (
    InMemoryEventStore,
    InMemoryOutboxStore,
    InMemoryUnitOfWork,
)
from cqrs_ddd_core.cqrs import CommandResponse, HandlerRegistry, Mediator
from cqrs_ddd_core.domain import AggregateRoot, Command, DomainEvent, Query, utc_now
from cqrs_ddd_core.middleware import default_command_middlewares, default_query_middlewares
from cqrs_ddd_core.persistence import OutboxMessage, StepTiming
from cqrs_ddd_core.persistence.unit_of_work import BaseUnitOfWork, StagedGroup
from cqrs_ddd_core.pipeline import Middleware


class OrderPlaced(DomainEvent):
    amount: int


class StockReserved(DomainEvent):
    sku: str


class Order(AggregateRoot):
    amount: int = 0


class Stock(AggregateRoot):
    pass


class PlaceOrder(Command[str]):
    order_id: str
    amount: int = Field(gt=0)
    sku: str | None = None
    card: dict[str, Any] = Field(default_factory=dict)
    password: str = ""


class ReserveStock(Command[None]):
    sku: str


class Explode(Command[None]):
    """Its handler raises ``RuntimeError``."""


class GetOrder(Query[int]):
    order_id: str


class Boom(RuntimeError):
    pass


@dataclass
class Shop:
    """Stores, a registry with the handlers, and what the handlers saw."""

    events: InMemoryEventStore = field(default_factory=InMemoryEventStore)
    outbox: InMemoryOutboxStore = field(default_factory=InMemoryOutboxStore)
    registry: HandlerRegistry = field(default_factory=HandlerRegistry)
    mediator: Mediator | None = None
    trace_contexts: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.registry.register_command_handler(PlaceOrder, self.place_order)
        self.registry.register_command_handler(ReserveStock, self.reserve_stock)
        self.registry.register_command_handler(Explode, self.explode)
        self.registry.register_query_handler(GetOrder, self.get_order)

    async def place_order(self, command: PlaceOrder) -> CommandResponse[str]:
        order = Order(id=command.order_id)
        order.record_event(OrderPlaced(amount=command.amount))
        await self.events.append(
            Order.type_name(), order.id, order.pending_events, expected_version=0
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # what an outbox middleware stores
        self.trace_contexts.append(carrier)
        await self.outbox.enqueue(
            [
                OutboxMessage(
                    message_id=order.pending_events[0].event_id,
                    message_type="OrderPlaced",
                    payload={"amount": command.amount},
                    created_at=utc_now(),
                    trace_context=carrier,
                )
            ]
        )
        if command.sku is not None:
            assert self.mediator is not None
            await self.mediator.send(ReserveStock(sku=command.sku))
        return CommandResponse.from_aggregates(order.id, order)

    async def reserve_stock(self, command: ReserveStock) -> CommandResponse[None]:
        stock = Stock(id=command.sku)
        stock.record_event(StockReserved(sku=command.sku))
        await self.events.append(
            Stock.type_name(), stock.id, stock.pending_events, expected_version=0
        )
        return CommandResponse.from_aggregates(None, stock)

    async def explode(self, command: Explode) -> None:
        raise Boom("the handler failed")

    async def get_order(self, query: GetOrder) -> int:
        return len(await self.events.load_stream(Order.type_name(), query.order_id))


def build_mediator(
    shop: Shop,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    uow_factory: Any = InMemoryUnitOfWork,
    extra: tuple[Middleware, ...] = (),
) -> Mediator:
    """The default pipelines, reporting to the given providers."""
    mediator = Mediator(
        shop.registry,
        uow_factory,
        middlewares=[
            *default_command_middlewares(
                uow_factory=uow_factory,
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
            ),
            *extra,
        ],
        query_middlewares=default_query_middlewares(
            tracer_provider=tracer_provider, meter_provider=meter_provider
        ),
    )
    shop.mediator = mediator
    return mediator


class FixedTimingUnitOfWork(BaseUnitOfWork):
    """Commits nothing, but reports a 2 ms insert and a 1 ms commit (3 ms in all)."""

    system = "memory"
    START_NS = 1_700_000_000_000_000_000

    async def _write_and_commit(self, groups: list[StagedGroup]) -> None:
        start = self.START_NS
        rows = sum(len(records) for _, records in groups)
        self.timings.append(
            StepTiming("INSERT", "events", "memory", start, start + 2_000_000, rows)
        )
        self.timings.append(
            StepTiming("COMMIT", None, "memory", start + 2_000_000, start + 3_000_000)
        )

    async def _discard(self) -> None:
        return None
