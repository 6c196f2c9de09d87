"""The saga worker runs pass after pass until stopped, and survives a failing pass."""

from __future__ import annotations

import asyncio

import pytest

from cqrs_ddd_advanced_core.sagas import SagaWorker
from tests.support.backends import memory_backend
from tests.support.orders import order_app, sync_saga


def test_a_worker_needs_a_positive_interval_and_batch() -> None:
    app = order_app(memory_backend(), sync_saga())

    with pytest.raises(ValueError, match="positive"):
        SagaWorker(app.manager, interval=0)
    with pytest.raises(ValueError, match="positive"):
        SagaWorker(app.manager, batch=0)


async def test_the_worker_keeps_passing_after_a_failed_pass_and_stops_when_told() -> None:
    app = order_app(memory_backend(), sync_saga())
    worker = SagaWorker(app.manager, interval=0.01)
    stop = asyncio.Event()
    passes: list[str] = []
    real_fire_due = app.manager.fire_due

    async def fire_due(*, limit: int = 100) -> int:
        if not passes:
            passes.append("failed")
            raise RuntimeError("the database blinked")
        passes.append("ok")
        if len(passes) == 3:
            stop.set()
        return await real_fire_due(limit=limit)

    app.manager.fire_due = fire_due  # type: ignore[method-assign]

    await asyncio.wait_for(worker.run(stop), timeout=30)

    assert passes == ["failed", "ok", "ok"]
