"""Sagas left mid-way (by a crash between two transitions) are carried on by recovery."""

from __future__ import annotations

import contextlib

from cqrs_ddd_advanced_core.sagas import SagaStatus, SagaWorker, StartSaga
from tests.support.backends import Backend
from tests.support.orders import OrderPlaced, PlaceOrder, order_app, sync_saga


async def test_a_started_saga_whose_runner_died_is_run_by_the_worker(backend: Backend) -> None:
    app = order_app(backend, sync_saga())
    # The saga is created; the process dies before any step ran.
    await app.mediator.send(StartSaga(saga_type="order", event=OrderPlaced(order_id="o1")))

    restarted = order_app(backend, sync_saga())
    fired, recovered = await SagaWorker(restarted.manager).run_once()

    assert (fired, recovered) == (0, 1)
    saga = await restarted.manager.store.find("order:o1")
    assert saga is not None
    assert saga.status is SagaStatus.COMPLETED
    assert await restarted.ledger("o1") == ["reserve", "pay", "ship"]


async def test_a_later_pass_leaves_recently_stored_sagas_to_their_runner(
    backend: Backend,
) -> None:
    app = order_app(backend, sync_saga())
    worker = SagaWorker(app.manager)
    await worker.run_once()
    await app.mediator.send(StartSaga(saga_type="order", event=OrderPlaced(order_id="o1")))

    assert await worker.run_once() == (0, 0)
    saga = await app.manager.store.find("order:o1")
    assert saga is not None
    assert saga.step == 0


async def test_a_saga_started_inside_a_command_commits_with_it_and_runs_after(
    backend: Backend,
) -> None:
    app = order_app(backend, sync_saga())
    from tests.support.orders import PlaceOrder as _  # noqa: F401 - the domain is registered

    class Checkout(PlaceOrder):
        pass

    async def checkout(cmd: Checkout) -> str:
        await app.manager.start(OrderPlaced(order_id=cmd.order_id))
        return cmd.order_id

    app.mediator.registry.register_command_handler(Checkout, checkout)

    await app.mediator.send(Checkout(order_id="o1"))
    await app.manager.drain()

    saga = await app.manager.store.find("order:o1")
    assert saga is not None
    assert saga.status is SagaStatus.COMPLETED


async def test_a_saga_started_inside_a_failing_command_does_not_exist(backend: Backend) -> None:
    app = order_app(backend, sync_saga())

    class Checkout(PlaceOrder):
        pass

    async def checkout(cmd: Checkout) -> str:
        await app.manager.start(OrderPlaced(order_id=cmd.order_id))
        raise ValueError("the basket is empty")

    app.mediator.registry.register_command_handler(Checkout, checkout)

    with contextlib.suppress(ValueError):
        await app.mediator.send(Checkout(order_id="o1"))
    await app.manager.drain()

    assert await app.manager.store.find("order:o1") is None
    assert await app.ledger("o1") == []
