"""Which handler serves which message type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from cqrs_ddd_core.domain.messages import Command, DomainEvent, Query
from cqrs_ddd_core.exceptions import HandlerRegistrationError

__all__ = ["HandlerFn", "HandlerRegistry"]

HandlerFn = Callable[[Any], Awaitable[Any]]
"""A handler reduced to what the mediator calls: ``await fn(message)``."""

H = TypeVar("H")


def _as_callable(handler: object, message_type: type) -> HandlerFn:
    if isinstance(handler, type):
        # A class's ``handle`` is an unbound function: the message would become ``self``.
        raise HandlerRegistrationError(
            f"{handler.__qualname__} is a class; register an instance of it as the handler "
            f"for {message_type.__qualname__}",
            message_type=message_type,
        )
    handle: object = getattr(handler, "handle", None)
    if callable(handle):
        return cast(HandlerFn, handle)
    if callable(handler):
        return cast(HandlerFn, handler)
    raise HandlerRegistrationError(
        f"{handler!r} is not a handler for {message_type.__qualname__}: "
        "it has no handle() method and is not callable",
        message_type=message_type,
    )


def _same(a: HandlerFn, b: HandlerFn) -> bool:
    return a == b  # bound methods of one object compare equal


class HandlerRegistry:
    """Command and query types map to one handler each; event types to many.

    A handler is an object with ``async def handle(message)`` or an async
    callable taking the message. Registering a different handler for a
    command or query type that already has one raises
    :class:`HandlerRegistrationError`; registering the same one again is a no-op.
    """

    def __init__(self) -> None:
        self._commands: dict[type, HandlerFn] = {}
        self._queries: dict[type, HandlerFn] = {}
        self._events: dict[type, list[HandlerFn]] = {}

    def _register_single(
        self,
        table: dict[type, HandlerFn],
        kind: str,
        base: type,
        message_type: type,
        handler: object,
    ) -> None:
        if not (isinstance(message_type, type) and issubclass(message_type, base)):
            raise HandlerRegistrationError(
                f"{message_type!r} is not a {base.__name__} subclass", message_type=message_type
            )
        fn = _as_callable(handler, message_type)
        existing = table.get(message_type)
        if existing is not None and not _same(existing, fn):
            raise HandlerRegistrationError(
                f"{message_type.__qualname__} already has a {kind} handler ({existing!r}); "
                f"refusing to replace it with {fn!r}",
                message_type=message_type,
            )
        table[message_type] = fn

    def register_command_handler(self, command_type: type[Command[Any]], handler: object) -> None:
        self._register_single(self._commands, "command", Command, command_type, handler)

    def register_query_handler(self, query_type: type[Query[Any]], handler: object) -> None:
        self._register_single(self._queries, "query", Query, query_type, handler)

    def register_event_handler(self, event_type: type[DomainEvent], handler: object) -> None:
        if not (isinstance(event_type, type) and issubclass(event_type, DomainEvent)):
            raise HandlerRegistrationError(
                f"{event_type!r} is not a DomainEvent subclass", message_type=event_type
            )
        fn = _as_callable(handler, event_type)
        handlers = self._events.setdefault(event_type, [])
        if not any(_same(h, fn) for h in handlers):
            handlers.append(fn)

    def command_handler(self, command_type: type[Command[Any]]) -> Callable[[H], H]:
        """Decorator form of :meth:`register_command_handler`."""

        def register(handler: H) -> H:
            self.register_command_handler(command_type, handler)
            return handler

        return register

    def query_handler(self, query_type: type[Query[Any]]) -> Callable[[H], H]:
        """Decorator form of :meth:`register_query_handler`."""

        def register(handler: H) -> H:
            self.register_query_handler(query_type, handler)
            return handler

        return register

    def event_handler(self, event_type: type[DomainEvent]) -> Callable[[H], H]:
        """Decorator form of :meth:`register_event_handler`."""

        def register(handler: H) -> H:
            self.register_event_handler(event_type, handler)
            return handler

        return register

    def get_command_handler(self, command_type: type) -> HandlerFn | None:
        return self._commands.get(command_type)

    def get_query_handler(self, query_type: type) -> HandlerFn | None:
        return self._queries.get(query_type)

    def get_event_handlers(self, event_type: type) -> tuple[HandlerFn, ...]:
        return tuple(self._events.get(event_type, ()))

    @property
    def has_event_handlers(self) -> bool:
        return bool(self._events)
