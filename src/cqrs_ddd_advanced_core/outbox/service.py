"""Batch operations over an outbox store: enqueue events, publish a batch.

Delivery is at least once: a message is marked published only after the
publisher accepted it, so a crash in between publishes it again. Consumers
deduplicate on ``message_id`` (the event id). A failed message is retried
after an exponential backoff, while later messages go ahead: consumers that
need one aggregate's messages in order must not rely on arrival order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import structlog

from cqrs_ddd_advanced_core.outbox.message import current_trace_context, message_from_event
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.telemetry.api import error_type

if TYPE_CHECKING:
    from cqrs_ddd_core.domain.messages import DomainEvent
    from cqrs_ddd_core.persistence.ports import OutboxStore, UnitOfWork
    from cqrs_ddd_core.persistence.records import OutboxMessage

__all__ = ["Backoff", "BatchResult", "OutboxService", "Publisher"]

_log = structlog.get_logger("cqrs_ddd_advanced_core.outbox")


class Publisher(Protocol):
    """Hands one message to the broker; raises if the broker did not accept it."""

    async def publish(self, message: OutboxMessage) -> None: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential retry delay: ``initial * factor ** (attempt - 1)``, capped at ``maximum``.

    Attributes:
        initial: The delay after the first failure.
        factor: The growth per further failure.
        maximum: The longest delay.
    """

    initial: timedelta = timedelta(seconds=1)
    factor: float = 2.0
    maximum: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if self.initial <= timedelta(0) or self.factor < 1 or self.maximum < self.initial:
            raise ValueError(
                "Backoff needs initial > 0, factor >= 1 and maximum >= initial, got "
                f"{self.initial}, {self.factor}, {self.maximum}"
            )

    def delay(self, attempt: int) -> timedelta:
        """The wait after failed attempt number ``attempt`` (1 for the first failure)."""
        exponent = max(attempt - 1, 0)
        seconds = self.initial.total_seconds() * self.factor**exponent
        return min(timedelta(seconds=seconds), self.maximum)


@dataclass(slots=True)
class BatchResult:
    """What one batch did: ids published, ids failed."""

    published: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return len(self.published) + len(self.failed)


class OutboxService:
    """Enqueue events in a unit of work; publish due messages in batches.

    Args:
        outbox_store: The outbox.
        backoff: Delay before retrying a failed message.
        clock: The current time (tests pass a fixed one).
        upcaster: Applied to each message before it is published (event-schema
            upcasting: ``UpcasterRegistry.upcast_message``); the stored row is
            not changed. If it raises, the attempt fails and is retried.
    """

    __slots__ = ("_backoff", "_clock", "_store", "_upcaster")

    def __init__(
        self,
        outbox_store: OutboxStore,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], datetime] = utc_now,
        upcaster: Callable[[OutboxMessage], OutboxMessage] | None = None,
    ) -> None:
        self._store = outbox_store
        self._backoff = Backoff() if backoff is None else backoff
        self._clock = clock
        self._upcaster = upcaster

    @property
    def store(self) -> OutboxStore:
        return self._store

    async def enqueue_events(
        self, events: Sequence[DomainEvent], *, uow: UnitOfWork | None = None
    ) -> list[OutboxMessage]:
        """Stage one message per event in ``uow`` (default: the running dispatch's),
        carrying the current trace context."""
        trace_context = current_trace_context()
        now = self._clock()
        messages = [
            message_from_event(event, trace_context=trace_context, created_at=now)
            for event in events
        ]
        await self._store.enqueue(messages, uow=uow)
        return messages

    async def publish_batch(self, publisher: Publisher, *, limit: int = 100) -> BatchResult:
        """Claim up to ``limit`` due messages and publish them, oldest first.

        Accepted ones are marked published together; each failure is marked
        failed with its next attempt after the backoff.
        """
        now = self._clock()
        batch = await self._store.claim_batch(limit, now=now)
        result = BatchResult()
        for message in batch:
            try:
                await publisher.publish(
                    message if self._upcaster is None else self._upcaster(message)
                )
            except Exception as exc:
                attempt = message.attempts + 1
                next_attempt_at = self._clock() + self._backoff.delay(attempt)
                await self._store.mark_failed(
                    message.message_id,
                    f"{type(exc).__name__}: {exc}",
                    next_attempt_at=next_attempt_at,
                )
                result.failed.append(message.message_id)
                _log.warning(
                    "outbox_publish_failed",
                    message_id=message.message_id,
                    message_type=message.message_type,
                    attempt=attempt,
                    error_type=error_type(exc),
                    next_attempt_at=next_attempt_at.isoformat(),
                )
            else:
                result.published.append(message.message_id)
        if result.published:
            await self._store.mark_published(result.published, at=self._clock())
        return result

    def __repr__(self) -> str:
        return f"OutboxService({self._store!r}, backoff={self._backoff!r})"
