"""A tiny shop domain the core tests share: one aggregate, its events, commands and a query."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import Field

from cqrs_ddd_core.adapters.memory import (
    InMemoryAuditStore,
    InMemoryEventStore,
    InMemoryOutboxStore,
    InMemoryStateRepository,
    InMemoryUnitOfWork,
)
from cqrs_ddd_core.cqrs import CommandResponse
from cqrs_ddd_core.domain import AggregateRoot, Command, DomainEvent, Query


class OrderPlaced(DomainEvent):
    amount: int


class OrderPaid(DomainEvent):
    pass


class Order(AggregateRoot):
    amount: int = 0
    paid: bool = False

    @classmethod
    def place(cls, order_id: str, amount: int) -> Order:
        order = cls(id=order_id, amount=amount)
        order.record_event(OrderPlaced(amount=amount))
        return order

    def pay(self) -> None:
        self.paid = True
        self.record_event(OrderPaid())


class PlaceOrder(Command[str]):
    order_id: str
    amount: int = Field(gt=0)


class PayOrder(Command[None]):
    order_id: str


class GetOrder(Query[Order | None]):
    order_id: str


@dataclass
class Stores:
    """Every in-memory store a test may write to, and a way to see they are untouched."""

    events: InMemoryEventStore = field(default_factory=InMemoryEventStore)
    outbox: InMemoryOutboxStore = field(default_factory=InMemoryOutboxStore)
    audit: InMemoryAuditStore = field(default_factory=InMemoryAuditStore)
    orders: InMemoryStateRepository[Order] = field(
        default_factory=lambda: InMemoryStateRepository(Order)
    )

    async def are_empty(self) -> bool:
        return (
            await self.events.latest_position() == 0
            and len(self.outbox) == 0
            and not await self.audit.list_records()
            and await self.orders.find("o-1") is None
        )


class UowFactory:
    """Makes in-memory units of work and remembers each one it made."""

    def __init__(self) -> None:
        self.created: list[InMemoryUnitOfWork] = []

    def __call__(self) -> InMemoryUnitOfWork:
        uow = InMemoryUnitOfWork()
        self.created.append(uow)
        return uow


class PlaceOrderHandler:
    """Saves the order's state and appends its events in the running unit of work."""

    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self.calls = 0

    async def handle(self, command: PlaceOrder) -> CommandResponse[str]:
        self.calls += 1
        order = Order.place(command.order_id, command.amount)
        await self.stores.events.append(
            Order.type_name(), order.id, order.pending_events, expected_version=0
        )
        self.stores.orders.save(order)
        return CommandResponse.from_aggregates(order.id, order)


class GetOrderHandler:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    async def handle(self, query: GetOrder) -> Order | None:
        return await self.stores.orders.find(query.order_id)
