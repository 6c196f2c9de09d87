"""The shop application: handlers wired to the ports, behind an ``EventSourcedMediator``.

The mediator keeps its **default** command pipeline, with the audit step as
its inner middleware::

    tracing -> logging -> metrics -> validation -> unit_of_work
      -> event_persistence -> outbox -> audit -> handler

``Order`` and ``Invoice`` are registered as event-sourced (strict mode: an
event of any other type is refused); ``UserPreferences`` is
``@non_event_sourced``, so its events reach the outbox only.

Only ports are used here (``EventStore``, ``OutboxStore``, ``AuditStore``,
``StateRepository``, a unit-of-work factory): give it the in-memory adapters
or the SQLAlchemy ones.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from cqrs_ddd_advanced_core.cqrs import EventSourcedMediator
from cqrs_ddd_advanced_core.demo.domain import (
    EVENT_SOURCED_TYPES,
    INVOICE_EVENTS,
    ORDER_EVENTS,
    Invoice,
    Order,
    UserPreferences,
)
from cqrs_ddd_advanced_core.demo.messages import (
    AddOrderLine,
    CancelOrder,
    ConfirmOrder,
    GetOrderSummary,
    GetPreferences,
    IssueInvoice,
    OrderSummary,
    PlaceOrder,
    PreferencesView,
    UpdatePreferences,
)
from cqrs_ddd_advanced_core.event_sourcing import (
    EventSourcedPersistenceOrchestrator,
    EventSourcedRepository,
)
from cqrs_ddd_advanced_core.middleware import AuditMiddleware
from cqrs_ddd_core.cqrs import CommandResponse, HandlerRegistry

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.ports import (
        AuditStore,
        EventStore,
        OutboxStore,
        StateRepository,
        UnitOfWorkFactory,
    )

__all__ = ["Shop", "invoice_id_for"]


def invoice_id_for(order_id: str) -> str:
    """The id of an order's invoice (one per order, so a retried confirmation cannot
    issue a second one: both would append version 1 of the same stream)."""
    return f"inv-{order_id}"


class Shop:
    """The shop's command and query handlers on an :class:`EventSourcedMediator`.

    Args:
        uow_factory: Makes the unit of work of each top-level command.
        event_store: Where ``Order`` and ``Invoice`` streams go.
        outbox_store: Where every event goes as an outbox message.
        preferences: The state repository of ``UserPreferences``.
        audit_store: When given, every command is audited (``AuditMiddleware``).

    Attributes:
        mediator: Send commands and queries through it.
        orders, invoices: Event-sourced repositories (read only).
        nested_commands: How many commands the handlers sent, by type.
    """

    def __init__(
        self,
        *,
        uow_factory: UnitOfWorkFactory,
        event_store: EventStore,
        outbox_store: OutboxStore,
        preferences: StateRepository[UserPreferences],
        audit_store: AuditStore | None = None,
    ) -> None:
        orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=event_store)
        for aggregate in EVENT_SOURCED_TYPES:
            orchestrator.register_event_sourced_type(aggregate)
        self.registry = HandlerRegistry()
        self.mediator = EventSourcedMediator(
            self.registry,
            uow_factory,
            orchestrator,
            outbox_store=outbox_store,
            inner_middlewares=[AuditMiddleware(audit_store=audit_store)] if audit_store else [],
        )
        self.orders = EventSourcedRepository(event_store, Order, event_types=ORDER_EVENTS)
        self.invoices = EventSourcedRepository(event_store, Invoice, event_types=INVOICE_EVENTS)
        self.preferences = preferences
        self.nested_commands: Counter[str] = Counter()

        register = self.registry.register_command_handler
        register(PlaceOrder, self.place_order)
        register(AddOrderLine, self.add_order_line)
        register(ConfirmOrder, self.confirm_order)
        register(CancelOrder, self.cancel_order)
        register(IssueInvoice, self.issue_invoice)
        register(UpdatePreferences, self.update_preferences)
        self.registry.register_query_handler(GetOrderSummary, self.get_order_summary)
        self.registry.register_query_handler(GetPreferences, self.get_preferences)

    # -- commands ----------------------------------------------------------------------

    async def place_order(self, command: PlaceOrder) -> CommandResponse[str]:
        order = Order.place(command.order_id, command.customer_id, command.lines)
        return CommandResponse.from_aggregates(order.id, order)

    async def add_order_line(self, command: AddOrderLine) -> CommandResponse[int]:
        order = await self.orders.load(command.order_id)
        order.add_line(command.line)
        return CommandResponse.from_aggregates(order.total_cents, order)

    async def confirm_order(self, command: ConfirmOrder) -> CommandResponse[str]:
        order = await self.orders.load(command.order_id)
        order.confirm()
        # A nested command: it joins this unit of work, so the order's and the
        # invoice's events commit together (the order's first), or neither does.
        issue = IssueInvoice(
            invoice_id=invoice_id_for(order.id),
            order_id=order.id,
            customer_id=order.customer_id,
            amount_cents=order.total_cents,
        )
        self.nested_commands[IssueInvoice.type_name()] += 1
        invoice = await self.mediator.send(issue)
        return CommandResponse.from_aggregates(invoice.result, order)

    async def cancel_order(self, command: CancelOrder) -> CommandResponse[None]:
        order = await self.orders.load(command.order_id)
        order.cancel(command.reason)
        return CommandResponse.from_aggregates(None, order)

    async def issue_invoice(self, command: IssueInvoice) -> CommandResponse[str]:
        invoice = Invoice.issue(
            command.invoice_id, command.order_id, command.customer_id, command.amount_cents
        )
        return CommandResponse.from_aggregates(invoice.id, invoice)

    async def update_preferences(self, command: UpdatePreferences) -> CommandResponse[int]:
        preferences = await self.preferences.find(command.user_id)
        if preferences is None:
            preferences = UserPreferences(id=command.user_id)
        preferences.change(
            language=command.language, currency=command.currency, newsletter=command.newsletter
        )
        # Staged on the command's unit of work; at commit the stored row must
        # still be at the version it was loaded at (else ConcurrencyError).
        self.preferences.save(preferences)
        return CommandResponse.from_aggregates(preferences.version, preferences)

    # -- queries -------------------------------------------------------------------------

    async def get_order_summary(self, query: GetOrderSummary) -> OrderSummary:
        order = await self.orders.load(query.order_id)
        return OrderSummary(
            order_id=order.id,
            customer_id=order.customer_id,
            status=order.status,
            lines=len(order.lines),
            total_cents=order.total_cents,
            version=order.version,
        )

    async def get_preferences(self, query: GetPreferences) -> PreferencesView | None:
        preferences = await self.preferences.find(query.user_id)
        if preferences is None:
            return None
        return PreferencesView(
            user_id=preferences.id,
            language=preferences.language,
            currency=preferences.currency,
            newsletter=preferences.newsletter,
            version=preferences.version,
        )
