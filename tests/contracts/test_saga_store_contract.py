"""The saga store contract, for every adapter (see conftest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cqrs_ddd_advanced_core.sagas import SagaState, SagaStatus, SagaStore
from cqrs_ddd_core.exceptions import ConcurrencyError, UnitOfWorkError
from tests.support.accounts import Account
from tests.support.backends import Backend
from tests.support.orders import saga_store

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def state(saga_id: str, **fields: object) -> SagaState:
    values: dict[str, object] = {
        "saga_id": saga_id,
        "saga_type": "order",
        "key": saga_id,
        "version": 1,
        "created_at": T0,
    }
    values.update(fields)
    return SagaState.model_validate(values)


async def save(backend: Backend, saga: SagaState, expected: int = 0) -> None:
    uow = backend.uow_factory()
    saga_store(backend).save(saga, expected_version=expected, uow=uow)
    await uow.commit()


async def test_the_store_implements_the_port(backend: Backend) -> None:
    assert isinstance(saga_store(backend), SagaStore)


async def test_a_saved_saga_loads_with_every_field(backend: Backend) -> None:
    saga = state(
        "o1",
        status=SagaStatus.COMPENSATING,
        step=1,
        waiting=True,
        data={"order_id": "o1", "note": "Zoë \"the\" 'buyer' \u0000"},
        started_steps=["reserve", "pay"],
        completed_steps=["reserve"],
        compensated_steps=["pay"],
        processed_event_ids=["e1", "e2"],
        deadline_at=T0 + timedelta(seconds=5),
        error="step 'pay' refused",
        correlation_id="c1",
    )
    await save(backend, saga)

    loaded = await saga_store(backend).find("o1")

    assert loaded == saga


async def test_a_missing_saga_is_none(backend: Backend) -> None:
    assert await saga_store(backend).find("missing") is None


async def test_a_saga_saves_at_the_version_it_was_loaded_at(backend: Backend) -> None:
    await save(backend, state("o1"))
    loaded = await saga_store(backend).find("o1")
    assert loaded is not None
    moved = loaded.model_copy(update={"step": 1, "version": 2})

    await save(backend, moved, expected=1)

    found = await saga_store(backend).find("o1")
    assert found is not None
    assert (found.step, found.version) == (1, 2)


async def test_a_stale_save_is_refused_and_takes_the_whole_unit_of_work_with_it(
    backend: Backend,
) -> None:
    await save(backend, state("o1"))
    await save(backend, state("o1", step=1, version=2), expected=1)
    uow = backend.uow_factory()
    backend.repository(Account).save(Account.open("a1", "ann"), uow=uow)
    saga_store(backend).save(state("o1", step=9, version=2), expected_version=1, uow=uow)

    with pytest.raises(ConcurrencyError) as caught:
        await uow.commit()

    assert caught.value.stream == "cqrs.saga:o1"
    assert await backend.repository(Account).find("a1") is None
    found = await saga_store(backend).find("o1")
    assert found is not None
    assert found.step == 1


async def test_starting_a_saga_that_exists_is_refused(backend: Backend) -> None:
    await save(backend, state("o1"))

    with pytest.raises(ConcurrencyError):
        await save(backend, state("o1", step=5))

    found = await saga_store(backend).find("o1")
    assert found is not None
    assert found.step == 0


async def test_two_saves_of_one_saga_in_one_unit_of_work_must_follow_on(backend: Backend) -> None:
    uow = backend.uow_factory()
    store = saga_store(backend)
    store.save(state("o1"), expected_version=0, uow=uow)
    store.save(state("o1", step=1, version=2), expected_version=1, uow=uow)
    await uow.commit()
    found = await store.find("o1")
    assert found is not None
    assert (found.step, found.version) == (1, 2)

    uow = backend.uow_factory()
    store.save(state("o1", step=2, version=3), expected_version=2, uow=uow)
    store.save(state("o1", step=3, version=5), expected_version=4, uow=uow)
    with pytest.raises(ConcurrencyError):
        await uow.commit()
    found = await store.find("o1")
    assert found is not None
    assert found.version == 2


async def test_a_save_needs_a_unit_of_work(backend: Backend) -> None:
    with pytest.raises(UnitOfWorkError):
        saga_store(backend).save(state("o1"), expected_version=0)


async def test_listing_filters_by_type_and_status_oldest_first(backend: Backend) -> None:
    await save(backend, state("b", created_at=T0 + timedelta(seconds=2)))
    await save(backend, state("a", created_at=T0 + timedelta(seconds=1)))
    await save(backend, state("c", status=SagaStatus.COMPLETED))
    await save(backend, state("d", saga_type="refund"))
    store = saga_store(backend)

    running = await store.list_sagas(saga_type="order", statuses=[SagaStatus.RUNNING])
    every = await store.list_sagas()
    first = await store.list_sagas(limit=1)

    assert [s.saga_id for s in running] == ["a", "b"]
    assert sorted(s.saga_id for s in every) == ["a", "b", "c", "d"]
    assert len(first) == 1


async def test_due_lists_open_waiting_sagas_whose_deadline_passed(backend: Backend) -> None:
    await save(backend, state("late", waiting=True, deadline_at=T0))
    await save(backend, state("later", waiting=True, deadline_at=T0 - timedelta(seconds=1)))
    await save(backend, state("future", waiting=True, deadline_at=T0 + timedelta(seconds=1)))
    await save(backend, state("done", status=SagaStatus.COMPLETED, deadline_at=T0))
    await save(backend, state("not-waiting", deadline_at=T0))

    due = await saga_store(backend).due(T0)

    assert [s.saga_id for s in due] == ["later", "late"]
