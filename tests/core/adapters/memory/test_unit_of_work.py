"""The in-memory unit of work is genuinely transactional across every store."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cqrs_ddd_core.adapters.memory import InMemoryUnitOfWork
from cqrs_ddd_core.domain import utc_now
from cqrs_ddd_core.exceptions import ConcurrencyError, PersistenceError, UnitOfWorkError
from cqrs_ddd_core.persistence import OutboxMessage
from tests.core.shop import Order, OrderPlaced, Stores


async def stage_everything(stores: Stores, uow: InMemoryUnitOfWork, order: Order) -> None:
    await stores.events.append("Order", order.id, order.pending_events, expected_version=0, uow=uow)
    stores.orders.save(order, uow=uow)
    await stores.outbox.enqueue(
        [
            OutboxMessage(e.event_id, e.type_name(), e.payload(), utc_now())
            for e in order.pending_events
        ],
        uow=uow,
    )


async def test_a_writer_failing_at_commit_leaves_every_store_untouched(stores: Stores) -> None:
    # Already committed: an outbox message whose id the next transaction reuses.
    order = Order.place("o-1", 3)
    first = InMemoryUnitOfWork()
    await stores.outbox.enqueue(
        [OutboxMessage(order.pending_events[0].event_id, "OrderPlaced", {}, utc_now())],
        uow=first,
    )
    await first.commit()

    uow = InMemoryUnitOfWork()
    await stage_everything(stores, uow, order)  # events, state, then the clashing message

    with pytest.raises(PersistenceError, match="already exists"):
        await uow.commit()

    # The events and the state were checked first and passed, yet nothing was applied.
    assert await stores.events.latest_position() == 0
    assert await stores.orders.find("o-1") is None
    assert len(stores.outbox) == 1
    assert [(t.collection, t.error_type) for t in uow.timings] == [
        ("events", None),
        ("aggregate_state", None),
        ("outbox", "cqrs_ddd_core.exceptions.PersistenceError"),
        (None, None),  # ROLLBACK
    ]
    assert uow.timings[-1].operation == "ROLLBACK"


async def test_a_commit_records_one_timing_per_writer_and_one_for_commit(stores: Stores) -> None:
    uow = InMemoryUnitOfWork()
    await stage_everything(stores, uow, Order.place("o-1", 3))

    await uow.commit()

    assert [(t.operation, t.collection, t.system, t.rows) for t in uow.timings] == [
        ("INSERT", "events", "memory", 1),
        ("UPSERT", "aggregate_state", "memory", 1),
        ("INSERT", "outbox", "memory", 1),
        ("COMMIT", None, "memory", 0),
    ]
    assert all(t.start_ns <= t.end_ns for t in uow.timings)


# -- property: any sequence of commits, rollbacks and conflicts keeps streams gap-free ----

_step = st.tuples(
    st.sampled_from(["a", "b", "c"]),  # which stream
    st.integers(min_value=1, max_value=3),  # how many events
    st.sampled_from(["commit", "rollback", "stale"]),  # how the transaction ends
)


@settings(max_examples=150)
@given(steps=st.lists(st.lists(_step, min_size=1, max_size=3), max_size=12))
def test_streams_keep_versions_one_to_n_whatever_commits_rolls_back_or_conflicts(
    steps: list[list[tuple[str, int, str]]],
) -> None:
    asyncio.run(_run_transactions(steps))


async def _run_transactions(transactions: list[list[tuple[str, int, str]]]) -> None:
    stores = Stores()
    expected: dict[str, list[str]] = {"a": [], "b": [], "c": []}  # committed event ids

    for appends in transactions:
        uow = InMemoryUnitOfWork()
        staged: dict[str, list[str]] = {}
        commits = all(ending == "commit" for _, _, ending in appends)
        conflicts = any(ending == "stale" for _, _, ending in appends)
        for stream, count, ending in appends:
            events = [OrderPlaced(amount=i) for i in range(count)]
            head = len(expected[stream]) + len(staged.get(stream, []))
            # A stale writer expects a version that was never, or no longer, the head.
            version = head + 1 if ending == "stale" else head
            await stores.events.append(stream, "s", events, expected_version=version, uow=uow)
            staged.setdefault(stream, []).extend(e.event_id for e in events)

        if conflicts:
            with pytest.raises(ConcurrencyError):
                await uow.commit()
        elif commits:
            await uow.commit()
            for stream, ids in staged.items():
                expected[stream].extend(ids)
        else:
            await uow.rollback()

        # Each stream holds exactly what committed, numbered 1..n with no gap...
        for stream, ids in expected.items():
            stored = await stores.events.load_stream(stream, "s")
            assert [e.event_id for e in stored] == ids
            assert [e.version for e in stored] == list(range(1, len(ids) + 1))
        # ...and positions number all of them 1..N in commit order.
        everything = await stores.events.read_all(limit=10_000)
        assert [e.position for e in everything] == list(range(1, len(everything) + 1))
        assert len(everything) == sum(len(ids) for ids in expected.values())


async def test_a_commit_with_nothing_staged_ends_like_any_commit_and_measures_nothing() -> None:
    ran: list[str] = []

    async def hook(name: str) -> None:
        ran.append(name)

    quiet = InMemoryUnitOfWork()
    quiet.after_rollback(lambda: hook("rolled back"))
    quiet.open_slot()  # a slot left empty (a nested command that staged nothing)
    await quiet.commit()
    assert (quiet.is_open, quiet.committed, quiet.timings) == (False, [], [])
    await quiet.rollback()  # after a commit: nothing to undo, no rollback hook
    assert ran == []
    with pytest.raises(UnitOfWorkError, match="already committed"):
        await quiet.commit()

    hooked = InMemoryUnitOfWork()
    hooked.after_commit(lambda: hook("committed"))
    await hooked.commit()
    assert ran == ["committed"]
    assert hooked.timings == []
