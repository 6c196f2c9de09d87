"""PostgreSQL wake-ups sent after the commit, outside the writing transaction.

Listeners in other connections wake after a commit; a refused commit sends
nothing; a commit never waits for another transaction's notification (the
turn PostgreSQL gives notifying transactions, held here by a transaction
stuck in its commit); one round in flight per engine; a failed or stuck
notification never fails nor delays a commit; disposing the engine leaves no
task behind.

How the notification turn is held: with ``synchronous_standby_names`` naming
a standby that never comes, a session with ``synchronous_commit = on`` that
has sent a ``NOTIFY`` waits for that standby inside its commit, after taking
the turn and before giving it back. Sessions of the test cluster commit with
``synchronous_commit = off`` (its server setting), so nothing else waits.

The tests but one drop the triggers that a database of the development
versions may carry (the statements the changelog gives), so that they check
the adapter, not the schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cqrs_ddd_core.adapters.sqlalchemy import (
    EVENTS_CHANNEL,
    OutboxListener,
    create_engine,
    create_tables,
)
from cqrs_ddd_core.adapters.sqlalchemy.tables import OUTBOX_NOTIFY_CHANNEL
from cqrs_ddd_core.exceptions import ConcurrencyError
from tests.support.commits import commit_deposit, commit_new
from tests.support.postgres import empty_pg_engine, require_postgres

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[3]
TASK_NAME = "cqrs-postgres-notify"
DROP_TRIGGERS = (
    "DROP TRIGGER IF EXISTS events_notify ON events",
    "DROP FUNCTION IF EXISTS cqrs_events_notify()",
    "DROP TRIGGER IF EXISTS cqrs_outbox_notify ON outbox",
    "DROP FUNCTION IF EXISTS cqrs_outbox_notify()",
)
BOUND = 10.0  # every wait of these tests
_ids = itertools.count()


def new_id() -> str:
    return f"n-{next(_ids)}-{time.monotonic_ns()}"


@pytest.fixture
async def engine(postgres_database_url: str) -> AsyncIterator[AsyncEngine]:
    async with empty_pg_engine(postgres_database_url) as made:
        async with made.begin() as conn:
            for statement in DROP_TRIGGERS:
                await conn.execute(text(statement))
        yield made


@pytest.fixture
async def fresh_url(postgres_database_url: str) -> AsyncIterator[str]:
    """A database of its own on the same server, its tables made by ``create_tables``."""
    name = f"cqrs_notify_{uuid.uuid4().hex[:12]}"
    admin = await asyncio.wait_for(asyncpg.connect(postgres_database_url), BOUND)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = make_url(postgres_database_url).set(database=name).render_as_string(False)
        try:
            made = create_engine(url)
            try:
                await create_tables(made)
            finally:
                await made.dispose()
            yield url
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


class Heard:
    """Notifications received on a connection of its own, per channel."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {EVENTS_CHANNEL: [], OUTBOX_NOTIFY_CHANNEL: []}
        self.senders: list[int] = []  # the server process that sent each notification
        self.changed = asyncio.Event()

    def __call__(self, _conn: Any, pid: int, channel: str, _payload: str) -> None:
        self.times[channel].append(time.monotonic())
        self.senders.append(pid)
        self.changed.set()

    def count(self, channel: str = EVENTS_CHANNEL) -> int:
        return len(self.times[channel])

    async def until(self, check: Callable[[], bool]) -> None:
        async with asyncio.timeout(BOUND):
            while not check():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def heard(postgres_database_url: str) -> AsyncIterator[Heard]:
    conn = await asyncpg.connect(postgres_database_url)
    found = Heard()
    try:
        for channel in found.times:
            await conn.add_listener(channel, found)
        yield found
    finally:
        await conn.close()


async def until(check: Callable[[], Any], what: str) -> Any:
    """Poll ``check`` until it returns something true (bounded)."""
    try:
        async with asyncio.timeout(BOUND):
            while not (found := await check()):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            return found
    except TimeoutError:
        raise AssertionError(f"not within {BOUND} s: {what}") from None


async def settled(check: Callable[[], bool], what: str) -> None:
    """Wait until ``check()`` holds (bounded)."""

    async def holds() -> bool:
        return check()

    await until(holds, what)


