"""The event store contract, for every adapter (see conftest: memory, sqlite, postgresql)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cqrs_ddd_core.exceptions import ConcurrencyError, SerializationError, UnitOfWorkError
from cqrs_ddd_core.persistence import DEFAULT_PAGE_SIZE
from tests.support.accounts import Anything, Deposited, Opened
from tests.support.backends import Backend


async def append_and_commit(
    backend: Backend, aggregate_id: str, events: list, expected_version: int
) -> None:
    uow = backend.uow_factory()
    await backend.event_store.append(
        "Account", aggregate_id, events, expected_version=expected_version, uow=uow
    )
    await uow.commit()


async def test_appended_events_form_a_stream_with_versions_from_one(backend: Backend) -> None:
    occurred = datetime(2024, 5, 17, 12, 30, 1, 123456, tzinfo=UTC)
    events = [
        Opened(owner="ann", occurred_at=occurred, correlation_id="corr", causation_id="cause"),
        Deposited(amount=5, metadata={"actor": "ann", "n": [1, 2]}),
    ]
    await append_and_commit(backend, "a1", events, 0)

    stream = await backend.event_store.load_stream("Account", "a1")

    assert [e.version for e in stream] == [1, 2]
    assert [e.event_id for e in stream] == [e.event_id for e in events]
    assert [e.event_type for e in stream] == ["Opened", "Deposited"]
    assert stream[0].payload == {"owner": "ann"}
    assert stream[1].payload == {"amount": 5, "note": ""}
    assert stream[1].metadata == {"actor": "ann", "n": [1, 2]}
    assert stream[0].occurred_at == occurred
    assert stream[0].occurred_at.tzinfo is not None
    assert (stream[0].correlation_id, stream[0].causation_id) == ("corr", "cause")
    assert stream[0].schema_version == 1
    assert stream[0].stream == "Account:a1"


async def test_nothing_is_visible_before_commit_and_nothing_after_rollback(
    backend: Backend,
) -> None:
    uow = backend.uow_factory()
    await backend.event_store.append(
        "Account", "a1", [Opened(owner="ann")], expected_version=0, uow=uow
    )
    assert await backend.event_store.load_stream("Account", "a1") == []
    await uow.rollback()

    assert await backend.event_store.load_stream("Account", "a1") == []
    assert await backend.event_store.latest_position() == 0


async def test_a_stale_expected_version_raises_a_concurrency_error_naming_the_stream(
    backend: Backend,
) -> None:
    await append_and_commit(backend, "a1", [Opened(owner="ann"), Deposited(amount=1)], 0)

    with pytest.raises(ConcurrencyError) as caught:
        await append_and_commit(backend, "a1", [Deposited(amount=2)], 1)

    assert caught.value.stream == "Account:a1"
    assert (caught.value.expected_version, caught.value.actual_version) == (1, 2)
    assert [e.version for e in await backend.event_store.load_stream("Account", "a1")] == [1, 2]


async def test_an_expected_version_beyond_the_head_raises_too(backend: Backend) -> None:
    await append_and_commit(backend, "a1", [Opened(owner="ann")], 0)

    with pytest.raises(ConcurrencyError) as caught:
        await append_and_commit(backend, "a1", [Deposited(amount=2)], 3)

    assert (caught.value.expected_version, caught.value.actual_version) == (3, 1)


async def test_a_conflict_on_one_stream_writes_nothing_of_the_others(backend: Backend) -> None:
    await append_and_commit(backend, "a1", [Opened(owner="ann")], 0)
    uow = backend.uow_factory()
    await backend.event_store.append(
        "Account", "b2", [Opened(owner="bob")], expected_version=0, uow=uow
    )
    await backend.event_store.append(
        "Account", "a1", [Deposited(amount=1)], expected_version=0, uow=uow
    )

    with pytest.raises(ConcurrencyError):
        await uow.commit()

    assert await backend.event_store.load_stream("Account", "b2") == []
    assert await backend.event_store.latest_position() == 1


async def test_two_appends_to_one_stream_in_one_unit_of_work_must_follow_on(
    backend: Backend,
) -> None:
    uow = backend.uow_factory()
    await backend.event_store.append(
        "Account", "a1", [Opened(owner="ann")], expected_version=0, uow=uow
    )
    await backend.event_store.append(
        "Account", "a1", [Deposited(amount=1)], expected_version=1, uow=uow
    )
    await uow.commit()
    assert [e.version for e in await backend.event_store.load_stream("Account", "a1")] == [1, 2]

    uow = backend.uow_factory()
    await backend.event_store.append(
        "Account", "a1", [Deposited(amount=2)], expected_version=2, uow=uow
    )
    await backend.event_store.append(
        "Account", "a1", [Deposited(amount=3)], expected_version=2, uow=uow
    )
    with pytest.raises(ConcurrencyError):
        await uow.commit()
    assert len(await backend.event_store.load_stream("Account", "a1")) == 2


async def test_load_stream_from_a_version(backend: Backend) -> None:
    await append_and_commit(
        backend, "a1", [Opened(owner="ann"), Deposited(amount=1), Deposited(amount=2)], 0
    )

    tail = await backend.event_store.load_stream("Account", "a1", from_version=2)

    assert [e.version for e in tail] == [2, 3]
    assert await backend.event_store.load_stream("Account", "missing") == []


async def test_read_all_orders_every_event_by_position_in_the_order_staged(
    backend: Backend,
) -> None:
    uow = backend.uow_factory()
    await backend.event_store.append(
        "Account", "b", [Opened(owner="b"), Deposited(amount=1)], expected_version=0, uow=uow
    )
    await backend.event_store.append(
        "Account", "a", [Opened(owner="a")], expected_version=0, uow=uow
    )
    await uow.commit()
    await append_and_commit(backend, "c", [Opened(owner="c")], 0)

    everything = await backend.event_store.read_all()

    assert [(e.aggregate_id, e.version) for e in everything] == [
        ("b", 1),
        ("b", 2),
        ("a", 1),
        ("c", 1),
    ]
    positions = [e.position for e in everything]
    assert positions == sorted(set(positions))
    assert await backend.event_store.latest_position() == positions[-1]
    page = await backend.event_store.read_all(after_position=positions[0], limit=2)
    assert [e.position for e in page] == positions[1:3]
    assert await backend.event_store.read_all(after_position=positions[-1]) == []


async def test_three_appends_to_one_stream_in_one_unit_of_work_advance_its_head_by_their_sizes(
    backend: Backend,
) -> None:
    uow = backend.uow_factory()
    for expected in (0, 2, 4):  # each append carries two events
        await backend.event_store.append(
            "Account",
            "a",
            [Deposited(amount=expected), Deposited(amount=expected + 1)],
            expected_version=expected,
            uow=uow,
        )
    await uow.commit()

    assert [e.version for e in await backend.event_store.load_stream("Account", "a")] == [
        1, 2, 3, 4, 5, 6,
    ]  # fmt: skip


async def test_an_append_behind_the_head_left_by_the_same_unit_of_work_is_refused(
    backend: Backend,
) -> None:
    uow = backend.uow_factory()
    for expected in (0, 2):
        await backend.event_store.append(
            "Account", "a", [Deposited(amount=1), Deposited(amount=2)], expected_version=expected,
            uow=uow,
        )  # fmt: skip
    # The head is 4 now, not 3: an append expecting 3 clashes.
    await backend.event_store.append(
        "Account", "a", [Deposited(amount=3)], expected_version=3, uow=uow
    )

    with pytest.raises(ConcurrencyError) as caught:
        await uow.commit()

    assert (caught.value.expected_version, caught.value.actual_version) == (3, 4)
    assert await backend.event_store.load_stream("Account", "a") == []


async def test_read_all_reads_everything_past_one_page(backend: Backend) -> None:
    count = DEFAULT_PAGE_SIZE + 3
    await append_and_commit(backend, "a", [Deposited(amount=i) for i in range(count)], 0)

    everything = await backend.event_store.read_all()
    iterated = [e.version async for e in backend.event_store.read_all()]

    assert [e.version for e in everything] == list(range(1, count + 1))
    assert iterated == list(range(1, count + 1))


async def test_read_all_in_small_pages_and_with_an_explicit_limit(backend: Backend) -> None:
    await append_and_commit(backend, "a", [Deposited(amount=i) for i in range(7)], 0)
    store = backend.event_store

    seen = [e.version async for e in store.read_all(page_size=3)]
    limited = await store.read_all(limit=5, page_size=2)
    tail = await store.read_all(after_position=limited[-1].position)
    first_page = await store.read_page(after_position=0, limit=2)

    assert seen == [1, 2, 3, 4, 5, 6, 7]
    assert [e.version for e in limited] == [1, 2, 3, 4, 5]
    assert [e.version for e in tail] == [6, 7]
    assert [e.version for e in first_page] == [1, 2]
    assert await store.read_all(limit=0) == []
    with pytest.raises(ValueError, match="page_size"):
        store.read_all(page_size=0)


async def test_latest_position_of_an_empty_store_is_zero(backend: Backend) -> None:
    assert await backend.event_store.latest_position() == 0
    assert await backend.event_store.read_all() == []


async def test_appending_outside_a_unit_of_work_is_refused(backend: Backend) -> None:
    with pytest.raises(UnitOfWorkError):
        await backend.event_store.append("Account", "a1", [Opened(owner="a")], expected_version=0)


async def test_an_unserialisable_payload_fails_at_append_and_stages_nothing(
    backend: Backend,
) -> None:
    uow = backend.uow_factory()
    with pytest.raises(SerializationError):
        await backend.event_store.append(
            "Account",
            "a1",
            [Opened(owner="a"), Anything(value=object())],
            expected_version=0,
            uow=uow,
        )
    await uow.commit()

    assert await backend.total_rows() == 0
