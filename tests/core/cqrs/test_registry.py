"""The handler registry: one handler per command or query type, many per event type."""

from __future__ import annotations

import pytest

from cqrs_ddd_core.cqrs import HandlerRegistry
from cqrs_ddd_core.exceptions import HandlerRegistrationError
from tests.core.shop import GetOrder, OrderPlaced, PlaceOrder, PlaceOrderHandler, Stores


async def place(command: PlaceOrder) -> str:
    return command.order_id


async def place_differently(command: PlaceOrder) -> str:
    return "other"


def test_a_second_command_handler_for_the_same_type_is_refused(
    registry: HandlerRegistry,
) -> None:
    registry.register_command_handler(PlaceOrder, place)

    with pytest.raises(HandlerRegistrationError) as raised:
        registry.register_command_handler(PlaceOrder, place_differently)

    assert raised.value.message_type is PlaceOrder
    assert "PlaceOrder already has a command handler" in str(raised.value)
    assert registry.get_command_handler(PlaceOrder) is place  # the first one stays


def test_a_second_query_handler_for_the_same_type_is_refused(registry: HandlerRegistry) -> None:
    async def first(query: GetOrder) -> None:
        return None

    async def second(query: GetOrder) -> None:
        return None

    registry.register_query_handler(GetOrder, first)

    with pytest.raises(HandlerRegistrationError, match="GetOrder already has a query handler"):
        registry.register_query_handler(GetOrder, second)


def test_registering_the_same_handler_again_is_a_no_op(registry: HandlerRegistry) -> None:
    handler = PlaceOrderHandler(Stores())
    registry.register_command_handler(PlaceOrder, handler)
    registry.register_command_handler(PlaceOrder, handler)  # its bound handle() compares equal

    assert registry.get_command_handler(PlaceOrder) == handler.handle


def test_an_event_type_has_many_handlers_each_registered_once(registry: HandlerRegistry) -> None:
    async def mail(event: OrderPlaced) -> None: ...

    async def bill(event: OrderPlaced) -> None: ...

    registry.register_event_handler(OrderPlaced, mail)
    registry.register_event_handler(OrderPlaced, bill)
    registry.register_event_handler(OrderPlaced, mail)

    assert registry.get_event_handlers(OrderPlaced) == (mail, bill)
    assert registry.has_event_handlers


def test_the_decorators_register_and_return_the_handler(registry: HandlerRegistry) -> None:
    @registry.command_handler(PlaceOrder)
    async def handle_place(command: PlaceOrder) -> str:
        return "ok"

    @registry.event_handler(OrderPlaced)
    async def on_placed(event: OrderPlaced) -> None: ...

    assert registry.get_command_handler(PlaceOrder) is handle_place
    assert registry.get_event_handlers(OrderPlaced) == (on_placed,)
    assert registry.get_query_handler(GetOrder) is None


def test_a_handler_for_something_that_is_not_a_message_type_is_refused(
    registry: HandlerRegistry,
) -> None:
    with pytest.raises(HandlerRegistrationError, match="is not a Command subclass"):
        registry.register_command_handler(GetOrder, place)  # type: ignore[arg-type]
    with pytest.raises(HandlerRegistrationError, match="is not a DomainEvent subclass"):
        registry.register_event_handler(PlaceOrder, place)  # type: ignore[arg-type]


def test_a_handler_class_instead_of_an_instance_is_refused(registry: HandlerRegistry) -> None:
    # Registered, its unbound handle() would receive the command as ``self``.
    with pytest.raises(HandlerRegistrationError, match="is a class; register an instance"):
        registry.register_command_handler(PlaceOrder, PlaceOrderHandler)


def test_something_without_handle_that_is_not_callable_is_refused(
    registry: HandlerRegistry,
) -> None:
    with pytest.raises(HandlerRegistrationError, match="has no handle\\(\\) method"):
        registry.register_command_handler(PlaceOrder, "not a handler")