@contextlib.asynccontextmanager
async def standby_wanted(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A synchronous standby that never comes is wanted until the block ends: a
    commit that wrote WAL, with ``synchronous_commit = on``, waits for it inside
    its commit. Yields a superuser connection."""
    admin = await asyncio.wait_for(asyncpg.connect(url), BOUND)
    try:
        superuser = await admin.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = user")
        if not superuser:
            require_postgres("wanting a standby needs a superuser (ALTER SYSTEM)")
        await admin.execute("CREATE TABLE IF NOT EXISTS cqrs_test_blocker (n int)")
        await admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'cqrs_test_nobody'")
        try:
            await admin.execute("SELECT pg_reload_conf()")
            yield admin
        finally:
            await admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
            await admin.execute("SELECT pg_reload_conf()")
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def notify_turn_held(url: str) -> AsyncIterator[int]:
    """Another session holds PostgreSQL's notification turn until the block ends
    (it is stuck in its commit, waiting for a synchronous standby); yields its pid."""
    async with standby_wanted(url) as admin:
        blocker = await asyncio.wait_for(
            asyncpg.connect(url, server_settings={"synchronous_commit": "on"}), BOUND
        )
        try:

            async def seen() -> bool:
                setting = await blocker.fetchval("SHOW synchronous_standby_names")
                return bool(setting == "cqrs_test_nobody")

            await until(seen, "the reloaded configuration")
            pid = blocker.get_server_pid()
            # It writes WAL: a transaction that wrote none commits without
            # waiting for a flush, or for a standby.
            stuck = asyncio.ensure_future(
                blocker.execute(
                    "BEGIN; INSERT INTO cqrs_test_blocker VALUES (1); "
                    "SELECT pg_notify('cqrs_test_blocker', ''); COMMIT"
                )
            )

            async def waiting() -> bool:
                event = await admin.fetchval(
                    "SELECT wait_event FROM pg_stat_activity WHERE pid = $1", pid
                )
                return bool(event == "SyncRep")

            try:
                await until(waiting, "the blocker waiting for its standby")
                yield pid
            finally:
                await admin.fetchval("SELECT pg_cancel_backend($1)", pid)  # commits locally
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(stuck, BOUND)
        finally:
            await asyncio.wait_for(blocker.close(), BOUND)


async def notify_backends(engine: AsyncEngine) -> list[int]:
    """Sessions of ``engine``'s database waiting for the notification turn to notify."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE 'NOTIFY \"cqrs_%'"
            )
        )
        return [row[0] for row in rows]


def pending_notify_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == TASK_NAME and not t.done()]


async def backend_alive(url: str, pid: int) -> bool:
    """Whether server process ``pid`` is still connected."""
    conn = await asyncio.wait_for(asyncpg.connect(url), BOUND)
    try:
        found = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
        return bool(found)
    finally:
        await conn.close()


async def gone(url: str, pid: int) -> None:
    """Wait until server process ``pid`` has gone (bounded)."""

    async def ended() -> bool:
        return not await backend_alive(url, pid)

    await until(ended, f"backend {pid} gone")


async def rounds_heard(engine: AsyncEngine, heard: Heard, n: int) -> None:
    """Ask ``engine``'s notifier for ``n`` rounds, one after the other, each heard."""
    from cqrs_ddd_core.adapters.sqlalchemy.postgres_notify import notifier_for

    notifier = notifier_for(engine)
    for _ in range(n):
        want = heard.count() + 1
        notifier.committed(engine, events=True, outbox=False)
        await heard.until(lambda want=want: heard.count() == want)
        await settled(lambda: not notifier.busy, "the round done")


# -- what the schema holds -----------------------------------------------------


async def test_the_tables_the_library_creates_carry_no_notify_trigger(fresh_url: str) -> None:
    conn = await asyncpg.connect(fresh_url)
    try:
        names = await conn.fetch(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
            "AND tgrelid IN ('events'::regclass, 'outbox'::regclass)"
        )
    finally:
        await conn.close()
    assert names == []


# -- wake-ups --------------------------------------------------------------------


