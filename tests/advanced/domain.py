"""A small domain the advanced tests share: an event-sourced order, a state-stored
customer, a non-event-sourced preferences aggregate, and fault injection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cqrs_ddd_advanced_core.decorators import non_event_sourced
from cqrs_ddd_advanced_core.event_sourcing import EventSourcedAggregate, EventSourcedRepository
from cqrs_ddd_core.adapters.memory import (
    InMemoryAuditStore,
    InMemoryEventStore,
    InMemoryOutboxStore,
    InMemoryStateRepository,
    InMemoryUnitOfWork,
)
from cqrs_ddd_core.cqrs import CommandResponse, HandlerRegistry, Mediator
from cqrs_ddd_core.domain import AggregateRoot, Command, DomainEvent
from cqrs_ddd_core.persistence import OutboxMessage, UnitOfWork


class OrderPlaced(DomainEvent):
    customer_id: str
    total: int


class ItemAdded(DomainEvent):
    sku: str
    quantity: int


class OrderShipped(DomainEvent):
    pass


class Order(EventSourcedAggregate):
    customer_id: str
    total: int = 0
    items: list[str] = []
    shipped: bool = False

    @classmethod
    def place(cls, order_id: str, customer_id: str, total: int) -> Order:
        order = cls.blank(order_id)
        order.raise_event(OrderPlaced(customer_id=customer_id, total=total))
        return order

    def add_item(self, sku: str, quantity: int) -> None:
        self.raise_event(ItemAdded(sku=sku, quantity=quantity))

    def ship(self) -> None:
        self.raise_event(OrderShipped())

    def apply_OrderPlaced(self, event: OrderPlaced) -> None:
        self.customer_id = event.customer_id
        self.total = event.total
        self.items = []

    def apply_ItemAdded(self, event: ItemAdded) -> None:
        self.items = [*self.items, f"{event.sku}x{event.quantity}"]

    def apply_OrderShipped(self, event: OrderShipped) -> None:
        self.shipped = True


ORDER_EVENTS = (OrderPlaced, ItemAdded, OrderShipped)


class CustomerRegistered(DomainEvent):
    name: str


class Customer(AggregateRoot):
    """State-stored, and registered as event-sourced too: state and stream commit together."""

    name: str = ""

    @classmethod
    def register(cls, customer_id: str, name: str) -> Customer:
        customer = cls(id=customer_id, name=name)
        customer.record_event(CustomerRegistered(name=name))
        return customer


class PreferencesChanged(DomainEvent):
    theme: str


@non_event_sourced
class UserPreferences(AggregateRoot):
    theme: str = "light"

    def change(self, theme: str) -> None:
        self.theme = theme
        self.record_event(PreferencesChanged(theme=theme))


class Unregistered(AggregateRoot):
    """An aggregate type nobody registers."""

    def touch(self) -> None:
        self.record_event(ItemAdded(sku="x", quantity=1))


# -- commands ------------------------------------------------------------------


class PlaceOrder(Command[str]):
    order_id: str
    customer_id: str = "c-1"
    total: int = 10


class AddItem(Command[None]):
    order_id: str
    sku: str = "sku"
    quantity: int = 1


class ChangePreferences(Command[None]):
    user_id: str
    theme: str


class RegisterCustomer(Command[str]):
    customer_id: str
    name: str


class PlaceOrderAndAddItem(Command[str]):
    """Places an order, then sends AddItem for it as a nested command."""

    order_id: str


class TouchUnregistered(Command[None]):
    aggregate_id: str


# -- wiring --------------------------------------------------------------------


@dataclass
class World:
    """Stores, repositories and a registry with every handler of this domain."""

    events: InMemoryEventStore = field(default_factory=InMemoryEventStore)
    outbox: InMemoryOutboxStore = field(default_factory=InMemoryOutboxStore)
    audit: InMemoryAuditStore = field(default_factory=InMemoryAuditStore)
    customers: InMemoryStateRepository[Customer] = field(
        default_factory=lambda: InMemoryStateRepository(Customer)
    )
    preferences: InMemoryStateRepository[UserPreferences] = field(
        default_factory=lambda: InMemoryStateRepository(UserPreferences)
    )
    registry: HandlerRegistry = field(default_factory=HandlerRegistry)
    mediator: Mediator | None = None
    uows: list[InMemoryUnitOfWork] = field(default_factory=list)
    failing: set[type] = field(default_factory=set)  # command types whose handler raises

    def __post_init__(self) -> None:
        self.orders = EventSourcedRepository(self.events, Order, event_types=ORDER_EVENTS)
        self.registry.register_command_handler(PlaceOrder, self.place_order)
        self.registry.register_command_handler(AddItem, self.add_item)
        self.registry.register_command_handler(ChangePreferences, self.change_preferences)
        self.registry.register_command_handler(RegisterCustomer, self.register_customer)
        self.registry.register_command_handler(PlaceOrderAndAddItem, self.place_and_add)
        self.registry.register_command_handler(TouchUnregistered, self.touch_unregistered)

    def uow_factory(self) -> UnitOfWork:
        uow = InMemoryUnitOfWork()
        self.uows.append(uow)
        return uow

    async def place_order(self, command: PlaceOrder) -> CommandResponse[str]:
        if PlaceOrder in self.failing:
            raise RuntimeError("PlaceOrder failed")
        order = Order.place(command.order_id, command.customer_id, command.total)
        return CommandResponse.from_aggregates(order.id, order)

    async def add_item(self, command: AddItem) -> CommandResponse[None]:
        order = await self.orders.load(command.order_id)
        order.add_item(command.sku, command.quantity)
        return CommandResponse.from_aggregates(None, order)

    async def change_preferences(self, command: ChangePreferences) -> CommandResponse[None]:
        prefs = await self.preferences.find(command.user_id) or UserPreferences(id=command.user_id)
        prefs.change(command.theme)
        self.preferences.save(prefs)
        return CommandResponse.from_aggregates(None, prefs)

    async def register_customer(self, command: RegisterCustomer) -> CommandResponse[str]:
        customer = Customer.register(command.customer_id, command.name)
        self.customers.save(customer)
        return CommandResponse.from_aggregates(customer.id, customer)

    async def place_and_add(self, command: PlaceOrderAndAddItem) -> CommandResponse[str]:
        order = Order.place(command.order_id, "c-1", 5)
        response = CommandResponse.from_aggregates(order.id, order)
        # The child runs (and stages) before this handler returns; its events must
        # still come after the parent's.
        assert self.mediator is not None
        # The order is not committed yet, so the child cannot load it: it adds
        # an item to another order of the same transaction.
        await self.mediator.send(PlaceOrder(order_id=f"{command.order_id}-child"))
        return response

    async def touch_unregistered(self, command: TouchUnregistered) -> CommandResponse[None]:
        aggregate = Unregistered(id=command.aggregate_id)
        aggregate.touch()
        return CommandResponse.from_aggregates(None, aggregate)

    async def nothing_persisted(self) -> bool:
        return (
            await self.events.latest_position() == 0
            and len(self.outbox) == 0
            and await self.customers.find("cust-1") is None
        )

    async def outbox_messages(self, ids: Sequence[str]) -> list[OutboxMessage]:
        found = [await self.outbox.get(i) for i in ids]
        return [m for m in found if m is not None]


def event_ids(response: Any) -> list[str]:
    return [event.event_id for event in response.events]
