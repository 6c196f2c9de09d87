"""Awaited events continue a saga; stored deadlines fail a step that hears nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cqrs_ddd_advanced_core.sagas import SagaStatus, SagaWorker
from tests.support.backends import Backend
from tests.support.orders import (
    PaymentTaken,
    PlaceOrder,
    awaiting_saga,
    order_app,
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_an_awaited_event_completes_its_step_and_the_saga_goes_on(backend: Backend) -> None:
    app = order_app(backend, awaiting_saga())

    await app.mediator.send(PlaceOrder(order_id="o1"))

    saga = await app.manager.store.find("order-remote:o1")
    assert saga is not None
    assert saga.status is SagaStatus.COMPLETED
    assert saga.completed_steps == ["reserve", "pay", "ship"]
    assert await app.ledger("o1") == ["place", "reserve", "pay", "ship"]


async def test_a_failure_event_compensates_the_awaited_step_and_those_before(
    backend: Backend,
) -> None:
    app = order_app(backend, awaiting_saga())
    app.declined.add("o1")

    await app.mediator.send(PlaceOrder(order_id="o1"))

    saga = await app.manager.store.find("order-remote:o1")
    assert saga is not None
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.compensated_steps == ["pay", "reserve"]
    assert await app.ledger("o1") == ["place", "reserve", "pay", "refund", "release"]
    assert await app.reservations() == {}


async def test_a_stored_deadline_is_fired_by_a_new_worker_and_compensates(
    backend: Backend,
) -> None:
    clock = Clock()
    app = order_app(backend, awaiting_saga(timedelta(seconds=30)), clock=clock)
    app.silent.add("o1")
    await app.mediator.send(PlaceOrder(order_id="o1"))
    waiting = await app.manager.store.find("order-remote:o1")
    assert waiting is not None
    assert waiting.waiting
    assert waiting.deadline_at == clock.now + timedelta(seconds=30)

    # A restart: a new manager over the same store, nothing kept in memory.
    restarted = order_app(backend, awaiting_saga(timedelta(seconds=30)), clock=clock)
    worker = SagaWorker(restarted.manager)
    assert await worker.run_once() == (0, 0)  # not due yet
    clock.now += timedelta(seconds=31)
    fired, _ = await worker.run_once()

    assert fired == 1
    saga = await restarted.manager.store.find("order-remote:o1")
    assert saga is not None
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.error is not None
    assert "timed out" in saga.error
    assert await restarted.ledger("o1") == ["place", "reserve", "pay", "refund", "release"]


async def test_an_event_after_the_timeout_changes_nothing(backend: Backend) -> None:
    clock = Clock()
    app = order_app(backend, awaiting_saga(timedelta(seconds=1)), clock=clock)
    app.silent.add("o1")
    await app.mediator.send(PlaceOrder(order_id="o1"))
    clock.now += timedelta(seconds=2)
    assert await app.manager.fire_due() == 1
    before = await app.manager.store.find("order-remote:o1")

    await app.manager.handle(PaymentTaken(order_id="o1"))

    assert await app.manager.store.find("order-remote:o1") == before


async def test_a_timeout_whose_step_completed_meanwhile_does_not_fire(backend: Backend) -> None:
    clock = Clock()
    app = order_app(backend, awaiting_saga(timedelta(seconds=1)), clock=clock)
    app.silent.add("o1")
    await app.mediator.send(PlaceOrder(order_id="o1"))
    due_before = await app.manager.store.due(clock.now + timedelta(seconds=2))
    assert len(due_before) == 1

    await app.manager.handle(PaymentTaken(order_id="o1"))
    clock.now += timedelta(seconds=2)

    assert await app.manager.fire_due() == 0
    saga = await app.manager.store.find("order-remote:o1")
    assert saga is not None
    assert saga.status is SagaStatus.COMPLETED