async def test_listeners_in_other_connections_wake_after_a_commit(
    engine: AsyncEngine, heard: Heard
) -> None:
    woken = asyncio.Event()
    relay = OutboxListener(engine)  # what relays listen with
    await relay.start(woken.set)
    try:
        account = new_id()
        await commit_new(engine, account)  # an event and an outbox row

        async with asyncio.timeout(BOUND):
            await woken.wait()
        await heard.until(lambda: heard.count(EVENTS_CHANNEL) >= 1)
        await heard.until(lambda: heard.count(OUTBOX_NOTIFY_CHANNEL) >= 1)
        async with engine.connect() as conn:  # what a woken reader finds
            found = await conn.execute(
                text("SELECT count(*) FROM events WHERE aggregate_id = :a"), {"a": account}
            )
            assert found.scalar_one() == 1
    finally:
        await relay.stop()


async def test_a_refused_commit_sends_no_notification(engine: AsyncEngine, heard: Heard) -> None:
    from cqrs_ddd_core.adapters.sqlalchemy.postgres_notify import notifier_for

    account = new_id()
    await commit_new(engine, account)
    await heard.until(lambda: heard.count() == 1)
    notifier = notifier_for(engine)
    await settled(lambda: not notifier.busy, "the first round done")

    with pytest.raises(ConcurrencyError):
        await commit_deposit(engine, account, expected=0)  # the stream is at 1

    assert not notifier.busy  # no round started for it
    assert pending_notify_tasks() == []
    await commit_deposit(engine, account, expected=1)
    await heard.until(lambda: heard.count() == 2)  # only the committed ones
    await settled(lambda: not notifier.busy, "the second round done")
    assert heard.count() == 2
    assert notifier.rounds == 2


# -- nothing serialises the writers ------------------------------------------------


async def test_a_commit_does_not_wait_for_another_transactions_notification(
    fresh_url: str,
) -> None:
    """On the schema as ``create_tables`` makes it (no trigger dropped)."""
    heard = Heard()
    listening = await asyncpg.connect(fresh_url)
    engine = create_engine(fresh_url)
    try:
        await listening.add_listener(EVENTS_CHANNEL, heard)
        async with notify_turn_held(fresh_url):
            async with asyncio.timeout(BOUND):  # with a NOTIFY inside, it would wait its turn
                for _ in range(3):
                    await commit_new(engine, new_id())
            assert await until(lambda: notify_backends(engine), "the notification waiting")
            assert heard.count() == 0  # the notification waits; the commits did not
        await heard.until(lambda: heard.count() >= 1)  # it comes once the turn is free
    finally:
        await listening.close()
        await engine.dispose()


async def test_one_round_in_flight_per_engine_and_one_more_after_it(
    engine: AsyncEngine, heard: Heard, postgres_database_url: str
) -> None:
    from cqrs_ddd_core.adapters.sqlalchemy.postgres_notify import notifier_for

    notifier = notifier_for(engine)
    async with notify_turn_held(postgres_database_url):
        async with asyncio.timeout(BOUND):
            for _ in range(20):
                await commit_new(engine, new_id())
        assert len(await until(lambda: notify_backends(engine), "a round waiting")) == 1
        await asyncio.sleep(0.2)
        assert len(await notify_backends(engine)) == 1  # never a second one at once
    await settled(lambda: not notifier.busy, "the rounds done")
    assert notifier.rounds == 2  # the one in flight, then one for the 19 commits after it
    assert notifier.failures == 0
    assert heard.count() == 2


async def test_a_stream_of_commits_sends_at_most_one_round_per_interval(
    engine: AsyncEngine, heard: Heard
) -> None:
    from cqrs_ddd_core.adapters.sqlalchemy.postgres_notify import ROUND_INTERVAL, notifier_for

    notifier = notifier_for(engine)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(40):
        await commit_new(engine, new_id())
    await settled(lambda: not notifier.busy, "the rounds done")
    elapsed = loop.time() - start
    assert notifier.failures == 0
    assert 1 <= notifier.rounds <= elapsed / ROUND_INTERVAL + 1
    # Each round is heard, the last one after the last commit (none is lost).
    await heard.until(lambda: heard.count() == notifier.rounds)


