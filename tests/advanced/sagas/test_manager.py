"""A saga runs its steps through the mediator, its state committing with their effects."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from cqrs_ddd_advanced_core.sagas import SagaStatus
from cqrs_ddd_core.exceptions import ConcurrencyError
from tests.support.backends import Backend
from tests.support.orders import OrderPlaced, PlaceOrder, order_app, sync_saga


async def test_a_saga_started_by_an_event_runs_every_step_to_completion(backend: Backend) -> None:
    app = order_app(backend, sync_saga())

    await app.mediator.send(PlaceOrder(order_id="o1"))

    saga = await app.manager.store.find("order:o1")
    assert saga is not None
    assert saga.status is SagaStatus.COMPLETED
    assert saga.completed_steps == ["reserve", "pay", "ship"]
    assert saga.data["receipt"] == "receipt-o1"
    assert await app.ledger("o1") == ["place", "reserve", "pay", "ship"]
    assert await app.reservations() == {"o1": 1}


async def test_a_refused_step_compensates_the_started_steps_in_reverse_once(
    backend: Backend,
) -> None:
    app = order_app(backend, sync_saga())
    app.declined.add("o1")

    await app.mediator.send(PlaceOrder(order_id="o1"))

    saga = await app.manager.store.find("order:o1")
    assert saga is not None
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.started_steps == ["reserve"]
    assert saga.compensated_steps == ["reserve"]
    assert saga.error is not None
    assert "PaymentRefused" in saga.error
    assert await app.ledger("o1") == ["place", "reserve", "release"]
    assert await app.reservations() == {}


async def test_compensations_run_latest_step_first(backend: Backend) -> None:
    app = order_app(backend, sync_saga())
    # ship fails: pay and reserve were started, so refund then release.
    registry = app.mediator.registry

    async def broken_ship(cmd: object) -> None:
        raise RuntimeError("no courier")

    from tests.support.orders import Ship

    registry._commands[Ship] = broken_ship

    await app.mediator.send(PlaceOrder(order_id="o1"))

    saga = await app.manager.store.find("order:o1")
    assert saga is not None
    assert saga.status is SagaStatus.COMPENSATED
    assert saga.compensated_steps == ["pay", "reserve"]
    assert await app.ledger("o1") == ["place", "reserve", "pay", "refund", "release"]


async def test_a_failing_compensation_leaves_the_saga_failed_and_resume_retries_it(
    backend: Backend,
) -> None:
    app = order_app(backend, sync_saga())
    app.declined.add("o1")
    from tests.support.orders import Ship

    async def broken_ship(cmd: object) -> None:
        raise RuntimeError("no courier")

    app.mediator.registry._commands[Ship] = broken_ship
    app.declined.clear()
    app.failing_refunds.add("o1")

    await app.mediator.send(PlaceOrder(order_id="o1"))

    saga = await app.manager.store.find("order:o1")
    assert saga is not None
    assert saga.status is SagaStatus.FAILED
    assert saga.compensated_steps == []
    assert await app.ledger("o1") == ["place", "reserve", "pay"]

    app.failing_refunds.clear()
    resumed = await app.manager.resume("order:o1")

    assert resumed.status is SagaStatus.COMPENSATED
    assert resumed.compensated_steps == ["pay", "reserve"]
    assert await app.ledger("o1") == ["place", "reserve", "pay", "refund", "release"]


async def test_an_event_handled_twice_changes_nothing_the_second_time(backend: Backend) -> None:
    app = order_app(backend, sync_saga())
    event = OrderPlaced(order_id="o1")

    await app.manager.handle(event)
    before = await app.manager.store.find("order:o1")
    await app.manager.handle(event)
    after = await app.manager.store.find("order:o1")

    assert before is not None

    assert after == before
    assert await app.ledger("o1") == ["reserve", "pay", "ship"]


async def test_a_step_whose_saga_moved_meanwhile_is_not_applied(backend: Backend) -> None:
    """Two runners load the saga at one version; only one step commits."""
    app = order_app(backend, sync_saga())
    from cqrs_ddd_advanced_core.sagas import StartSaga

    await app.mediator.send(StartSaga(saga_type="order", event=OrderPlaced(order_id="o1")))
    store = app.manager.store
    stale = await store.find("order:o1")
    assert stale is not None
    real_find = store.find
    calls = 0

    async def find_then_race(saga_id: str) -> object:
        nonlocal calls
        calls += 1
        found = await real_find(saga_id)
        if calls == 1:
            # Another runner commits the same step while this one is loading.
            app.manager._retries = 1
            store.find = real_find
            other = app.manager._send(lambda: _advance("order:o1"))
            # A root dispatch of its own (a fresh context), like another worker's.
            await asyncio.get_running_loop().create_task(other, context=contextvars.Context())
            return stale
        return found

    store.find = find_then_race
    with pytest.raises(ConcurrencyError):
        await app.manager._send(lambda: _advance("order:o1"))

    store.find = real_find
    assert await app.ledger("o1") == ["reserve"]
    saga = await store.find("order:o1")
    assert saga is not None
    assert saga.completed_steps == ["reserve"]


def _advance(saga_id: str) -> object:
    from cqrs_ddd_advanced_core.sagas import AdvanceSaga

    return AdvanceSaga(saga_id=saga_id)


async def test_a_storage_failure_under_a_step_is_retried_later_not_compensated(
    backend: Backend,
) -> None:
    from cqrs_ddd_core.exceptions import PersistenceError
    from tests.support.orders import TakePayment

    app = order_app(backend, sync_saga())
    registry = app.mediator.registry
    take = registry._commands[TakePayment]

    async def database_down(cmd: object) -> None:
        raise PersistenceError("the payments database is unreachable")

    registry._commands[TakePayment] = database_down

    with pytest.raises(PersistenceError):
        await app.manager.handle(OrderPlaced(order_id="o1"))

    saga = await app.manager.store.find("order:o1")
    assert saga is not None
    assert (saga.status, saga.step, saga.started_steps) == (SagaStatus.RUNNING, 1, ["reserve"])

    registry._commands[TakePayment] = take
    assert await app.manager.recover() == 1
    saga = await app.manager.store.find("order:o1")
    assert saga is not None
    assert saga.status is SagaStatus.COMPLETED
    assert await app.ledger("o1") == ["reserve", "pay", "ship"]


async def test_a_missing_record_under_a_step_is_a_refusal(backend: Backend) -> None:
    from cqrs_ddd_core.exceptions import RecordNotFoundError
    from tests.support.orders import TakePayment

    app = order_app(backend, sync_saga())

    async def no_account(cmd: object) -> None:
        raise RecordNotFoundError("Account", "o1")

    app.mediator.registry._commands[TakePayment] = no_account

    await app.manager.handle(OrderPlaced(order_id="o1"))

    saga = await app.manager.store.find("order:o1")
    assert saga is not None
    assert saga.status is SagaStatus.COMPENSATED
