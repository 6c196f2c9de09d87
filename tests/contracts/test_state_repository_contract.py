"""The state repository contract, for every adapter (see conftest)."""

from __future__ import annotations

import pytest

from cqrs_ddd_core.exceptions import ConcurrencyError, RecordNotFoundError
from tests.support.accounts import Account
from tests.support.backends import Backend


async def save(backend: Backend, account: Account) -> None:
    uow = backend.uow_factory()
    backend.repository(Account).save(account, uow=uow)
    await uow.commit()


async def test_a_saved_aggregate_loads_with_its_state_and_version(backend: Backend) -> None:
    account = Account.open("a1", "Zoë \"the\" 'owner'")
    account.deposit(10)
    await save(backend, account)

    loaded = await backend.repository(Account).get("a1")

    assert loaded.model_dump() == account.model_dump()
    assert (loaded.version, loaded.original_version) == (2, 2)
    assert loaded.pending_events == ()


async def test_a_missing_aggregate_is_none_or_not_found(backend: Backend) -> None:
    repository = backend.repository(Account)

    assert await repository.find("missing") is None
    with pytest.raises(RecordNotFoundError):
        await repository.get("missing")


async def test_a_loaded_aggregate_saves_at_its_new_version(backend: Backend) -> None:
    await save(backend, Account.open("a1", "ann"))
    account = await backend.repository(Account).get("a1")
    account.deposit(5)

    await save(backend, account)

    loaded = await backend.repository(Account).get("a1")
    assert (loaded.version, loaded.balance) == (2, 5)


async def test_a_stale_save_raises_a_concurrency_error(backend: Backend) -> None:
    await save(backend, Account.open("a1", "ann"))
    first = await backend.repository(Account).get("a1")
    second = await backend.repository(Account).get("a1")
    first.deposit(1)
    await save(backend, first)
    second.deposit(2)

    with pytest.raises(ConcurrencyError) as caught:
        await save(backend, second)

    assert caught.value.stream == "Account:a1"
    assert (caught.value.expected_version, caught.value.actual_version) == (1, 2)
    assert (await backend.repository(Account).get("a1")).balance == 1


async def test_a_new_aggregate_whose_id_exists_is_a_conflict(backend: Backend) -> None:
    await save(backend, Account.open("a1", "ann"))

    with pytest.raises(ConcurrencyError) as caught:
        await save(backend, Account.open("a1", "bob"))

    assert (caught.value.expected_version, caught.value.actual_version) == (0, 1)
    assert (await backend.repository(Account).get("a1")).owner == "ann"


async def test_two_saves_of_one_aggregate_in_one_unit_of_work_keep_the_last(
    backend: Backend,
) -> None:
    account = Account.open("a1", "ann")
    repository = backend.repository(Account)
    uow = backend.uow_factory()
    repository.save(account, uow=uow)
    account.mark_persisted()
    account.deposit(3)
    repository.save(account, uow=uow)
    await uow.commit()

    loaded = await repository.get("a1")
    assert (loaded.version, loaded.balance) == (2, 3)


async def test_a_rolled_back_save_leaves_nothing(backend: Backend) -> None:
    uow = backend.uow_factory()
    backend.repository(Account).save(Account.open("a1", "ann"), uow=uow)
    await uow.rollback()

    assert await backend.repository(Account).find("a1") is None
