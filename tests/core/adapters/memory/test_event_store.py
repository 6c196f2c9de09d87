"""The in-memory event store: streams 1..n, a global position, transactional appends."""

from __future__ import annotations

import pytest

from cqrs_ddd_core.adapters.memory import InMemoryEventStore, InMemoryUnitOfWork
from cqrs_ddd_core.exceptions import ConcurrencyError, UnitOfWorkError
from tests.core.shop import Order, OrderPaid, OrderPlaced


async def append_and_commit(
    store: InMemoryEventStore, order_id: str, count: int, expected_version: int
) -> None:
    uow = InMemoryUnitOfWork()
    events = [OrderPlaced(amount=i) for i in range(count)]
    await store.append("Order", order_id, events, expected_version=expected_version, uow=uow)
    await uow.commit()


async def test_committed_events_form_a_stream_with_versions_from_one() -> None:
    store = InMemoryEventStore()
    order = Order.place("o-1", 5)
    order.pay()

    uow = InMemoryUnitOfWork()
    await store.append("Order", "o-1", order.collect_events(), expected_version=0, uow=uow)
    await uow.commit()

    stream = await store.load_stream("Order", "o-1")
    assert [(e.version, e.position, e.event_type) for e in stream] == [
        (1, 1, "OrderPlaced"),
        (2, 2, "OrderPaid"),
    ]
    assert stream[0].payload == {"amount": 5}
    assert stream[0].stream == "Order:o-1"
    assert [e.version for e in await store.load_stream("Order", "o-1", from_version=2)] == [2]


async def test_positions_order_all_streams_and_read_all_pages_through_them() -> None:
    store = InMemoryEventStore()
    await append_and_commit(store, "o-1", 2, 0)
    await append_and_commit(store, "o-2", 1, 0)
    await append_and_commit(store, "o-1", 1, 2)

    everything = await store.read_all()
    assert [(e.position, e.aggregate_id, e.version) for e in everything] == [
        (1, "o-1", 1),
        (2, "o-1", 2),
        (3, "o-2", 1),
        (4, "o-1", 3),
    ]
    assert [e.position for e in await store.read_all(after_position=1, limit=2)] == [2, 3]
    assert await store.read_all(after_position=4) == []
    assert await store.latest_position() == 4
    assert repr(store) == "InMemoryEventStore(events=4, streams=2)"


async def test_a_rollback_discards_the_staged_events() -> None:
    store = InMemoryEventStore()
    uow = InMemoryUnitOfWork()
    await store.append("Order", "o-1", [OrderPlaced(amount=1)], expected_version=0, uow=uow)

    await uow.rollback()

    assert await store.load_stream("Order", "o-1") == []
    assert await store.latest_position() == 0


async def test_a_stale_expected_version_raises_concurrency_error_naming_stream_and_versions() -> (
    None
):
    store = InMemoryEventStore()
    await append_and_commit(store, "o-1", 2, 0)

    with pytest.raises(ConcurrencyError) as raised:
        await append_and_commit(store, "o-1", 1, 0)

    error = raised.value
    assert (error.stream, error.expected_version, error.actual_version) == ("Order:o-1", 0, 2)
    assert str(error) == "Concurrency conflict on Order:o-1: expected version 0, found 2"
    assert [e.version for e in await store.load_stream("Order", "o-1")] == [1, 2]


async def test_two_appends_to_one_stream_in_one_transaction_chain_their_versions() -> None:
    store = InMemoryEventStore()
    uow = InMemoryUnitOfWork()
    await store.append("Order", "o-1", [OrderPlaced(amount=1)], expected_version=0, uow=uow)
    await store.append("Order", "o-1", [OrderPaid()], expected_version=1, uow=uow)
    await uow.commit()

    assert [e.version for e in await store.load_stream("Order", "o-1")] == [1, 2]


async def test_two_appends_expecting_the_same_version_in_one_transaction_conflict() -> None:
    store = InMemoryEventStore()
    uow = InMemoryUnitOfWork()
    await store.append("Order", "o-1", [OrderPlaced(amount=1)], expected_version=0, uow=uow)
    await store.append("Order", "o-1", [OrderPlaced(amount=2)], expected_version=0, uow=uow)

    with pytest.raises(ConcurrencyError) as raised:
        await uow.commit()

    assert (raised.value.expected_version, raised.value.actual_version) == (0, 1)
    assert await store.latest_position() == 0


async def test_appending_outside_a_transaction_is_refused() -> None:
    with pytest.raises(UnitOfWorkError, match="needs a unit of work"):
        await InMemoryEventStore().append(
            "Order", "o-1", [OrderPlaced(amount=1)], expected_version=0
        )


async def test_appending_no_events_stages_nothing() -> None:
    uow = InMemoryUnitOfWork()

    await InMemoryEventStore().append("Order", "o-1", [], expected_version=3, uow=uow)

    assert not uow.has_staged