# -- the kept connection ------------------------------------------------------------


async def test_rounds_send_on_one_kept_connection_without_a_pool_checkout(
    engine: AsyncEngine, heard: Heard
) -> None:
    from cqrs_ddd_core.adapters.sqlalchemy.postgres_notify import notifier_for

    checkouts = [0]

    def checked_out(*_: object) -> None:
        checkouts[0] += 1

    await rounds_heard(engine, heard, 1)  # opens it
    event.listen(engine.sync_engine, "checkout", checked_out)
    try:
        await rounds_heard(engine, heard, 5)
    finally:
        event.remove(engine.sync_engine, "checkout", checked_out)
    assert checkouts[0] == 0
    assert len(set(heard.senders)) == 1  # one server process sent them all
    assert notifier_for(engine).rounds == 6


async def test_the_kept_connection_takes_no_place_in_the_pool(
    postgres_database_url: str, heard: Heard
) -> None:
    url = make_url(postgres_database_url).set(drivername="postgresql+asyncpg")
    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=BOUND / 4)
    try:
        await rounds_heard(engine, heard, 2)
        async with engine.connect() as conn:  # the pool's one connection is free
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
            await rounds_heard(engine, heard, 1)  # while it is checked out
        assert len(set(heard.senders)) == 1
    finally:
        await engine.dispose()


async def test_disposing_the_engine_closes_the_kept_connection_and_a_new_one_follows(
    postgres_database_url: str, heard: Heard
) -> None:
    engine = create_engine(postgres_database_url)
    try:
        await rounds_heard(engine, heard, 1)
        (first,) = heard.senders
        assert await backend_alive(postgres_database_url, first)
        await asyncio.wait_for(engine.dispose(), BOUND)
        await gone(postgres_database_url, first)
        assert pending_notify_tasks() == []

        await rounds_heard(engine, heard, 1)  # the engine used again: a new connection
        second = heard.senders[-1]
        assert second != first
    finally:
        await engine.dispose()
    await gone(postgres_database_url, second)


async def test_a_synchronous_dispose_closes_the_kept_connection(
    postgres_database_url: str, heard: Heard
) -> None:
    engine = create_engine(postgres_database_url)
    try:
        await rounds_heard(engine, heard, 1)
        (first,) = heard.senders
        engine.sync_engine.dispose()  # in the loop's thread, not in a greenlet: cannot wait
        await gone(postgres_database_url, first)
        assert pending_notify_tasks() == []
    finally:
        await engine.dispose()


async def test_a_kept_connection_ended_between_rounds_is_replaced(
    engine: AsyncEngine, heard: Heard, postgres_database_url: str
) -> None:
    from cqrs_ddd_core.adapters.sqlalchemy.postgres_notify import notifier_for

    await rounds_heard(engine, heard, 1)
    (first,) = heard.senders
    admin = await asyncio.wait_for(asyncpg.connect(postgres_database_url), BOUND)
    try:
        await admin.fetchval("SELECT pg_terminate_backend($1)", first)
    finally:
        await admin.close()
    await gone(postgres_database_url, first)
    notifier = notifier_for(engine)
    for _ in range(3):  # at most one wake-up lost, if its end was not seen yet
        notifier.committed(engine, events=True, outbox=False)
        await settled(lambda: not notifier.busy, "the round done")
    await heard.until(lambda: heard.count() >= 3)
    assert notifier.failures <= 1
    assert first not in heard.senders[1:]


# -- failures and closing ----------------------------------------------------------


async def test_a_killed_notify_connection_neither_fails_nor_delays_commits(
    engine: AsyncEngine, heard: Heard, postgres_database_url: str
) -> None:
    from cqrs_ddd_core.adapters.sqlalchemy.postgres_notify import notifier_for

    notifier = notifier_for(engine)
    async with notify_turn_held(postgres_database_url):
        await commit_new(engine, new_id())
        (pid,) = await until(lambda: notify_backends(engine), "the round waiting")
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        await settled(lambda: notifier.failures == 1, "the round failed")
        async with asyncio.timeout(BOUND):
            await commit_new(engine, new_id())  # goes on; its round waits for the turn
        assert heard.count() == 0
    await heard.until(lambda: heard.count() == 1)  # a fresh connection notified it
    await settled(lambda: not notifier.busy, "the round done")
    assert notifier.failures == 1


