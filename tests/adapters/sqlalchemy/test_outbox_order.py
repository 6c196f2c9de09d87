"""Outbox claims keep each stream's order; dead letters are kept, listed and requeued.

Run against the in-memory store, SQLite and PostgreSQL (the same rules)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cqrs_ddd_core.adapters.memory import InMemoryOutboxStore, InMemoryUnitOfWork
from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyOutboxStore, SQLAlchemyUnitOfWork
from cqrs_ddd_core.persistence import OutboxMessage, OutboxStatus
from tests.support.backends import sqlite_engine
from tests.support.postgres import empty_pg_engine

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Outbox:
    """A store and a way to commit messages into it."""

    def __init__(self, store: Any, uow_factory: Any) -> None:
        self.store = store
        self.uow_factory = uow_factory
        self.counter = 0

    async def add(self, stream: str | None, count: int = 1) -> list[str]:
        uow = self.uow_factory()
        messages = []
        for _ in range(count):
            self.counter += 1
            messages.append(
                OutboxMessage(
                    message_id=f"m{self.counter:05d}",
                    message_type="Happened",
                    payload={"n": self.counter},
                    created_at=T0,
                    aggregate_type=None if stream is None else "Thing",
                    aggregate_id=stream,
                    aggregate_version=self.counter,
                )
            )
        await self.store.enqueue(messages, uow=uow)
        await uow.commit()
        return [m.message_id for m in messages]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def outbox(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Outbox]:
    if request.param == "memory":
        yield Outbox(InMemoryOutboxStore(), InMemoryUnitOfWork)
    elif request.param == "sqlite":
        async with sqlite_engine(tmp_path) as engine:
            yield Outbox(SQLAlchemyOutboxStore(engine), SQLAlchemyUnitOfWork.factory(engine))
    else:
        url = request.getfixturevalue("postgres_database_url")
        async with empty_pg_engine(url) as engine:
            yield Outbox(SQLAlchemyOutboxStore(engine), SQLAlchemyUnitOfWork.factory(engine))


def ids(messages: list[OutboxMessage]) -> list[str]:
    return [m.message_id for m in messages]


async def test_a_batch_holds_a_streams_messages_in_order_with_their_versions(
    outbox: Outbox,
) -> None:
    a = await outbox.add("a", 3)
    b = await outbox.add("b", 2)
    claimed = await outbox.store.claim_batch(10, now=T0)
    assert ids(claimed) == a + b
    assert [m.aggregate_version for m in claimed] == [1, 2, 3, 4, 5]


async def test_a_message_is_not_claimed_while_an_earlier_one_of_its_stream_is_held(
    outbox: Outbox,
) -> None:
    first = await outbox.add("a")
    held = await outbox.store.claim_batch(1, now=T0)  # another relay holds a1
    assert ids(held) == first
    later = await outbox.add("a", 2)
    other = await outbox.add("b")
    claimed = await outbox.store.claim_batch(10, now=T0)
    assert ids(claimed) == other  # a2, a3 wait behind a1
    await outbox.store.mark_published(first, at=T0)
    assert ids(await outbox.store.claim_batch(10, now=T0)) == later


async def test_a_stream_waits_behind_a_failed_message_until_it_is_published(
    outbox: Outbox,
) -> None:
    first, *rest = await outbox.add("a", 3)
    await outbox.store.claim_batch(10, now=T0)
    await outbox.store.mark_failed(first, "boom", next_attempt_at=T0 + timedelta(seconds=5))
    await outbox.store.release(rest)
    assert await outbox.store.claim_batch(10, now=T0) == []
    retry = await outbox.store.claim_batch(10, now=T0 + timedelta(seconds=6))
    assert ids(retry)[0] == first
    await outbox.store.mark_published([first], at=T0)
    await outbox.store.release(ids(retry)[1:])
    assert ids(await outbox.store.claim_batch(10, now=T0 + timedelta(seconds=6))) == rest


async def test_a_dead_letter_is_kept_listed_blocks_its_stream_and_is_requeued(
    outbox: Outbox,
) -> None:
    first, second = await outbox.add("a", 2)
    other = await outbox.add("b")
    await outbox.store.claim_batch(1, now=T0)
    await outbox.store.mark_dead(first, "PublishError: nack")
    await outbox.store.release([second])
    dead = await outbox.store.dead_letters()
    assert ids(dead) == [first]
    assert dead[0].status is OutboxStatus.DEAD
    assert dead[0].last_error == "PublishError: nack"
    assert dead[0].attempts == 1
    assert ids(await outbox.store.claim_batch(10, now=T0)) == other  # a2 waits behind a1
    assert await outbox.store.requeue(["not-a-dead-letter"]) == 0
    assert await outbox.store.requeue() == 1
    assert await outbox.store.dead_letters() == []
    requeued = await outbox.store.claim_batch(10, now=T0)
    assert ids(requeued) == [first, second]
    assert requeued[0].attempts == 0


async def test_the_oldest_unpublished_message_dates_the_lag(outbox: Outbox) -> None:
    assert await outbox.store.oldest_unpublished_at() is None
    (first,) = await outbox.add("a")
    assert await outbox.store.oldest_unpublished_at() == T0
    await outbox.store.mark_published([first], at=T0)
    assert await outbox.store.oldest_unpublished_at() is None


async def test_a_commit_in_this_process_calls_the_commit_listeners(outbox: Outbox) -> None:
    woken: list[int] = []
    remove = outbox.store.add_commit_listener(lambda: woken.append(1))
    await outbox.add("a", 2)
    assert woken == [1]  # once per commit, not per message
    remove()
    await outbox.add("a")
    assert woken == [1]


async def test_concurrent_claimers_publish_each_message_once_and_each_stream_in_order(
    outbox: Outbox,
) -> None:
    streams = [f"s{i}" for i in range(8)]
    expected: dict[str, list[str]] = {s: [] for s in streams}
    rng = random.Random(7)
    for _ in range(60):
        stream = rng.choice(streams)
        expected[stream] += await outbox.add(stream, rng.randint(1, 3))
    total = sum(len(v) for v in expected.values())
    published: list[str] = []
    by_stream: dict[str, list[str]] = {s: [] for s in streams}

    async def relay() -> None:
        idle = 0
        while len(published) < total and idle < 200:
            batch = await outbox.store.claim_batch(rng.randint(1, 7), now=T0)
            idle = 0 if batch else idle + 1
            for message in batch:
                published.append(message.message_id)
                by_stream[message.aggregate_id].append(message.message_id)
                await asyncio.sleep(0)  # let the other relays claim meanwhile
            await outbox.store.mark_published(ids(batch), at=T0)

    async with asyncio.timeout(60):
        await asyncio.gather(*(relay() for _ in range(4)))
    assert sorted(published) == sorted(m for v in expected.values() for m in v)  # each once
    assert by_stream == expected  # each stream in order


async def test_marking_and_claiming_in_one_transaction_frees_the_streams_next_message(
    outbox: Outbox,
) -> None:
    store = outbox.store
    if not hasattr(store, "mark_published_and_claim"):
        pytest.skip("the in-memory store marks and claims separately")
    first = await outbox.add("a")
    await store.claim_batch(1, now=T0)  # a1 is being published
    later = await outbox.add("a", 2)
    claimed = await store.mark_published_and_claim(first, 10, at=T0, now=T0)
    assert ids(claimed) == later  # the claim saw a1 marked in its own transaction
    marked = await store.get(first[0])
    assert marked is not None
    assert marked.status == OutboxStatus.PUBLISHED
    assert marked.published_at == T0


async def test_a_message_confirmed_after_its_claim_expired_is_marked_not_claimed_again(
    outbox: Outbox,
) -> None:
    store = outbox.store
    if not hasattr(store, "mark_published_and_claim"):
        pytest.skip("the in-memory store marks and claims separately")
    first = await outbox.add("a")
    await store.claim_batch(1, now=T0)
    later = T0 + store.claim_timeout * 2  # its claim expired: it is due again
    claimed = await store.mark_published_and_claim(first, 10, at=later, now=later)
    assert claimed == []
    marked = await store.get(first[0])
    assert marked is not None
    assert marked.status == OutboxStatus.PUBLISHED
    assert await store.claim_batch(10, now=later) == []


@pytest.mark.postgres
async def test_on_postgresql_a_claim_leaves_its_sessions_commit_setting_as_it_was(
    postgres_database_url: str,
) -> None:
    """The claim commits without waiting for the disk (``synchronous_commit`` off
    for its own transaction): the commits that follow on its connection, a
    command's, are durable as before."""
    async with empty_pg_engine(postgres_database_url, pool_size=1) as engine:
        store = SQLAlchemyOutboxStore(engine)
        async with engine.connect() as conn:  # the test cluster's default is off
            await conn.exec_driver_sql("SET synchronous_commit = on")
            await conn.commit()
        assert await store.mark_published_and_claim([], 1, at=T0, now=T0) == []
        assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]  # one connection
        async with engine.connect() as conn:
            setting = (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar_one()
        assert setting == "on"


async def test_a_failed_claim_leaves_the_marks_undone(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = outbox.store
    if not hasattr(store, "mark_published_and_claim"):
        pytest.skip("the in-memory store marks and claims separately")
    import importlib

    from sqlalchemy.exc import OperationalError

    from cqrs_ddd_core.exceptions import PersistenceError

    sql_outbox = importlib.import_module("cqrs_ddd_core.adapters.sqlalchemy.outbox")

    first = await outbox.add("a")
    await store.claim_batch(1, now=T0)
    await outbox.add("b")  # due: the claim has a row to take
    if store.engine.dialect.name == "postgresql":
        # One statement marks and claims: the server refuses its claim part (a
        # trigger on the claim's update), after the mark part ran in it.
        async with store.engine.begin() as conn:
            await conn.exec_driver_sql(
                "CREATE FUNCTION refuse_claim() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'the claim is refused'; END $$"
            )
            await conn.exec_driver_sql(
                "CREATE TRIGGER refuse_claim BEFORE UPDATE ON outbox FOR EACH ROW "
                "WHEN (NEW.status = 'pending' AND NEW.next_attempt_at IS NOT NULL) "
                "EXECUTE FUNCTION refuse_claim()"
            )
    else:

        async def failing(*_: Any, **__: Any) -> list[Any]:
            raise OperationalError("SELECT", {}, RuntimeError("the server went away"))

        monkeypatch.setattr(sql_outbox, "claim", failing)
    try:
        with pytest.raises(PersistenceError):
            await store.mark_published_and_claim(first, 10, at=T0, now=T0)
    finally:
        if store.engine.dialect.name == "postgresql":
            async with store.engine.begin() as conn:
                await conn.exec_driver_sql("DROP TRIGGER refuse_claim ON outbox")
                await conn.exec_driver_sql("DROP FUNCTION refuse_claim()")
    kept = await store.get(first[0])
    assert kept is not None
    assert kept.status == OutboxStatus.PENDING  # rolled back with the claim


async def test_the_unpublished_rows_have_a_partial_index_of_their_own(outbox: Outbox) -> None:
    store = outbox.store
    if not isinstance(store, SQLAlchemyOutboxStore):
        pytest.skip("a SQL index")
    from sqlalchemy import inspect

    async with store.engine.connect() as conn:
        indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("outbox"))
        if conn.dialect.name == "postgresql":
            rows = await conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_outbox_unpublished'"
            )
        else:
            rows = await conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_outbox_unpublished'"
            )
        definition = rows.scalar_one()
    assert ["id"] in [ix["column_names"] for ix in indexes]
    for status in ("pending", "failed", "dead"):
        assert f"'{status}'" in definition
    assert "published'" not in definition.replace("'pending'", "")


