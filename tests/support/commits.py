"""One command's writes staged on a SQL unit of work, and small helpers around them.

Used by the adapter tests that count hops, statements and groups: "open
account" stages one event, one outbox message and one new state row.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyOutboxStore,
    SQLAlchemyStateRepository,
    SQLAlchemyUnitOfWork,
)
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_thread import WriterThread
from cqrs_ddd_core.persistence import OutboxMessage
from tests.support.accounts import Account, Deposited

__all__ = [
    "commit_deposit",
    "commit_new",
    "count_hops",
    "message_for",
    "open_the_writer",
    "stage_command",
    "stored_ids",
]


def message_for(event: Any, account_id: str) -> OutboxMessage:
    """The outbox message of account ``account_id``'s event."""
    return OutboxMessage(
        event.event_id,
        type(event).__name__,
        event.payload(),
        event.occurred_at,
        aggregate_type="Account",
        aggregate_id=account_id,
    )


async def stage_command(engine: AsyncEngine, uow: SQLAlchemyUnitOfWork, account_id: str) -> None:
    """Stage "open account ``account_id``": its event, outbox message and state row."""
    account = Account.open(account_id, "ann")
    (event,) = account.collect_events()
    await SQLAlchemyEventStore(engine).append(
        "Account", account_id, [event], expected_version=0, uow=uow
    )
    await SQLAlchemyOutboxStore(engine).enqueue([message_for(event, account_id)], uow=uow)
    SQLAlchemyStateRepository(Account, engine).save(account, uow=uow)


async def commit_new(engine: AsyncEngine, account_id: str) -> SQLAlchemyUnitOfWork:
    """Open account ``account_id`` in a unit of work of its own, committed."""
    uow = SQLAlchemyUnitOfWork(engine)
    await stage_command(engine, uow, account_id)
    await uow.commit()
    return uow


async def open_the_writer(engine: AsyncEngine) -> None:
    """Commit account "a1": on SQLite this opens the writer connection, so the
    next commit takes the direct path."""
    await commit_new(engine, "a1")


async def commit_deposit(engine: AsyncEngine, account_id: str, expected: int) -> None:
    """Append one deposit to ``account_id``'s stream at ``expected``, committed."""
    uow = SQLAlchemyUnitOfWork(engine)
    await SQLAlchemyEventStore(engine).append(
        "Account", account_id, [Deposited(amount=1)], expected_version=expected, uow=uow
    )
    await uow.commit()


async def stored_ids(engine: AsyncEngine) -> list[str]:
    """The aggregate id of every stored event, in global order."""
    return [e.aggregate_id for e in await SQLAlchemyEventStore(engine).read_all(limit=10_000)]


def count_hops(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record every job sent to a SQLite writer's or reader's thread (each one hop)."""
    calls: list[Any] = []
    original_submit = WriterThread.submit
    original_hand_over = WriterThread.hand_over

    def counting_submit(self: Any, job: Any, *args: Any) -> Any:
        calls.append(job)
        return original_submit(self, job, *args)

    def counting_hand_over(self: Any, job: Any, *args: Any) -> Any:
        calls.append(job)
        return original_hand_over(self, job, *args)

    monkeypatch.setattr(WriterThread, "submit", counting_submit)
    monkeypatch.setattr(WriterThread, "hand_over", counting_hand_over)
    return calls
