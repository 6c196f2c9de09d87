"""EventPages: read_all's pages are fetched one at a time, only as far as asked."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cqrs_ddd_core.persistence import EventPages, StoredEvent


def stored(position: int) -> StoredEvent:
    return StoredEvent(
        position=position,
        event_id=f"e{position}",
        aggregate_type="A",
        aggregate_id="a",
        version=position,
        event_type="Happened",
        schema_version=1,
        payload={},
        metadata={},
        occurred_at=datetime(2024, 1, 1, tzinfo=UTC),
        correlation_id=None,
        causation_id=None,
    )


class Store:
    def __init__(self, count: int) -> None:
        self.events = [stored(p) for p in range(1, count + 1)]
        self.calls: list[tuple[int, int]] = []

    async def read_page(self, after: int, limit: int) -> list[StoredEvent]:
        self.calls.append((after, limit))
        return self.events[after : after + limit]


async def test_pages_follow_the_last_position_until_a_short_page() -> None:
    store = Store(7)

    events = await EventPages(store.read_page, page_size=3)

    assert [e.position for e in events] == list(range(1, 8))
    assert store.calls == [(0, 3), (3, 3), (6, 3)]


async def test_an_exact_multiple_of_the_page_size_ends_with_one_empty_page() -> None:
    store = Store(6)

    assert len(await EventPages(store.read_page, page_size=3)) == 6
    assert store.calls == [(0, 3), (3, 3), (6, 3)]


async def test_a_limit_asks_for_no_more_than_it_needs() -> None:
    store = Store(100)

    events = await EventPages(store.read_page, after_position=10, limit=5, page_size=3)

    assert [e.position for e in events] == [11, 12, 13, 14, 15]
    assert store.calls == [(10, 3), (13, 2)]


async def test_iteration_fetches_the_next_page_only_when_it_is_reached() -> None:
    store = Store(10)
    iterator = aiter(EventPages(store.read_page, page_size=4))

    first = await anext(iterator)

    assert first.position == 1
    assert store.calls == [(0, 4)]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"limit": -1}, "limit"), ({"page_size": 0}, "page_size"), ({"after_position": -1}, "after")],
)
def test_bad_arguments_are_refused(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        EventPages(Store(0).read_page, **kwargs)  # type: ignore[arg-type]


async def test_a_page_of_one_event_is_allowed() -> None:
    store = Store(3)

    events = await EventPages(store.read_page, page_size=1)

    assert [e.position for e in events] == [1, 2, 3]
    assert store.calls == [(0, 1), (1, 1), (2, 1), (3, 1)]
