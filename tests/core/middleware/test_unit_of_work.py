"""The unit-of-work middleware: commit on success, roll back on any failure."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cqrs_ddd_core.context import DispatchContext, current_uow
from cqrs_ddd_core.cqrs import HandlerRegistry, Mediator
from cqrs_ddd_core.exceptions import ConcurrencyError
from cqrs_ddd_core.middleware import UnitOfWorkMiddleware
from tests.core.shop import PlaceOrder, PlaceOrderHandler, Stores, UowFactory


def build(uow_factory: UowFactory, handler: Any) -> Mediator:
    registry = HandlerRegistry()
    registry.register_command_handler(PlaceOrder, handler)
    return Mediator(registry, middlewares=[UnitOfWorkMiddleware(uow_factory)])


async def test_the_transaction_commits_when_the_handler_succeeds(
    stores: Stores, uow_factory: UowFactory
) -> None:
    await build(uow_factory, PlaceOrderHandler(stores)).send(PlaceOrder(order_id="o-1", amount=2))

    [uow] = uow_factory.created
    assert not uow.is_open
    assert [t.operation for t in uow.timings] == ["INSERT", "UPSERT", "COMMIT"]
    order = await stores.orders.get("o-1")
    assert (order.amount, order.version) == (2, 1)
    assert await stores.events.latest_position() == 1


async def test_a_failing_handler_rolls_back_and_its_exception_propagates_unchanged(
    stores: Stores, uow_factory: UowFactory
) -> None:
    error = RuntimeError("payment service down")

    class FailingAfterWriting(PlaceOrderHandler):
        async def handle(self, command: PlaceOrder) -> Any:
            await super().handle(command)  # staged state and events...
            raise error  # ...then failed

    with pytest.raises(RuntimeError) as raised:
        await build(uow_factory, FailingAfterWriting(stores)).send(
            PlaceOrder(order_id="o-1", amount=2)
        )

    assert raised.value is error
    assert not uow_factory.created[0].is_open
    assert await stores.are_empty()


async def test_a_cancelled_dispatch_rolls_back_too(stores: Stores, uow_factory: UowFactory) -> None:
    started = asyncio.Event()

    class SlowHandler(PlaceOrderHandler):
        async def handle(self, command: PlaceOrder) -> Any:
            response = await super().handle(command)
            started.set()
            await asyncio.sleep(60)
            return response

    mediator = build(uow_factory, SlowHandler(stores))
    task = asyncio.create_task(mediator.send(PlaceOrder(order_id="o-1", amount=2)))
    await started.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task

    assert not uow_factory.created[0].is_open
    assert await stores.are_empty()


async def test_a_failure_at_commit_rolls_back_and_raises(
    stores: Stores, uow_factory: UowFactory
) -> None:
    mediator = build(uow_factory, PlaceOrderHandler(stores))
    await mediator.send(PlaceOrder(order_id="o-1", amount=2))
    rolled_back: list[bool] = []

    class AlsoWatchesRollback(PlaceOrderHandler):
        async def handle(self, command: PlaceOrder) -> Any:
            uow = current_uow()
            assert uow is not None

            async def note() -> None:
                rolled_back.append(True)

            uow.after_rollback(note)
            return await super().handle(command)

    with pytest.raises(ConcurrencyError):
        await build(uow_factory, AlsoWatchesRollback(stores)).send(
            PlaceOrder(order_id="o-1", amount=9)
        )

    assert rolled_back == [True]
    order = await stores.orders.get("o-1")
    assert order.amount == 2  # the first command's state, untouched


async def test_a_nested_dispatch_joins_the_running_unit_of_work_instead_of_opening_one(
    uow_factory: UowFactory,
) -> None:
    middleware = UnitOfWorkMiddleware(uow_factory)
    outer_uow = uow_factory()
    parent = DispatchContext(PlaceOrder(order_id="o-1", amount=1), "command")
    parent.uow = outer_uow
    child = DispatchContext(PlaceOrder(order_id="o-2", amount=1), "command", parent=parent)

    async def terminal(message: Any, context: DispatchContext) -> Any:
        return context.uow

    assert await middleware(child.message, child, terminal) is outer_uow
    assert outer_uow.is_open  # only the outermost dispatch commits
    assert len(uow_factory.created) == 1


def test_the_middleware_provides_the_unit_of_work_capability_and_checks_its_factory() -> None:
    middleware = UnitOfWorkMiddleware(UowFactory())

    assert middleware.placement.provides == frozenset({"unit_of_work"})
    assert repr(middleware).startswith("UnitOfWorkMiddleware(uow_factory=")
    with pytest.raises(TypeError, match="uow_factory must be callable"):
        UnitOfWorkMiddleware(None)  # type: ignore[arg-type]
