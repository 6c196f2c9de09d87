"""Projection runners on every adapter: checkpoints that commit with the read model."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from cqrs_ddd_advanced_core.domain import ProjectionError
from cqrs_ddd_advanced_core.projections import Projection, ProjectionRunner
from cqrs_ddd_core.adapters.memory import InMemoryProjectionStore
from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyProjectionStore
from cqrs_ddd_core.exceptions import ConcurrencyError
from cqrs_ddd_core.persistence import StoredEvent
from tests.support.accounts import Deposited, Opened
from tests.support.backends import Backend
from tests.support.projections import (
    create_read_model,
    memory_projection,
    memory_read_model,
    sql_projection,
    sql_read_model,
)


@dataclass
class World:
    backend: Backend
    store: Any
    make_projection: Callable[[str], Projection[Any]]
    read: Callable[[], Awaitable[tuple[dict[str, tuple[int, int]], list[int]]]]

    def runner(self, name: str = "account_totals", **options: Any) -> ProjectionRunner[Any]:
        return ProjectionRunner(
            self.make_projection(name),
            events=self.backend.event_store,
            store=self.store,
            **options,
        )


@pytest.fixture
async def world(backend: Backend) -> World:
    if backend.engine is None:
        store = InMemoryProjectionStore()

        async def read_memory() -> tuple[dict[str, tuple[int, int]], list[int]]:
            return memory_read_model(store)

        return World(backend, store, memory_projection, read_memory)
    engine = backend.engine
    await create_read_model(engine)

    async def read_sql() -> tuple[dict[str, tuple[int, int]], list[int]]:
        return await sql_read_model(engine)

    return World(backend, SQLAlchemyProjectionStore(engine), sql_projection, read_sql)


async def deposit(backend: Backend, account: str, amounts: list[int], version: int) -> None:
    uow = backend.uow_factory()
    events: list[Any] = [] if version else [Opened(owner=account)]
    events += [Deposited(amount=amount) for amount in amounts]
    await backend.event_store.append("Account", account, events, expected_version=version, uow=uow)
    await uow.commit()


async def test_a_runner_applies_every_event_once_in_batches_and_stores_its_checkpoint(
    world: World,
) -> None:
    await deposit(world.backend, "a", [1, 2, 3], 0)
    await deposit(world.backend, "b", [10], 0)
    runner = world.runner(batch_size=2)

    assert await runner.catch_up() == 6
    assert await runner.catch_up() == 0

    totals, positions = await world.read()
    assert totals == {"a": (3, 6), "b": (1, 10)}
    assert positions == [1, 2, 3, 4, 5, 6]
    status = await runner.status()
    assert (status.checkpoint, status.head, status.lag) == (6, 6, 0)


async def test_a_new_runner_resumes_after_the_checkpoint(world: World) -> None:
    await deposit(world.backend, "a", [1], 0)
    await world.runner().catch_up()
    await deposit(world.backend, "a", [5, 5], 2)

    assert await world.runner().catch_up() == 2

    totals, positions = await world.read()
    assert totals == {"a": (3, 11)}
    assert positions == [1, 2, 3, 4]


async def test_a_failing_handler_rolls_its_batch_back_and_keeps_the_checkpoint(
    world: World,
) -> None:
    await deposit(world.backend, "a", [1, 2], 0)
    projection = world.make_projection("account_totals")
    failing = Projection[Any]("account_totals")
    calls = 0

    async def flaky(event: StoredEvent, tx: Any) -> None:
        nonlocal calls
        calls += 1
        if event.version == 3:
            raise RuntimeError("boom")
        await projection.apply(event, tx)

    for event_type in ("Opened", "Deposited"):
        failing.add(event_type, flaky)
    runner = ProjectionRunner(failing, events=world.backend.event_store, store=world.store)

    with pytest.raises(ProjectionError) as caught:
        await runner.run_batch()

    assert (caught.value.projection, caught.value.position) == ("account_totals", 3)
    assert await world.store.checkpoint("account_totals") == 0
    assert await world.read() == ({}, [])
    assert await world.runner().catch_up() == 3
    assert (await world.read())[1] == [1, 2, 3]


async def test_a_runner_that_lost_the_race_rolls_back_instead_of_applying_twice(
    world: World,
) -> None:
    await deposit(world.backend, "a", [1], 0)
    await world.runner().catch_up()  # another runner applied positions 1-2 meanwhile
    committed = await world.read()

    async def advance_from_a_stale_checkpoint() -> None:
        # A runner that read the checkpoint at 0, before the other one committed.
        async with world.store.transaction() as tx:
            await world.store.advance(tx, "account_totals", expected=0, position=5)

    with pytest.raises(ConcurrencyError) as caught:
        await advance_from_a_stale_checkpoint()

    assert (caught.value.expected_version, caught.value.actual_version) == (0, 2)
    assert await world.read() == committed
    assert await world.store.checkpoint("account_totals") == 2


async def test_the_first_checkpoint_of_a_projection_is_created_with_its_first_batch(
    world: World,
) -> None:
    await deposit(world.backend, "a", [1], 0)

    async def advance_a_checkpoint_that_does_not_exist() -> None:
        async with world.store.transaction() as tx:
            await world.store.advance(tx, "account_totals", expected=1, position=2)

    with pytest.raises(ConcurrencyError):
        await advance_a_checkpoint_that_does_not_exist()

    assert await world.store.checkpoints() == {}


async def test_rebuild_clears_the_read_model_and_applies_everything_again(world: World) -> None:
    await deposit(world.backend, "a", [4, 4], 0)
    runner = world.runner()
    await runner.catch_up()
    before = await world.read()

    assert await runner.rebuild() == 3

    assert await world.read() == before
    assert await world.store.checkpoints() == {"account_totals": 3}


async def test_run_follows_new_events_until_stopped(world: World) -> None:
    runner = world.runner(poll_interval=0.05)
    stop = asyncio.Event()
    task = asyncio.ensure_future(runner.run(stop))
    try:
        await deposit(world.backend, "a", [7], 0)
        async with asyncio.timeout(30):
            # A bounded look at the outcome; the runner is not synchronised by it.
            while await world.store.checkpoint("account_totals") < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    assert await world.read() == ({"a": (1, 7)}, [1, 2])