async def test_a_stuck_round_times_out_without_touching_the_commits(
    engine: AsyncEngine, postgres_database_url: str
) -> None:
    from cqrs_ddd_core.adapters.sqlalchemy.postgres_notify import notifier_for

    notifier = notifier_for(engine)
    notifier.timeout = 0.5
    async with notify_turn_held(postgres_database_url):
        for _ in range(3):
            async with asyncio.timeout(BOUND):
                await commit_new(engine, new_id())
        await settled(lambda: notifier.failures >= 2, "two rounds timed out")
    assert notifier.rounds + notifier.failures <= 3


async def test_disposing_the_engine_sends_the_last_wake_up_and_leaves_no_task(
    postgres_database_url: str, heard: Heard
) -> None:
    async with empty_pg_engine(postgres_database_url) as engine:
        async with engine.begin() as conn:
            for statement in DROP_TRIGGERS:
                await conn.execute(text(statement))
        await commit_new(engine, new_id())
        # disposed at once, its round maybe still on its way
    assert pending_notify_tasks() == []
    await heard.until(lambda: heard.count() == 1)


async def test_disposing_the_engine_during_a_stuck_round_is_bounded_and_leaves_no_task(
    postgres_database_url: str, heard: Heard
) -> None:
    from cqrs_ddd_core.adapters.sqlalchemy.postgres_notify import notifier_for

    engine = create_engine(postgres_database_url)
    notifier = notifier_for(engine)
    notifier.timeout = 1.0
    async with notify_turn_held(postgres_database_url):
        await commit_new(engine, new_id())
        await until(lambda: notify_backends(engine), "the round waiting")
        started = time.monotonic()
        await asyncio.wait_for(engine.dispose(), BOUND)
        assert time.monotonic() - started < 3 * notifier.timeout
        assert pending_notify_tasks() == []
        assert notifier.failures == 1
    assert await notify_backends(engine) == []
    await engine.dispose()


# -- the upgrade the changelog describes ---------------------------------------------


def changelog_drop_statements() -> list[str]:
    """The SQL statements of docs/changelog.md's upgrade section, in order."""
    changelog = (ROOT / "docs" / "changelog.md").read_text()
    block = changelog.split("```sql\n", 1)[1].split("```", 1)[0]
    return [line.rstrip(";") for line in block.splitlines() if line.strip()]


async def test_the_changelogs_statements_drop_the_old_triggers(fresh_url: str) -> None:
    from cqrs_ddd_core.adapters.sqlalchemy.tables import (
        EVENTS_NOTIFY_DDL,
        NOTIFY_TRIGGERS_DROP_DDL,
        OUTBOX_NOTIFY_DDL,
    )

    statements = changelog_drop_statements()
    assert statements == list(NOTIFY_TRIGGERS_DROP_DDL)
    conn = await asyncpg.connect(fresh_url)
    try:
        for statement in (*EVENTS_NOTIFY_DDL, *OUTBOX_NOTIFY_DDL):  # as a database may have them
            await conn.execute(statement)
        for _ in range(2):  # and again, where there is nothing left to drop
            for statement in statements:
                await conn.execute(statement)
            left = await conn.fetch(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                "AND tgrelid IN ('events'::regclass, 'outbox'::regclass) "
                "UNION ALL SELECT proname FROM pg_proc WHERE proname LIKE 'cqrs_%notify'"
            )
            assert left == []
    finally:
        await conn.close()


async def test_create_engine_sets_the_notify_timeout(postgres_database_url: str) -> None:
    from cqrs_ddd_core.adapters.sqlalchemy.postgres_notify import notifier_for
    from cqrs_ddd_core.exceptions import ConfigurationError

    engine = create_engine(postgres_database_url, postgres_notify_timeout=2.5)
    try:
        assert notifier_for(engine).timeout == 2.5
    finally:
        await engine.dispose()
    with pytest.raises(ConfigurationError, match="postgres_notify_timeout"):
        create_engine(postgres_database_url, postgres_notify_timeout=0)
