"""SQLite: idempotent commits by event id.

A unit of work sent again with the same event ids is recognised at its first
clash: all stored -> it was committed before, nothing is written again and
commit returns; some stored -> ConcurrencyError naming the stream. In a
group commit each unit of work decides for itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyUnitOfWork,
)
from cqrs_ddd_core.exceptions import (
    ConcurrencyError,
)
from tests.support.accounts import Deposited
from tests.support.backends import sqlite_engine
from tests.support.commits import commit_new, open_the_writer
from tests.support.sqlite_faults import (
    OpenAccount,
    count_rows,
)

MODES = ["NORMAL", "FULL"]  # inline on the loop, and on the writer's thread


@pytest.fixture(params=MODES)
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with sqlite_engine(tmp_path, request.param) as engine:
        yield engine


def path_of(engine: AsyncEngine) -> Path:
    return Path(str(engine.url.database))


# -- idempotent commits by event id --------------------------------------------------


async def test_a_unit_of_work_sent_again_is_committed_once(db: AsyncEngine) -> None:
    await open_the_writer(db)
    account = OpenAccount("a2")
    await account.commit(db)

    ran: list[str] = []
    uow = SQLAlchemyUnitOfWork(db)

    async def after_commit() -> None:
        ran.append("commit")

    uow.after_commit(after_commit)
    await account.stage(db, uow)
    await uow.commit()  # returns normally: it was committed before

    assert ran == ["commit"]
    assert count_rows(path_of(db), "a2") == (1, 1, 1)


async def test_an_append_to_an_existing_stream_sent_again_is_committed_once(
    db: AsyncEngine,
) -> None:
    """The stream's head moved past the expected version: its own events did it."""
    await open_the_writer(db)  # a1 at version 1
    deposit = Deposited(amount=5)

    async def send() -> None:
        uow = SQLAlchemyUnitOfWork(db)
        await SQLAlchemyEventStore(db).append(
            "Account", "a1", [deposit], expected_version=1, uow=uow
        )
        await uow.commit()

    await send()
    await send()

    events = await SQLAlchemyEventStore(db).load_stream("Account", "a1")
    assert [e.version for e in events] == [1, 2]


async def test_a_unit_of_work_whose_events_are_partly_stored_is_a_conflict(
    db: AsyncEngine,
) -> None:
    await open_the_writer(db)
    first, second = Deposited(amount=1), Deposited(amount=2)
    uow = SQLAlchemyUnitOfWork(db)
    await SQLAlchemyEventStore(db).append("Account", "a1", [first], expected_version=1, uow=uow)
    await uow.commit()

    uow = SQLAlchemyUnitOfWork(db)
    await SQLAlchemyEventStore(db).append(
        "Account", "a1", [first, second], expected_version=1, uow=uow
    )
    with pytest.raises(ConcurrencyError) as caught:
        await uow.commit()

    assert caught.value.stream == "Account:a1"
    assert caught.value.actual_version == 2
    assert len(await SQLAlchemyEventStore(db).load_stream("Account", "a1")) == 2


async def test_a_unit_of_work_without_events_cannot_be_recognised(db: AsyncEngine) -> None:
    await open_the_writer(db)
    account = OpenAccount("a2")
    from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyStateRepository
    from tests.support.accounts import Account

    for expected_error in (None, ConcurrencyError):
        uow = SQLAlchemyUnitOfWork(db)
        SQLAlchemyStateRepository(Account, db).save(account.account, uow=uow)
        if expected_error is None:
            await uow.commit()
        else:
            with pytest.raises(expected_error):
                await uow.commit()


async def test_in_a_group_each_unit_of_work_sent_again_decides_for_itself(
    tmp_path: Path,
) -> None:
    from tests.adapters.sqlalchemy.test_sqlite_group_commit import grouped_outcomes

    async with sqlite_engine(tmp_path, "FULL") as engine:
        await open_the_writer(engine)
        again, fresh = OpenAccount("again"), OpenAccount("fresh")
        await again.commit(engine)

        outcomes = await grouped_outcomes(
            engine, [again.commit(engine), fresh.commit(engine), commit_new(engine, "a1")]
        )

        assert not isinstance(outcomes[0], BaseException)  # committed before: fine
        assert not isinstance(outcomes[1], BaseException)
        assert isinstance(outcomes[2], ConcurrencyError)  # a1 exists: a real conflict
        path = Path(str(engine.url.database))
        assert count_rows(path, "again") == (1, 1, 1)
        assert count_rows(path, "fresh") == (1, 1, 1)


async def test_the_same_unit_of_work_twice_in_one_group_is_committed_once(
    tmp_path: Path,
) -> None:
    """A retry racing the original: both in one group, the second meets the first's
    rows in the shared transaction and writes nothing; both report committed."""
    from tests.adapters.sqlalchemy.test_sqlite_group_commit import grouped_outcomes

    async with sqlite_engine(tmp_path, "FULL") as engine:
        await open_the_writer(engine)
        twice = OpenAccount("twice")

        outcomes = await grouped_outcomes(engine, [twice.commit(engine), twice.commit(engine)])

        assert not any(isinstance(o, BaseException) for o in outcomes)
        assert count_rows(Path(str(engine.url.database)), "twice") == (1, 1, 1)