async def test_on_postgresql_claims_and_marks_of_any_size_run_the_same_statements(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = outbox.store
    if not isinstance(store, SQLAlchemyOutboxStore) or store.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL binds lists as one array")
    seen: list[set[str]] = []
    with _statements(store, monkeypatch) as captured:
        previous: list[str] = []
        for size in (1, 3, 2):
            for n in range(size):
                await outbox.add(f"s{size}-{n}")  # one stream each: the look-back runs
            captured.clear()
            claimed = await store.mark_published_and_claim(previous, 10, at=T0, now=T0)
            seen.append({statement for statement, _ in captured})
            assert len(claimed) == size
            previous = ids(claimed)
    # Marking 1 then 3 messages, claiming 3 then 2: the same statement's text (one
    # prepared statement), the statuses written in it (the partial indexes apply).
    assert seen[1] == seen[2]
    (statement,) = seen[1]  # one statement: the mark, the take, the look-back, the lag
    assert "IN ('pending', 'failed')" in statement
    assert "IN ('pending', 'failed', 'dead')" in statement
    assert "IN ('failed', 'dead')" in statement
    assert "unnest(" in statement  # the ids being marked: one array parameter


@pytest.mark.postgres
async def test_on_postgresql_the_claims_cached_plan_finds_the_messages_to_mark_by_index(
    postgres_database_url: str,
) -> None:
    """The relay's claim runs with one cached generic plan, made while the table may
    be small (a new outbox) and kept while it grows. Its mark must find the
    messages through indexes: by ``message_id = ANY(<ids>)`` that plan read the
    whole table (a sequential scan, every row compared with every id) at every
    claim."""
    from cqrs_ddd_core.adapters.sqlalchemy.outbox import _PG_COLUMNS
    from cqrs_ddd_core.adapters.sqlalchemy.outbox_claim import claim_pg

    async with empty_pg_engine(postgres_database_url, pool_size=1) as engine:
        outbox = Outbox(SQLAlchemyOutboxStore(engine), SQLAlchemyUnitOfWork.factory(engine))
        for n in range(40):  # as a benchmark's new outbox: 400 rows published, analysed
            await outbox.add(f"s{n}", 10)
        await outbox.store.mark_published([f"m{n:05d}" for n in range(1, 401)], at=T0)
        async with engine.begin() as conn:
            await conn.exec_driver_sql("ANALYZE outbox")
        sql, args = claim_pg(_PG_COLUMNS, 200).sql(
            "postgresql",
            {
                "published": ["m00001", "m00002"],
                "published_at": T0,
                "now": T0,
                "hidden_until": T0,
                "measure": False,
                "measure_if_empty": True,
            },
        )
        async with engine.connect() as conn:
            driver: Any = (await conn.get_raw_connection()).driver_connection
            await driver.execute("SET plan_cache_mode = force_generic_plan")
            try:
                (plan,) = await driver.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
            finally:
                await driver.execute("RESET plan_cache_mode")
    marked = next(p for p in _nodes(plan["Plan"]) if p.get("Subplan Name") == "CTE marked")
    scans = [(p["Node Type"], p.get("Relation Name")) for p in _nodes(marked)]
    assert ("Seq Scan", "outbox") not in scans, scans


async def test_on_postgresql_the_claim_is_planned_anew_each_time_the_ids_double(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan made on a small outbox is not kept for ever (see the one above): the
    claim's text, and so its prepared statement, changes as the ids pass 2**10,
    2**11, ...; between two such steps it stays the same (one plan)."""
    store = outbox.store
    if not isinstance(store, SQLAlchemyOutboxStore) or store.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's cached plans")
    texts: list[str] = []
    with _statements(store, monkeypatch) as captured:
        for count in (1, 1, 1100, 1):
            await outbox.add(None, count)
            captured.clear()
            await store.claim_batch(2000, now=T0)
            (statement,) = {sql for sql, _ in captured}
            texts.append(statement)
    assert texts[0] == texts[1] == texts[2]  # claimed up to id 1,102 with the first plan
    assert texts[3] != texts[2]  # then the ids passed 1,024


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


@contextlib.contextmanager
def _statements(
    store: SQLAlchemyOutboxStore, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[tuple[str, Any]]]:
    """The statements ``store`` sends meanwhile, with their parameters: through
    SQLAlchemy, and on PostgreSQL's fast path (``reads.fetch``: the driver's own)."""
    from sqlalchemy import event

    sql_outbox = importlib.import_module("cqrs_ddd_core.adapters.sqlalchemy.outbox")
    captured: list[tuple[str, Any]] = []
    fetch = sql_outbox.fetch

    async def fetching(engine: Any, query: Any, **values: Any) -> list[Any]:
        captured.append(query.sql(engine.dialect.name, values))
        return await fetch(engine, query, **values)

    def record(*args: Any) -> None:
        captured.append((args[2], args[3]))  # (conn, cursor, statement, parameters, ...)

    monkeypatch.setattr(sql_outbox, "fetch", fetching)
    event.listen(store.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield captured
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", record)
        monkeypatch.setattr(sql_outbox, "fetch", fetch)


async def _plans(
    store: SQLAlchemyOutboxStore, run: Any, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """The query plans of the statements that ``run()`` executes (EXPLAIN of each, in a
    connection of its own; on PostgreSQL with sequential scans priced out, so that the
    plan shows which index the query *can* use on a table of any size)."""
    with _statements(store, monkeypatch) as captured:
        await run()
    postgres = store.engine.dialect.name == "postgresql"
    plans = []
    async with store.engine.connect() as conn:
        if postgres:
            await conn.exec_driver_sql("SET enable_seqscan = off")
        for statement, parameters in captured:
            if not statement.lstrip().upper().startswith(("SELECT", "UPDATE", "WITH")):
                continue
            explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
            rows = await conn.exec_driver_sql(explain + statement, tuple(parameters))
            plans.append("\n".join(" ".join(str(v) for v in row) for row in rows))
        await conn.rollback()
    return plans


async def test_a_pending_message_is_in_one_partial_index_and_dead_letters_use_the_other(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing a pending message (one per event, the hot path) adds one entry to one
    partial index; the full ``(status, next_attempt_at)`` index of 0.1.0 is gone, and
    failed messages and dead letters are found through ``ix_outbox_stuck`` (a few rows)."""
    store = outbox.store
    if not isinstance(store, SQLAlchemyOutboxStore):
        pytest.skip("a SQL index")
    from sqlalchemy import inspect

    async with store.engine.connect() as conn:
        indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("outbox"))
    by_name = {ix["name"]: ix["column_names"] for ix in indexes}
    assert by_name["ix_outbox_stuck"] == ["status", "aggregate_type", "aggregate_id", "id"]
    assert by_name["ix_outbox_unpublished"] == ["id"]
    assert ["status", "next_attempt_at"] not in by_name.values()

    (dead,) = await outbox.add("s1")
    await outbox.add("s1")
    await store.mark_dead(dead, "boom")
    # Dead letters are listed and requeued through a partial index (PostgreSQL may take
    # either: both hold them), never by walking the published history.
    for run in (store.dead_letters, store.requeue):
        (plan,) = await _plans(store, run, monkeypatch)
        assert "ix_outbox_stuck" in plan or "ix_outbox_unpublished" in plan, plan
        assert "pk_outbox" not in plan, plan
        assert "SCAN outbox\n" not in plan + "\n", plan
    # A claim's look for a failed or dead message earlier in a stream goes through a
    # partial index too: on SQLite ix_outbox_stuck; PostgreSQL, on so small a table,
    # may prefer ix_outbox_unpublished (which holds them as well).
    await store.mark_dead(dead, "boom")
    plans = await _plans(
        store, lambda: store.mark_published_and_claim([], 10, at=T0, now=T0), monkeypatch
    )
    lookups = [
        line
        for plan in plans
        for line in plan.splitlines()
        if " stuck " in line + " " and ("Scan" in line or "SEARCH" in line or "SCAN" in line)
    ]
    assert lookups, plans
    wanted = ("ix_outbox_stuck",) if store.engine.dialect.name == "sqlite" else ("ix_outbox_",)
    assert all(any(name in line for name in wanted) for line in lookups), lookups
