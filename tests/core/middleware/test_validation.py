"""Validation runs before any transaction opens and reports every field error."""

from __future__ import annotations

from typing import Any

import pytest

from cqrs_ddd_core.context import DispatchContext
from cqrs_ddd_core.cqrs import HandlerRegistry, Mediator
from cqrs_ddd_core.exceptions import FieldError, MessageValidationError
from cqrs_ddd_core.middleware import UnitOfWorkMiddleware, ValidationMiddleware, Validator
from tests.core.shop import PlaceOrder, PlaceOrderHandler, Stores, UowFactory


def no_vip_orders(command: PlaceOrder) -> list[FieldError]:
    if command.order_id.startswith("vip-"):
        return [FieldError(("order_id",), "VIP orders go through the concierge", "vip")]
    return []


async def stock_available(command: PlaceOrder) -> list[FieldError]:
    if command.amount > 100:
        return [FieldError(("amount",), "not enough stock", "stock")]
    return []


class CreditCheck:
    """An async callable object: not a coroutine function, but it returns an awaitable."""

    async def __call__(self, command: PlaceOrder) -> list[FieldError]:
        if command.amount > 50:
            return [FieldError(("amount",), "over the credit limit", "credit")]
        return []


def build(
    stores: Stores,
    uow_factory: UowFactory,
    handler: PlaceOrderHandler,
    validators: dict[type, list[Validator]] | None = None,
    *,
    revalidate: bool = True,
) -> Mediator:
    registry = HandlerRegistry()
    registry.register_command_handler(PlaceOrder, handler)
    return Mediator(
        registry,
        uow_factory,
        middlewares=[
            ValidationMiddleware(validators=validators, revalidate=revalidate),
            UnitOfWorkMiddleware(uow_factory),
        ],
    )


async def test_a_constructed_message_with_a_bad_field_is_revalidated_and_nothing_is_persisted(
    stores: Stores, uow_factory: UowFactory
) -> None:
    handler = PlaceOrderHandler(stores)
    mediator = build(stores, uow_factory, handler)
    # model_construct skips pydantic validation, as a buggy caller might.
    command = PlaceOrder.model_construct(order_id="o-1", amount=-5)

    with pytest.raises(MessageValidationError) as raised:
        await mediator.send(command)

    error = raised.value
    assert error.message_type is PlaceOrder
    assert [(e.loc, e.type) for e in error.errors] == [(("amount",), "greater_than")]
    assert str(error) == "PlaceOrder is invalid: amount: Input should be greater than 0"
    assert handler.calls == 0
    assert uow_factory.created == []  # validation ran before any transaction opened
    assert await stores.are_empty()


async def test_a_constructed_message_missing_a_field_is_reported_as_missing(
    stores: Stores, uow_factory: UowFactory
) -> None:
    mediator = build(stores, uow_factory, PlaceOrderHandler(stores))

    with pytest.raises(MessageValidationError) as raised:
        await mediator.send(PlaceOrder.model_construct(amount=3))  # type: ignore[call-arg]

    assert [(e.loc, e.type) for e in raised.value.errors] == [(("order_id",), "missing")]


@pytest.mark.parametrize(
    ("validator", "order_id", "amount", "expected"),
    [
        pytest.param(no_vip_orders, "vip-1", 1, (("order_id",), "vip"), id="sync function"),
        pytest.param(stock_available, "o-1", 101, (("amount",), "stock"), id="async function"),
        pytest.param(CreditCheck(), "o-1", 51, (("amount",), "credit"), id="async callable"),
    ],
)
async def test_a_pluggable_validator_rejects_the_message_and_nothing_is_persisted(
    stores: Stores,
    uow_factory: UowFactory,
    validator: Validator,
    order_id: str,
    amount: int,
    expected: tuple[tuple[str, ...], str],
) -> None:
    handler = PlaceOrderHandler(stores)
    mediator = build(stores, uow_factory, handler, {PlaceOrder: [validator]})

    with pytest.raises(MessageValidationError) as raised:
        await mediator.send(PlaceOrder(order_id=order_id, amount=amount))

    assert [(e.loc, e.type) for e in raised.value.errors] == [expected]
    assert handler.calls == 0
    assert uow_factory.created == []
    assert await stores.are_empty()


async def test_every_error_is_reported_pydantic_ones_first_then_each_validators(
    stores: Stores, uow_factory: UowFactory
) -> None:
    mediator = build(
        stores,
        uow_factory,
        PlaceOrderHandler(stores),
        {PlaceOrder: [no_vip_orders, stock_available, CreditCheck()]},
    )

    with pytest.raises(MessageValidationError) as raised:
        await mediator.send(PlaceOrder.model_construct(order_id="vip-9", amount=0))

    assert [e.type for e in raised.value.errors] == ["greater_than", "vip"]


async def test_a_valid_message_passes_every_validator_and_reaches_the_handler(
    stores: Stores, uow_factory: UowFactory
) -> None:
    handler = PlaceOrderHandler(stores)
    mediator = build(
        stores, uow_factory, handler, {PlaceOrder: [no_vip_orders, stock_available, CreditCheck()]}
    )

    response = await mediator.send(PlaceOrder(order_id="o-1", amount=5))

    assert response.result == "o-1"
    assert handler.calls == 1
    assert await stores.events.latest_position() == 1


async def test_validators_run_only_for_the_type_they_are_registered_for() -> None:
    seen: list[Any] = []

    def record(message: Any) -> list[FieldError]:
        seen.append(message)
        return []

    middleware = ValidationMiddleware(validators={str: [record]})

    async def terminal(message: Any, context: DispatchContext) -> str:
        return "reached"

    command = PlaceOrder(order_id="o-1", amount=1)
    context = DispatchContext(command, "command")

    assert await middleware(command, context, terminal) == "reached"
    assert seen == []


async def test_revalidation_can_be_turned_off(stores: Stores, uow_factory: UowFactory) -> None:
    handler = PlaceOrderHandler(stores)
    mediator = build(stores, uow_factory, handler, revalidate=False)

    response = await mediator.send(PlaceOrder.model_construct(order_id="o-1", amount=-5))

    assert response.result == "o-1"


def test_the_middleware_describes_itself() -> None:
    middleware = ValidationMiddleware(validators={PlaceOrder: [no_vip_orders]})

    assert middleware.name == "validation"
    assert "unit_of_work" in middleware.placement.outside
    assert repr(middleware) == "ValidationMiddleware(revalidate=True, validators=[PlaceOrder])"


async def test_an_outer_middleware_sees_the_validation_error_where_it_awaits_the_rest(
    stores: Stores, uow_factory: UowFactory
) -> None:
    caught: list[BaseException] = []

    async def outer(message: Any, context: DispatchContext, call_next: Any) -> Any:
        try:
            return await call_next(message, context)
        except MessageValidationError as exc:
            caught.append(exc)
            raise

    registry = HandlerRegistry()
    registry.register_command_handler(PlaceOrder, PlaceOrderHandler(stores))
    mediator = Mediator(
        registry,
        uow_factory,
        middlewares=[outer, ValidationMiddleware(), UnitOfWorkMiddleware(uow_factory)],
    )
    bad = PlaceOrder.model_construct(order_id="o-1", amount="lots")

    with pytest.raises(MessageValidationError) as raised:
        await mediator.send(bad)

    assert caught == [raised.value]
    assert uow_factory.created == []
