"""PostgreSQL: one statement per commit, and a lock only around appends of events."""

from __future__ import annotations

import asyncio
import itertools
import re
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import (
    EVENTS_LOCK_KEY,
    SQLAlchemyEventStore,
    SQLAlchemyOutboxStore,
    SQLAlchemyStateRepository,
    SQLAlchemyUnitOfWork,
)
from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
from cqrs_ddd_core.adapters.sqlalchemy.postgres import build_flush
from cqrs_ddd_core.adapters.sqlalchemy.postgres_notify import notifier_for
from cqrs_ddd_core.exceptions import PersistenceError
from cqrs_ddd_core.persistence import OutboxMessage
from cqrs_ddd_core.persistence.serialization import encode_event
from tests.support.accounts import Account, Opened

pytestmark = pytest.mark.postgres

NOW = datetime(2024, 1, 1, tzinfo=UTC)
OUTBOX_ROW = (
    "m1",
    "T",
    "{}",
    None,
    None,
    "pending",
    0,
    None,
    None,
    NOW,
    None,
    None,
    None,
    "{}",
    None,
    None,
)


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement asyncpg sends, whichever method sends it."""
    sent: list[str] = []
    for name in ("fetchval", "fetch", "fetchrow", "execute", "executemany"):
        original = getattr(asyncpg.Connection, name)

        def spy(original: Any = original) -> Any:
            async def method(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
                sent.append(query)
                return await original(self, query, *args, **kwargs)

            return method

        monkeypatch.setattr(asyncpg.Connection, name, spy())
    return sent


async def commit_account(engine: AsyncEngine, account_id: str) -> SQLAlchemyUnitOfWork:
    account = Account.open(account_id, "ann")
    (event,) = account.collect_events()
    uow = SQLAlchemyUnitOfWork(engine)
    await SQLAlchemyEventStore(engine).append(
        "Account", account_id, [event], expected_version=0, uow=uow
    )
    await SQLAlchemyOutboxStore(engine).enqueue(
        [OutboxMessage(event.event_id, "Opened", event.payload(), event.occurred_at)], uow=uow
    )
    SQLAlchemyStateRepository(Account, engine).save(account, uow=uow)
    await uow.commit()
    return uow


async def test_a_commit_is_one_statement_with_no_begin_or_commit_around_it(
    pg_engine: AsyncEngine, statements: list[str]
) -> None:
    notifier = notifier_for(pg_engine)
    # Warm the pool and the notifier's kept connection (taken from the pool:
    # the second commit connects anew).
    for warm in ("a0", "a00"):
        await commit_account(pg_engine, warm)
        async with asyncio.timeout(10):
            while notifier.busy:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    statements.clear()

    uow = await commit_account(pg_engine, "a1")
    async with asyncio.timeout(10):
        while notifier.busy:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    # The commit's one statement, then the wake-up, a statement (and transaction) of its own.
    assert len(statements) == 2
    assert statements[0].startswith("WITH ")
    assert "INSERT INTO events" in statements[0]
    assert "notify" not in statements[0].lower()
    assert statements[1] == 'NOTIFY "cqrs_events"; NOTIFY "cqrs_outbox"'
    assert [(t.operation, t.collection) for t in uow.timings] == [
        ("INSERT", "events"),
        ("INSERT", "outbox"),
        ("INSERT", "aggregate_state"),
        ("COMMIT", None),
    ]
    assert {t.system for t in uow.timings} == {"postgresql"}


def test_every_shape_of_flush_numbers_its_parameters_like_its_arguments() -> None:
    for shape in itertools.product((False, True), repeat=5):
        plan = FlushPlan()
        events, outbox, audit, inserts, updates = shape
        if events:
            plan.add_events(
                "Account", "a1", 0, [encode_event(Opened(owner="a"), "Account", "a1", 1)]
            )
        if outbox:
            plan.outbox.append(OUTBOX_ROW)
        if audit:
            plan.audit.append(("a", "m", "T", "c", None, None, "success", None, NOW, 1.0, "{}"))
        if inserts:
            plan.add_state("Account", "new", 0, 1, "{}")
        if updates:
            plan.add_state("Account", "old", 3, 4, "{}")

        sql, args = build_flush(plan)

        numbers = {int(n) for n in re.findall(r"\$(\d+)::", sql)}
        assert numbers == set(range(1, len(args) + 1)), shape


def test_only_a_flush_with_events_takes_the_lock() -> None:
    event = Opened(owner="a")
    with_events = FlushPlan()
    with_events.add_events("Account", "a1", 0, [encode_event(event, "Account", "a1", 1)])
    without = FlushPlan()
    without.outbox.append(OUTBOX_ROW)
    without.add_state("Account", "a1", 0, 1, "{}")

    sql, args = build_flush(with_events)
    assert "pg_advisory_lock($1::int8)" in sql
    assert "pg_advisory_unlock($1::int8)" in sql
    assert args[0] == EVENTS_LOCK_KEY
    sql, args = build_flush(without)
    assert "pg_advisory" not in sql
    assert sql.count("$") == len(args)


async def test_the_lock_holds_back_appends_only_not_other_writes(pg_engine: AsyncEngine) -> None:
    """While something holds the events lock, state and outbox writes still commit."""
    async with pg_engine.connect() as holder:
        await holder.execute(text(f"SELECT pg_advisory_lock({EVENTS_LOCK_KEY})"))
        try:
            uow = SQLAlchemyUnitOfWork(pg_engine)
            SQLAlchemyStateRepository(Account, pg_engine).save(Account(id="s1"), uow=uow)
            await asyncio.wait_for(uow.commit(), timeout=5)

            append = asyncio.create_task(commit_account(pg_engine, "e1"))
            await asyncio.sleep(0.3)
            assert not append.done()  # waits for the lock
        finally:
            await holder.execute(text(f"SELECT pg_advisory_unlock({EVENTS_LOCK_KEY})"))
            await holder.commit()
    await asyncio.wait_for(append, timeout=5)
    assert len(await SQLAlchemyEventStore(pg_engine).read_all()) == 1


async def test_a_lost_connection_fails_the_commit_and_is_not_reused(
    pg_engine: AsyncEngine, postgres_database_url: str
) -> None:
    await asyncio.gather(*(commit_account(pg_engine, f"a{i}") for i in range(3)))
    url = make_url(postgres_database_url)
    admin = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, database=url.database
    )
    try:  # kill every pooled connection, as a server restart would
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()

    outcomes: list[BaseException | None] = []
    for i in range(8):
        try:
            await commit_account(pg_engine, f"b{i}")
            outcomes.append(None)
        except PersistenceError as exc:
            outcomes.append(exc)

    failures = [o for o in outcomes if o is not None]
    assert all("connection" in str(f).lower() for f in failures)
    assert outcomes[-3:] == [None, None, None]  # the dead connections were dropped


async def test_a_flush_that_fails_while_holding_the_lock_releases_it(
    pg_engine: AsyncEngine,
) -> None:
    event = Opened(owner="a")
    store = SQLAlchemyEventStore(pg_engine)
    uow = SQLAlchemyUnitOfWork(pg_engine)
    await store.append("Account", "a1", [event], expected_version=0, uow=uow)
    await uow.commit()

    uow = SQLAlchemyUnitOfWork(pg_engine)  # the same event id again: fails inside the lock
    await store.append("Account", "a2", [event], expected_version=0, uow=uow)
    with pytest.raises(PersistenceError, match="uq_events_event_id"):
        await uow.commit()

    async with pg_engine.connect() as conn:
        held = await conn.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"))
        assert held.scalar_one() == 0
    await asyncio.wait_for(commit_account(pg_engine, "a3"), timeout=5)
