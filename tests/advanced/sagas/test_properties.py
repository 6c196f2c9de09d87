"""Whatever fails where, every saga ends, and exactly its started steps are undone."""

from __future__ import annotations

import asyncio

import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from cqrs_ddd_advanced_core.sagas import SagaStatus
from tests.support.backends import memory_backend
from tests.support.orders import OrderPlaced, Ship, order_app, sync_saga

ORDERS = [f"o{i}" for i in range(6)]
subsets = st.sets(st.sampled_from(ORDERS))


@settings(max_examples=60, deadline=None)
@given(declined=subsets, unshippable=subsets, refunds_fail=subsets, redeliver=subsets)
def test_every_saga_ends_and_only_its_started_steps_are_compensated(
    declined: set[str], unshippable: set[str], refunds_fail: set[str], redeliver: set[str]
) -> None:
    async def scenario() -> None:
        app = order_app(memory_backend(), sync_saga())
        app.declined |= declined
        app.failing_refunds |= refunds_fail
        ship = app.mediator.registry._commands[Ship]

        async def maybe_ship(cmd: Ship) -> None:
            if cmd.order_id in unshippable:
                raise RuntimeError("no courier")
            await ship(cmd)

        app.mediator.registry._commands[Ship] = maybe_ship
        events = {order: OrderPlaced(order_id=order) for order in ORDERS}
        for order in ORDERS:
            await app.manager.handle(events[order])
        for order in sorted(redeliver):
            await app.manager.handle(events[order])

        for order in ORDERS:
            saga = await app.manager.store.find(f"order:{order}")
            assert saga is not None
            ops = await app.ledger(order)
            if order in declined:
                started = ["reserve"]
            elif order in unshippable:
                started = ["reserve", "pay"]
            else:
                assert saga.status is SagaStatus.COMPLETED
                assert ops == ["reserve", "pay", "ship"]
                continue
            assert saga.started_steps == started
            if "pay" in started and order in refunds_fail:
                # The refund failed: nothing after it ran; a person resumes it.
                assert saga.status is SagaStatus.FAILED
                assert ops == started
            else:
                assert saga.status is SagaStatus.COMPENSATED
                assert saga.compensated_steps == started[::-1]
                undo = {"reserve": "release", "pay": "refund"}
                assert ops == started + [undo[s] for s in reversed(started)]

    # Captured, not rendered: a refused command's traceback costs more than the saga.
    with structlog.testing.capture_logs():
        asyncio.run(scenario())
