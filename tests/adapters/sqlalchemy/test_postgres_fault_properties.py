"""Property: whatever fails at any step of a PostgreSQL commit, the reported outcome
equals what the database holds, nothing is half written, and a retry applies once.

Hypothesis picks the fault (the connection cut before the statement reaches
the server, as it is sent, after the server ran and committed it; the
connection frozen before or after; the caller cancelled once its statement is
on its way; none), grouping on or off, and how many other commands commit at
the same time. Each command stages an event, an outbox row and a state row;
the database is read on a direct connection.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyOutboxStore,
    SQLAlchemyStateRepository,
    SQLAlchemyUnitOfWork,
    create_engine,
)
from cqrs_ddd_core.domain.messages import DomainEvent
from cqrs_ddd_core.exceptions import CommitOutcomeUnknownError, PersistenceError
from cqrs_ddd_core.persistence import OutboxMessage
from tests.support.accounts import Account, Opened
from tests.support.faultproxy import Action, FaultProxy, running_proxy

pytestmark = pytest.mark.postgres

FAULTS: tuple[str, ...] = (
    "none",
    "drop_before",
    "drop_sent",
    "drop_after",
    "freeze_before",
    "freeze_after",
    "cancel_sent",
)
_ids = itertools.count()


@dataclass
class Command:
    """One command's writes: an account opened (event, outbox row, state row)."""

    account_id: str
    event: DomainEvent

    async def commit(self, engine: AsyncEngine) -> None:
        uow = SQLAlchemyUnitOfWork(engine)
        await SQLAlchemyEventStore(engine).append(
            "Account", self.account_id, [self.event], expected_version=0, uow=uow
        )
        await SQLAlchemyOutboxStore(engine).enqueue(
            [OutboxMessage(self.event.event_id, "Opened", {}, self.event.occurred_at)], uow=uow
        )
        account = Account.open(self.account_id, "ann")
        account.collect_events()
        SQLAlchemyStateRepository(Account, engine).save(account, uow=uow)
        await uow.commit()


async def outcome_of(engine: AsyncEngine, command: Command) -> str:
    try:
        await command.commit(engine)
    except CommitOutcomeUnknownError:
        return "unknown"
    except (PersistenceError, asyncio.CancelledError):
        return "refused"
    return "committed"


async def rows_of(direct: AsyncEngine, command: Command) -> tuple[int, int, int]:
    """The command's event, outbox and state rows, in one snapshot."""
    sql = text(
        "SELECT (SELECT count(*) FROM events WHERE event_id = :e), "
        "(SELECT count(*) FROM outbox WHERE message_id = :e), "
        "(SELECT count(*) FROM aggregate_state WHERE aggregate_id = :a)"
    )
    async with direct.connect() as conn:
        row = (
            await conn.execute(sql, {"e": command.event.event_id, "a": command.account_id})
        ).one()
    return row[0], row[1], row[2]


async def run_example(proxy: FaultProxy, url: str, fault: str, batch: int, others: int) -> None:
    engine = create_engine(
        proxy.url(url),
        postgres_commit_batch=batch,
        postgres_connect_timeout=1,
        postgres_commit_timeout=0.6,
        postgres_resolve_timeout=1.5,
    )
    direct = create_engine(url)
    n = next(_ids)
    victim = Command(f"v{n}", Opened(owner="ann"))
    bystanders = [Command(f"o{n}-{i}", Opened(owner="bob")) for i in range(others)]
    try:
        armed = None
        if fault != "none":
            action = "freeze_after" if fault == "cancel_sent" else fault
            armed = proxy.arm(victim.account_id.encode() + b'"', action)  # type: ignore[arg-type]
        victim_task = asyncio.create_task(outcome_of(engine, victim))
        other_tasks = [asyncio.create_task(outcome_of(engine, c)) for c in bystanders]
        if fault == "cancel_sent":
            assert armed is not None
            assert await asyncio.to_thread(armed.fired.wait, 10)
            victim_task.cancel()
        async with asyncio.timeout(20):
            outcomes = await asyncio.gather(victim_task, *other_tasks, return_exceptions=True)
        proxy.thaw()
        reported = ["refused" if isinstance(o, asyncio.CancelledError) else o for o in outcomes]
        if fault == "cancel_sent" and victim_task.cancelled():
            reported[0] = "refused"

        for command, said in zip([victim, *bystanders], reported, strict=True):
            held = await rows_of(direct, command)
            assert held in ((0, 0, 0), (1, 1, 1)), f"half written: {held}"  # never partial
            if said == "committed":
                assert held == (1, 1, 1), f"{fault}: reported committed, holds {held}"
            elif said == "refused":
                assert held == (0, 0, 0), f"{fault}: reported refused, holds {held}"
            else:
                assert said == "unknown", said
            if said != "committed":  # the caller sends the same command again
                assert await outcome_of(engine, command) == "committed"
                assert await rows_of(direct, command) == (1, 1, 1)  # once, never twice
        for command in bystanders:  # a fault on one command never fails another
            assert reported[bystanders.index(command) + 1] in ("committed", "unknown")
    finally:
        proxy.thaw()
        await asyncio.wait_for(engine.dispose(), 10)
        await direct.dispose()


@pytest.mark.timeout(240)
@settings(
    max_examples=24,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    fault=st.sampled_from(FAULTS),
    batch=st.sampled_from((1, 8)),
    others=st.integers(min_value=0, max_value=3),
)
def test_every_fault_reports_what_the_database_holds_and_a_retry_applies_once(
    postgres_database_url: str, fault: str, batch: int, others: int
) -> None:
    with running_proxy(postgres_database_url) as proxy:
        asyncio.run(run_example(proxy, postgres_database_url, fault, batch, others))


def test_the_faults_cover_every_step() -> None:
    actions: set[Action] = {
        "drop_before",
        "drop_sent",
        "drop_after",
        "freeze_before",
        "freeze_after",
    }
    assert actions <= set(FAULTS)
