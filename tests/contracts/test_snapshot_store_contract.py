"""The snapshot store contract and snapshot loads, for every adapter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from cqrs_ddd_advanced_core.domain import EventSourcingConfigurationError
from cqrs_ddd_advanced_core.event_sourcing import (
    EventSourcedAggregate,
    EventSourcedRepository,
    EveryNEvents,
)
from cqrs_ddd_core import DomainEvent
from cqrs_ddd_core.adapters.memory import InMemorySnapshotStore
from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemySnapshotStore
from cqrs_ddd_core.persistence import Snapshot
from tests.support.backends import Backend


class Counted(DomainEvent):
    by: int


class Counter(EventSourcedAggregate):
    total: int = 0
    applied: int = 0

    def count(self, by: int) -> None:
        self.raise_event(Counted(by=by))

    def apply_Counted(self, event: Counted) -> None:
        self.total += event.by
        self.applied += 1


class CounterV2(Counter):
    """The same aggregate after its fields changed."""

    aggregate_type = "Counter"
    snapshot_schema_version: ClassVar[int] = 2


def snapshot_store(backend: Backend) -> Any:
    if backend.engine is None:
        return InMemorySnapshotStore()
    return SQLAlchemySnapshotStore(backend.engine)


def snapshot(version: int, total: int, schema_version: int = 1) -> Snapshot:
    return Snapshot(
        aggregate_type="Counter",
        aggregate_id="c-1",
        version=version,
        schema_version=schema_version,
        state={"id": "c-1", "version": version, "total": total, "applied": 0},
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
    )


async def commit_counts(backend: Backend, counter: Counter, amounts: list[int]) -> None:
    uow = backend.uow_factory()
    expected = counter.original_version
    for amount in amounts:
        counter.count(amount)
    await backend.event_store.append(
        "Counter", counter.id, counter.collect_events(), expected_version=expected, uow=uow
    )
    await uow.commit()
    counter.mark_persisted()


async def test_the_latest_snapshot_is_kept_and_an_older_one_never_replaces_it(
    backend: Backend,
) -> None:
    store = snapshot_store(backend)

    assert await store.latest("Counter", "c-1") is None
    assert await store.save(snapshot(10, 1)) is True
    assert await store.save(snapshot(20, 2)) is True
    assert await store.save(snapshot(15, 3)) is False
    assert await store.save(snapshot(20, 4)) is False

    latest = await store.latest("Counter", "c-1")
    assert latest is not None
    assert (latest.version, latest.state["total"], latest.schema_version) == (20, 2, 1)
    assert latest.created_at == datetime(2024, 1, 1, tzinfo=UTC)

    await store.delete("Counter", "c-1")
    assert await store.latest("Counter", "c-1") is None


async def test_a_load_reads_the_snapshot_and_only_the_events_after_it(backend: Backend) -> None:
    store = snapshot_store(backend)
    counter = Counter.blank("c-1")
    await commit_counts(backend, counter, [1] * 5)
    repository = EventSourcedRepository(
        backend.event_store, Counter, event_types=[Counted], snapshot_store=store
    )
    assert await repository.save_snapshot(await repository.load("c-1"))
    await commit_counts(backend, counter, [10, 10])

    loaded = await repository.load("c-1")

    # ``applied`` counts the events replayed on top of the snapshot's state.
    assert (loaded.version, loaded.total, loaded.applied) == (7, 25, 7)
    replayed = await EventSourcedRepository(
        backend.event_store, Counter, event_types=[Counted]
    ).load("c-1")
    assert (replayed.version, replayed.total) == (loaded.version, loaded.total)


async def test_the_snapshot_is_used_not_the_events_before_it(backend: Backend) -> None:
    store = snapshot_store(backend)
    counter = Counter.blank("c-1")
    await commit_counts(backend, counter, [1, 1, 1])
    # A snapshot whose state differs from the fold of the events proves it was read.
    await store.save(snapshot(3, 1000))

    loaded = await EventSourcedRepository(
        backend.event_store, Counter, event_types=[Counted], snapshot_store=store
    ).load("c-1")

    assert (loaded.version, loaded.total) == (3, 1000)


async def test_a_snapshot_of_another_schema_version_falls_back_to_a_full_replay(
    backend: Backend,
) -> None:
    store = snapshot_store(backend)
    counter = Counter.blank("c-1")
    await commit_counts(backend, counter, [1, 1, 1])
    await store.save(snapshot(3, 1000, schema_version=1))

    loaded = await EventSourcedRepository(
        backend.event_store, CounterV2, event_types=[Counted], snapshot_store=store
    ).load("c-1")

    assert (loaded.version, loaded.total, loaded.applied) == (3, 3, 3)


async def test_a_snapshot_that_no_longer_validates_falls_back_to_a_full_replay(
    backend: Backend,
) -> None:
    store = snapshot_store(backend)
    counter = Counter.blank("c-1")
    await commit_counts(backend, counter, [2, 2])
    bad = snapshot(2, 0)
    await store.save(
        Snapshot(**{**{f: getattr(bad, f) for f in bad.__slots__}, "state": {"total": "x"}})
    )

    loaded = await EventSourcedRepository(
        backend.event_store, Counter, event_types=[Counted], snapshot_store=store
    ).load("c-1")

    assert (loaded.version, loaded.total) == (2, 4)


async def test_the_policy_snapshots_after_commit_when_the_version_crosses_n(
    backend: Backend,
) -> None:
    store = snapshot_store(backend)
    repository = EventSourcedRepository(
        backend.event_store,
        Counter,
        event_types=[Counted],
        snapshot_store=store,
        snapshot_policy=EveryNEvents(3),
    )
    counter = Counter.blank("c-1")
    await commit_counts(backend, counter, [1, 1])
    seen: list[int | None] = []
    for _ in range(4):  # versions 3, 4, 5, 6
        uow = backend.uow_factory()
        loaded = await _load_in(repository, uow)
        expected = loaded.original_version
        loaded.count(1)
        await backend.event_store.append(
            "Counter", "c-1", loaded.collect_events(), expected_version=expected, uow=uow
        )
        before = await store.latest("Counter", "c-1")
        await uow.commit()
        after = await store.latest("Counter", "c-1")
        assert after is not None
        # Never before the commit: the snapshot is taken after it.
        assert (before.version if before else None) != loaded.version
        seen.append(after.version)
        assert after.state["total"] == after.version

    assert seen == [3, 3, 3, 6]


async def test_nothing_is_snapshotted_when_the_unit_of_work_rolls_back(backend: Backend) -> None:
    store = snapshot_store(backend)
    repository = EventSourcedRepository(
        backend.event_store,
        Counter,
        event_types=[Counted],
        snapshot_store=store,
        snapshot_policy=EveryNEvents(1),
    )
    await commit_counts(backend, Counter.blank("c-1"), [1])
    uow = backend.uow_factory()
    loaded = await _load_in(repository, uow)
    loaded.count(5)
    await uow.rollback()

    assert await store.latest("Counter", "c-1") is None


def test_a_policy_without_a_store_and_a_bad_interval_are_refused() -> None:
    with pytest.raises(EventSourcingConfigurationError):
        EventSourcedRepository(
            object(),  # type: ignore[arg-type]
            Counter,
            event_types=[Counted],
            snapshot_policy=EveryNEvents(2),
        )
    for bad in (0, -1, 1.5, True):
        with pytest.raises(EventSourcingConfigurationError):
            EveryNEvents(bad)  # type: ignore[arg-type]


async def _load_in(repository: EventSourcedRepository[Counter], uow: Any) -> Counter:
    loaded = await repository.load("c-1")
    repository.track(loaded, uow=uow)
    return loaded


async def test_concurrent_saves_leave_the_snapshot_with_the_highest_version(
    backend: Backend,
) -> None:
    store = snapshot_store(backend)
    versions = [7, 3, 12, 9, 12, 1, 11]

    stored = await asyncio.gather(*(store.save(snapshot(v, v)) for v in versions))

    latest = await store.latest("Counter", "c-1")
    assert latest is not None
    assert (latest.version, latest.state["total"]) == (12, 12)
    assert sum(stored) >= 1
