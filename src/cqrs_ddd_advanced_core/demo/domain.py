"""The shop's domain: orders, invoices and user preferences.

* :class:`Order` is **event-sourced**: it is placed with lines, takes more
  lines while open, and is then confirmed or cancelled, once. Its state is the
  fold of its events (``apply_<Event>`` methods).
* :class:`Invoice` is **event-sourced** too: confirming an order issues one,
  through a nested command in the same unit of work.
* :class:`UserPreferences` is **state-stored** (``@non_event_sourced``): a
  repository keeps its current state with an optimistic version check; its
  events reach the outbox but never the event store.

Nothing here knows about storage; :mod:`cqrs_ddd_advanced_core.demo.app`
wires the handlers to the ports.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cqrs_ddd_advanced_core.decorators import non_event_sourced
from cqrs_ddd_advanced_core.event_sourcing import EventSourcedAggregate
from cqrs_ddd_core.domain import AggregateRoot, DomainEvent
from cqrs_ddd_core.exceptions import CommandRefusedError

__all__ = [
    "EVENT_SOURCED_TYPES",
    "INVOICE_EVENTS",
    "ORDER_EVENTS",
    "Invoice",
    "InvoiceIssued",
    "Order",
    "OrderCancelled",
    "OrderClosedError",
    "OrderConfirmed",
    "OrderLine",
    "OrderLineAdded",
    "OrderPlaced",
    "PreferencesChanged",
    "UserPreferences",
]

OrderStatus = Literal["open", "confirmed", "cancelled"]


class OrderClosedError(CommandRefusedError):
    """A business rule refused the command: the order is no longer open.

    Attributes:
        order_id: The order.
        status: Its status (``confirmed`` or ``cancelled``).
    """

    def __init__(self, order_id: str, status: str, action: str) -> None:
        super().__init__(f"Order {order_id} is {status}: cannot {action}")
        self.order_id = order_id
        self.status = status


class OrderLine(BaseModel):
    """A product, how many, and its unit price in cents."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0, le=1000)
    unit_price_cents: int = Field(ge=0)

    @property
    def amount_cents(self) -> int:
        return self.quantity * self.unit_price_cents


# -- orders ------------------------------------------------------------------------


class OrderPlaced(DomainEvent):
    """An order was placed with its first lines."""

    customer_id: str
    lines: list[OrderLine]


class OrderLineAdded(DomainEvent):
    """A line was added to an open order."""

    line: OrderLine


class OrderConfirmed(DomainEvent):
    """An order was confirmed at its total."""

    total_cents: int


class OrderCancelled(DomainEvent):
    """An order was cancelled, with the reason."""

    reason: str


ORDER_EVENTS: tuple[type[DomainEvent], ...] = (
    OrderPlaced,
    OrderLineAdded,
    OrderConfirmed,
    OrderCancelled,
)


class Order(EventSourcedAggregate):
    """An order: open while lines are added, then confirmed or cancelled."""

    customer_id: str = ""
    status: OrderStatus = "open"
    lines: list[OrderLine] = Field(default_factory=list)

    @property
    def total_cents(self) -> int:
        return sum(line.amount_cents for line in self.lines)

    @classmethod
    def place(cls, order_id: str, customer_id: str, lines: list[OrderLine]) -> Order:
        order = cls.blank(order_id)
        order.raise_event(OrderPlaced(customer_id=customer_id, lines=list(lines)))
        return order

    def add_line(self, line: OrderLine) -> None:
        self._require_open("add a line")
        self.raise_event(OrderLineAdded(line=line))

    def confirm(self) -> None:
        self._require_open("confirm it")
        self.raise_event(OrderConfirmed(total_cents=self.total_cents))

    def cancel(self, reason: str) -> None:
        self._require_open("cancel it")
        self.raise_event(OrderCancelled(reason=reason))

    def _require_open(self, action: str) -> None:
        if self.status != "open":
            raise OrderClosedError(self.id, self.status, action)

    # -- state changes: the only place fields are written -------------------------

    def apply_OrderPlaced(self, event: OrderPlaced) -> None:
        self.customer_id = event.customer_id
        self.status = "open"
        self.lines = list(event.lines)

    def apply_OrderLineAdded(self, event: OrderLineAdded) -> None:
        self.lines = [*self.lines, event.line]

    def apply_OrderConfirmed(self, event: OrderConfirmed) -> None:
        self.status = "confirmed"

    def apply_OrderCancelled(self, event: OrderCancelled) -> None:
        self.status = "cancelled"


# -- invoices ----------------------------------------------------------------------


class InvoiceIssued(DomainEvent):
    """An invoice was issued for a confirmed order."""

    order_id: str
    customer_id: str
    amount_cents: int


INVOICE_EVENTS: tuple[type[DomainEvent], ...] = (InvoiceIssued,)


class Invoice(EventSourcedAggregate):
    """The invoice of a confirmed order."""

    order_id: str = ""
    customer_id: str = ""
    amount_cents: int = 0

    @classmethod
    def issue(cls, invoice_id: str, order_id: str, customer_id: str, amount_cents: int) -> Invoice:
        invoice = cls.blank(invoice_id)
        invoice.raise_event(
            InvoiceIssued(order_id=order_id, customer_id=customer_id, amount_cents=amount_cents)
        )
        return invoice

    def apply_InvoiceIssued(self, event: InvoiceIssued) -> None:
        self.order_id = event.order_id
        self.customer_id = event.customer_id
        self.amount_cents = event.amount_cents


EVENT_SOURCED_TYPES: tuple[type[EventSourcedAggregate], ...] = (Order, Invoice)


# -- user preferences (state-stored) ----------------------------------------------------


class PreferencesChanged(DomainEvent):
    """A user changed their preferences."""

    language: str
    currency: str
    newsletter: bool


@non_event_sourced
class UserPreferences(AggregateRoot):
    """A user's settings, stored as state; each change is still announced (outbox)."""

    language: str = "en"
    currency: str = "EUR"
    newsletter: bool = False

    def change(self, *, language: str, currency: str, newsletter: bool) -> None:
        self.language, self.currency, self.newsletter = language, currency, newsletter
        self.record_event(
            PreferencesChanged(language=language, currency=currency, newsletter=newsletter)
        )
