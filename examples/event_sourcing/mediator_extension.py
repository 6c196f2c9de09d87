"""The seed's three ways to get event persistence, on the in-memory adapters.

Run it with ``python examples/event_sourcing/mediator_extension.py``.

1. ``EventSourcedMediator`` used directly, with an orchestrator;
2. ``EventSourcedMediatorFactory`` registering types, then ``create()``;
3. ``@non_event_sourced`` on an aggregate whose events skip the event store.

In all three, event persistence is a middleware the mediator inserts right
after ``unit_of_work`` in its default pipeline: the events commit in the same
transaction as the command, or not at all.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import structlog

from cqrs_ddd_advanced_core.cqrs import EventSourcedMediator, EventSourcedMediatorFactory
from cqrs_ddd_advanced_core.decorators import is_non_event_sourced, non_event_sourced
from cqrs_ddd_advanced_core.event_sourcing import (
    EventSourcedAggregate,
    EventSourcedPersistenceOrchestrator,
    EventSourcedRepository,
)
from cqrs_ddd_core.adapters.memory import (
    InMemoryEventStore,
    InMemoryStateRepository,
    InMemoryUnitOfWork,
)
from cqrs_ddd_core.cqrs import CommandResponse, HandlerRegistry
from cqrs_ddd_core.domain import AggregateRoot, Command, DomainEvent

# -- the domain ------------------------------------------------------------------


class OrderCreated(DomainEvent):
    customer_id: str


class OrderConfirmed(DomainEvent):
    pass


class Order(EventSourcedAggregate):
    """Event-sourced: its state is rebuilt from OrderCreated, OrderConfirmed..."""

    customer_id: str
    status: str = "pending"

    def apply_OrderCreated(self, event: OrderCreated) -> None:
        self.customer_id = event.customer_id
        self.status = "pending"

    def apply_OrderConfirmed(self, event: OrderConfirmed) -> None:
        self.status = "confirmed"


class InvoiceIssued(DomainEvent):
    amount: int


class Invoice(EventSourcedAggregate):
    amount: int = 0

    def apply_InvoiceIssued(self, event: InvoiceIssued) -> None:
        self.amount = event.amount


class PreferencesUpdated(DomainEvent):
    settings: dict[str, Any]


@non_event_sourced
class UserPreferences(AggregateRoot):
    """Non-event-sourced: its state is stored as is; its events skip the event store."""

    settings: dict[str, Any] = {}


class CreateOrder(Command[str]):
    order_id: str
    customer_id: str


class ConfirmOrder(Command[None]):
    order_id: str


class IssueInvoice(Command[str]):
    invoice_id: str
    amount: int


class UpdatePreferences(Command[None]):
    user_id: str
    settings: dict[str, Any]


class App:
    """Stores and handlers shared by the three examples."""

    def __init__(self) -> None:
        self.event_store = InMemoryEventStore()
        self.preferences = InMemoryStateRepository(UserPreferences)
        self.orders = EventSourcedRepository(
            self.event_store, Order, event_types=[OrderCreated, OrderConfirmed]
        )
        self.handler_registry = HandlerRegistry()
        self.handler_registry.register_command_handler(CreateOrder, self.create_order)
        self.handler_registry.register_command_handler(ConfirmOrder, self.confirm_order)
        self.handler_registry.register_command_handler(IssueInvoice, self.issue_invoice)
        self.handler_registry.register_command_handler(UpdatePreferences, self.update_preferences)
        self.uow_factory = InMemoryUnitOfWork

    async def create_order(self, command: CreateOrder) -> CommandResponse[str]:
        order = Order.blank(command.order_id)
        order.raise_event(OrderCreated(customer_id=command.customer_id))
        return CommandResponse.from_aggregates(order.id, order)

    async def confirm_order(self, command: ConfirmOrder) -> CommandResponse[None]:
        order = await self.orders.load(command.order_id)
        order.raise_event(OrderConfirmed())
        return CommandResponse.from_aggregates(None, order)

    async def issue_invoice(self, command: IssueInvoice) -> CommandResponse[str]:
        invoice = Invoice.blank(command.invoice_id)
        invoice.raise_event(InvoiceIssued(amount=command.amount))
        return CommandResponse.from_aggregates(invoice.id, invoice)

    async def update_preferences(self, command: UpdatePreferences) -> CommandResponse[None]:
        prefs = await self.preferences.find(command.user_id) or UserPreferences(id=command.user_id)
        prefs.settings = dict(command.settings)
        prefs.record_event(PreferencesUpdated(settings=command.settings))
        self.preferences.save(prefs)
        return CommandResponse.from_aggregates(None, prefs)

    async def versions(self, aggregate_type: str, aggregate_id: str) -> list[int]:
        return [e.version for e in await self.event_store.load_stream(aggregate_type, aggregate_id)]


# -- example 1: EventSourcedMediator used directly ----------------------------------


async def direct_use() -> None:
    app = App()
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=app.event_store)
    orchestrator.register_event_sourced_type("Order")
    orchestrator.register_non_event_sourced_type("UserPreferences")

    mediator = EventSourcedMediator(
        registry=app.handler_registry,
        uow_factory=app.uow_factory,
        event_persistence_orchestrator=orchestrator,
    )
    await mediator.send(CreateOrder(order_id="order-1", customer_id="cust-123"))
    await mediator.send(ConfirmOrder(order_id="order-1"))

    order = await app.orders.load("order-1")
    print("[1] pipeline:", mediator.pipeline.describe())
    print(f"[1] direct: Order order-1 stream versions {await app.versions('Order', 'order-1')}")
    print(f"[1] direct: rebuilt order is {order.status} at version {order.version}")


# -- example 2: EventSourcedMediatorFactory ------------------------------------------


async def factory_use() -> None:
    app = App()
    factory = EventSourcedMediatorFactory(
        event_store=app.event_store,
        uow_factory=app.uow_factory,
        handler_registry=app.handler_registry,
    )
    factory.register_event_sourced_type("Order")
    factory.register_event_sourced_type("Invoice")
    factory.register_non_event_sourced_type("UserPreferences")
    mediator = factory.create()

    await mediator.send(CreateOrder(order_id="order-2", customer_id="cust-123"))
    await mediator.send(IssueInvoice(invoice_id="inv-1", amount=250))
    await mediator.send(UpdatePreferences(user_id="user-1", settings={"theme": "dark"}))

    print(f"[2] factory: Order stream {await app.versions('Order', 'order-2')}")
    print(f"[2] factory: Invoice stream {await app.versions('Invoice', 'inv-1')}")
    print(f"[2] factory: events in the store: {await app.event_store.latest_position()}")


# -- example 3: @non_event_sourced -----------------------------------------------------


async def decorator_use() -> None:
    app = App()
    factory = EventSourcedMediatorFactory(
        event_store=app.event_store,
        uow_factory=app.uow_factory,
        handler_registry=app.handler_registry,
    )
    factory.register_event_sourced_type("Order")
    factory.register_non_event_sourced_type("UserPreferences")  # also implied by the decorator
    mediator = factory.create()

    response = await mediator.send(UpdatePreferences(user_id="user-1", settings={"language": "fr"}))
    prefs = await app.preferences.get("user-1")

    print(
        f"[3] decorator: UserPreferences non-event-sourced: {is_non_event_sourced(UserPreferences)}"
    )
    print(
        f"[3] decorator: events raised {len(response.events)}, stored in the event store "
        f"{await app.event_store.latest_position()}"
    )
    print(f"[3] decorator: state saved with settings {prefs.settings}")


async def main() -> None:
    await direct_use()
    await factory_use()
    await decorator_use()


if __name__ == "__main__":
    # The application (not the library) decides what is logged: keep the example quiet.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(main())
