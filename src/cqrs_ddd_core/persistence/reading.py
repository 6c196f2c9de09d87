"""Reading the whole store in pages: what ``EventStore.read_all`` returns.

``read_all`` reads *everything* above a position: iterate it with
``async for`` (one page of ``page_size`` events is fetched at a time, so memory
stays flat however large the store), or ``await`` it for one list. A limit is
never implied: pass ``limit=`` to stop early. One page at a time, with its
size always given, is ``EventStore.read_page``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from typing import Any, Final

from cqrs_ddd_core.persistence.records import StoredEvent

__all__ = ["DEFAULT_PAGE_SIZE", "EventPages", "ReadPage"]

DEFAULT_PAGE_SIZE: Final = 500
"""Events fetched per page by ``read_all`` (a round trip each)."""

ReadPage = Callable[[int, int], Awaitable[list[StoredEvent]]]
"""``read_page(after_position, limit)``: up to ``limit`` events above the position."""


class EventPages:
    """Every committed event above a position, fetched page by page.

    Iterating yields events by position until a page comes back short (the
    end of what is visible now), or ``limit`` events were yielded. Awaiting
    returns them all as one list.

    Args:
        read_page: Fetches one page (an adapter's ``read_page``).
        after_position: Start after this position (0: from the first event).
        limit: Stop after this many events (``None``: no limit).
        page_size: Events per page.

    Raises:
        ValueError: ``limit`` is negative, ``page_size`` below 1 or
            ``after_position`` negative.
    """

    __slots__ = ("_after", "_limit", "_page_size", "_read_page")

    def __init__(
        self,
        read_page: ReadPage,
        *,
        after_position: int = 0,
        limit: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        if after_position < 0:
            raise ValueError(f"after_position must be >= 0, got {after_position}")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be None or >= 0, got {limit}")
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self._read_page = read_page
        self._after = after_position
        self._limit = limit
        self._page_size = page_size

    def __aiter__(self) -> AsyncIterator[StoredEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StoredEvent]:
        after, remaining = self._after, self._limit
        while remaining is None or remaining > 0:
            size = self._page_size if remaining is None else min(self._page_size, remaining)
            page = await self._read_page(after, size)
            for event in page:
                yield event
            if len(page) < size:
                return
            after = page[-1].position
            if remaining is not None:
                remaining -= len(page)

    async def to_list(self) -> list[StoredEvent]:
        """Every event, in one list."""
        return [event async for event in self]

    def __await__(self) -> Generator[Any, None, list[StoredEvent]]:
        return self.to_list().__await__()

    def __repr__(self) -> str:
        return (
            f"EventPages(after_position={self._after}, limit={self._limit}, "
            f"page_size={self._page_size})"
        )
