"""The in-memory state repository: staged saves with an optimistic lock on the version."""

from __future__ import annotations

import pytest

from cqrs_ddd_core.adapters.memory import InMemoryStateRepository, InMemoryUnitOfWork
from cqrs_ddd_core.exceptions import ConcurrencyError, RecordNotFoundError
from tests.core.shop import Order


async def save(repository: InMemoryStateRepository[Order], order: Order) -> None:
    uow = InMemoryUnitOfWork()
    repository.save(order, uow=uow)
    await uow.commit()


async def test_a_saved_aggregate_is_found_at_its_version_after_commit() -> None:
    repository = InMemoryStateRepository(Order)
    await save(repository, Order.place("o-1", 4))

    loaded = await repository.get("o-1")

    assert (loaded.amount, loaded.version, loaded.original_version) == (4, 1, 1)
    assert loaded.pending_events == ()


async def test_a_rollback_discards_the_saved_state() -> None:
    repository = InMemoryStateRepository(Order)
    uow = InMemoryUnitOfWork()
    repository.save(Order.place("o-1", 4), uow=uow)

    await uow.rollback()

    assert await repository.find("o-1") is None
    with pytest.raises(RecordNotFoundError) as raised:
        await repository.get("o-1")
    assert (raised.value.kind, raised.value.key) == ("Order", "o-1")


async def test_saving_a_stale_copy_raises_concurrency_error_and_keeps_the_newer_state() -> None:
    repository = InMemoryStateRepository(Order)
    await save(repository, Order.place("o-1", 4))
    first, second = await repository.get("o-1"), await repository.get("o-1")
    first.pay()
    await save(repository, first)
    second.pay()

    with pytest.raises(ConcurrencyError) as raised:
        await save(repository, second)

    error = raised.value
    assert (error.stream, error.expected_version, error.actual_version) == ("Order:o-1", 1, 2)
    assert (await repository.get("o-1")).version == 2


async def test_creating_an_aggregate_whose_id_exists_is_a_conflict() -> None:
    repository = InMemoryStateRepository(Order)
    await save(repository, Order.place("o-1", 4))

    with pytest.raises(ConcurrencyError) as raised:
        await save(repository, Order.place("o-1", 9))

    assert (raised.value.expected_version, raised.value.actual_version) == (0, 1)
    assert (await repository.get("o-1")).amount == 4
