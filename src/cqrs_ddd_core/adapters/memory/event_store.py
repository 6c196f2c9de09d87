"""An in-memory event store: streams with versions 1..n and a global position."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from cqrs_ddd_core.exceptions import ConcurrencyError, PersistenceError
from cqrs_ddd_core.persistence.reading import DEFAULT_PAGE_SIZE, EventPages
from cqrs_ddd_core.persistence.records import StoredEvent, stream_name
from cqrs_ddd_core.persistence.serialization import AppendBatch, encode_append
from cqrs_ddd_core.persistence.unit_of_work import require_uow

if TYPE_CHECKING:
    from cqrs_ddd_core.domain.messages import DomainEvent
    from cqrs_ddd_core.persistence.ports import UnitOfWork

__all__ = ["InMemoryEventStore"]


class InMemoryEventStore:
    """Keeps committed events in lists; appends are staged on the unit of work."""

    collection = "events"
    operation = "INSERT"

    def __init__(self) -> None:
        self._all: list[StoredEvent] = []
        self._streams: dict[tuple[str, str], list[StoredEvent]] = {}
        self._ids: dict[str, tuple[str, str]] = {}  # event id -> its stream

    def stored_stream(self, event_id: str) -> tuple[str, str] | None:
        """The stream (aggregate type, id) holding ``event_id``, if it is stored."""
        return self._ids.get(event_id)

    async def append(
        self,
        aggregate_type: str,
        aggregate_id: str,
        events: Sequence[DomainEvent],
        *,
        expected_version: int,
        uow: UnitOfWork | None = None,
    ) -> None:
        uow = require_uow(uow, "InMemoryEventStore.append")
        if not events:
            return
        uow.stage(self, encode_append(aggregate_type, aggregate_id, events, expected_version))

    def prepare(self, records: list[AppendBatch]) -> Callable[[], None]:
        heads: dict[tuple[str, str], int] = {}
        ids: set[str] = set()
        for aggregate_type, aggregate_id, expected, pending in records:
            key = (aggregate_type, aggregate_id)
            current = heads.get(key, len(self._streams.get(key, ())))
            if current != expected:
                raise ConcurrencyError(stream_name(*key), expected, current)
            heads[key] = expected + len(pending)
            for row in pending:
                if row.event_id in self._ids or row.event_id in ids:
                    raise PersistenceError(f"event id {row.event_id!r} is stored already")
                ids.add(row.event_id)

        def apply() -> None:
            for aggregate_type, aggregate_id, _, pending in records:
                stream = self._streams.setdefault((aggregate_type, aggregate_id), [])
                for row in pending:
                    stored = StoredEvent(
                        position=len(self._all) + 1,
                        event_id=row.event_id,
                        aggregate_type=aggregate_type,
                        aggregate_id=aggregate_id,
                        version=row.version,
                        event_type=row.event_type,
                        schema_version=row.schema_version,
                        payload=json.loads(row.payload_json),
                        metadata=json.loads(row.metadata_json),
                        occurred_at=row.occurred_at,
                        correlation_id=row.correlation_id,
                        causation_id=row.causation_id,
                    )
                    self._all.append(stored)
                    stream.append(stored)
                    self._ids[row.event_id] = (aggregate_type, aggregate_id)

        return apply

    async def load_stream(
        self, aggregate_type: str, aggregate_id: str, *, from_version: int = 1
    ) -> list[StoredEvent]:
        stream = self._streams.get((aggregate_type, aggregate_id), [])
        return stream[max(from_version, 1) - 1 :]

    def read_all(
        self,
        *,
        after_position: int = 0,
        limit: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> EventPages:
        """Every event above ``after_position`` (see :class:`EventPages`)."""
        return EventPages(
            self._page, after_position=after_position, limit=limit, page_size=page_size
        )

    async def read_page(self, *, after_position: int = 0, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` events above ``after_position``, by position."""
        return await self._page(after_position, limit)

    async def _page(self, after_position: int, limit: int) -> list[StoredEvent]:
        start = max(after_position, 0)
        return self._all[start : start + max(limit, 0)]

    async def latest_position(self) -> int:
        return len(self._all)

    def __repr__(self) -> str:
        return f"InMemoryEventStore(events={len(self._all)}, streams={len(self._streams)})"
