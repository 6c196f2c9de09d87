"""A projection: a name and the event handlers that build one read model.

Handlers take the stored event (at its current schema version, see
:mod:`cqrs_ddd_advanced_core.event_sourcing.upcasting`) and the projection
store's transaction, and write the read model through that transaction::

    customer_orders = Projection[AsyncConnection]("customer_orders")

    @customer_orders.on("OrderPlaced")
    async def placed(event: StoredEvent, tx: AsyncConnection) -> None:
        await tx.execute(insert(orders_by_customer).values(...))

Events of types the projection has no handler for are skipped (the
checkpoint still moves past them). ``reset`` clears the read model for a
rebuild, in the same transaction that sets the checkpoint back to 0.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

from cqrs_ddd_advanced_core.domain.exceptions import EventSourcingConfigurationError
from cqrs_ddd_core.domain.messages import DomainEvent

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.records import StoredEvent

__all__ = ["Projection", "ProjectionHandler", "ProjectionReset"]

TTx = TypeVar("TTx")

ProjectionHandler = Callable[["StoredEvent", TTx], Awaitable[None]]
"""``await handler(event, tx)``: apply one event to the read model through ``tx``."""

ProjectionReset = Callable[[TTx], Awaitable[None]]
"""``await reset(tx)``: clear the read model (a rebuild starts from nothing)."""

_MAX_NAME = 255  # the checkpoint table's key


def _event_type_name(event_type: str | type[DomainEvent]) -> str:
    if isinstance(event_type, str) and event_type:
        return event_type
    if isinstance(event_type, type) and issubclass(event_type, DomainEvent):
        return event_type.type_name()
    raise EventSourcingConfigurationError(
        f"expected an event type name or a DomainEvent subclass, got {event_type!r}"
    )


class Projection(Generic[TTx]):
    """Event handlers by stored event type, under a stable name.

    Args:
        name: The projection's name (its checkpoint's key; 1-255 characters).
        handlers: Handlers by event type name (or use :meth:`on`).
        reset: Clears the read model before a rebuild.

    Raises:
        EventSourcingConfigurationError: a bad name or handler.
    """

    __slots__ = ("_handlers", "_name", "_reset")

    def __init__(
        self,
        name: str,
        handlers: Mapping[str, ProjectionHandler[TTx]] | None = None,
        *,
        reset: ProjectionReset[TTx] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME:
            raise EventSourcingConfigurationError(
                f"a projection name must be 1-{_MAX_NAME} characters, got {name!r}"
            )
        self._name = name
        self._handlers: dict[str, ProjectionHandler[TTx]] = {}
        self._reset = reset
        for event_type, handler in (handlers or {}).items():
            self.add(event_type, handler)

    @property
    def name(self) -> str:
        """The projection's name (its checkpoint's key)."""
        return self._name

    @property
    def event_types(self) -> frozenset[str]:
        """The event types the projection handles."""
        return frozenset(self._handlers)

    def add(self, event_type: str | type[DomainEvent], handler: ProjectionHandler[TTx]) -> None:
        """Handle events of ``event_type`` with ``handler``.

        Raises:
            EventSourcingConfigurationError: not callable, or the type has a handler.
        """
        type_name = _event_type_name(event_type)
        if not callable(handler):
            raise EventSourcingConfigurationError(
                f"projection {self._name!r}: the handler for {type_name} is not callable"
            )
        if type_name in self._handlers:
            raise EventSourcingConfigurationError(
                f"projection {self._name!r} has a handler for {type_name} already"
            )
        self._handlers[type_name] = handler

    def on(
        self, *event_types: str | type[DomainEvent]
    ) -> Callable[[ProjectionHandler[TTx]], ProjectionHandler[TTx]]:
        """Decorator: handle events of ``event_types`` with the decorated function."""

        def decorate(handler: ProjectionHandler[TTx]) -> ProjectionHandler[TTx]:
            for event_type in event_types:
                self.add(event_type, handler)
            return handler

        return decorate

    def handles(self, event_type: str) -> bool:
        """True when the projection has a handler for ``event_type``."""
        return event_type in self._handlers

    async def apply(self, event: StoredEvent, tx: TTx) -> bool:
        """Apply ``event`` through ``tx``; False when the projection ignores its type."""
        handler = self._handlers.get(event.event_type)
        if handler is None:
            return False
        await handler(event, tx)
        return True

    async def reset(self, tx: TTx) -> None:
        """Clear the read model (a no-op without a ``reset``)."""
        if self._reset is not None:
            await self._reset(tx)

    def __repr__(self) -> str:
        return f"Projection({self._name!r}, handles={sorted(self._handlers)})"
