"""The messaging ports: broker-neutral, so that a broker adapter is all a new broker needs.

* :class:`Publisher` (from :mod:`cqrs_ddd_advanced_core.outbox`): hands one
  outbox message to the broker and returns once the broker has it
  (RabbitMQ: a publisher confirm).
* :class:`Subscriber`: takes deliveries from the broker and gives each to a
  :data:`DeliveryProcessor` (the :class:`~.consumer.MessageConsumer`), then
  acknowledges, retries or dead-letters it by the outcome.
* :class:`CommitListener`: wakes a relay when another process commits outbox
  rows (PostgreSQL ``LISTEN``).
* The inbox store is a persistence port (:class:`cqrs_ddd_core.persistence.InboxStore`):
  it lives with the database adapters, whose transactions it shares.

:class:`IncomingMessage` is what a consumer's handler receives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from cqrs_ddd_advanced_core.outbox.service import Publisher

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.ports import InboxTransaction

__all__ = [
    "BatchProcessor",
    "CommitListener",
    "DeliveryProcessor",
    "IncomingMessage",
    "MessageHandler",
    "Outcome",
    "Publisher",
    "Subscriber",
]


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One delivery of an integration event, as the broker adapter decoded it.

    Attributes:
        message_id: The event id (the inbox deduplicates on it).
        message_type: The event type.
        payload: The event's own fields.
        aggregate_type: The aggregate type, if any.
        aggregate_id: The aggregate id, if any.
        aggregate_version: The event's version in its stream, if known.
        schema_version: The schema version of ``payload``, if the producer said.
        correlation_id: The business flow's id.
        causation_id: The id of the message that caused the event.
        trace_context: The propagation headers (W3C ``traceparent`` of the producer span).
        destination: Where it was consumed from (queue name).
        redelivered: The broker says it may have been delivered before.
        attempt: 1 for the first processing in this consumer, then 2, 3...
        headers: Every header as received.
    """

    message_id: str
    message_type: str
    payload: dict[str, Any]
    aggregate_type: str | None = None
    aggregate_id: str | None = None
    aggregate_version: int | None = None
    schema_version: int | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    trace_context: Mapping[str, str] = field(default_factory=dict)
    destination: str = ""
    redelivered: bool = False
    attempt: int = 1
    headers: Mapping[str, Any] = field(default_factory=dict)


class Outcome(StrEnum):
    """What processing a delivery came to (the subscriber acknowledges all three)."""

    HANDLED = "handled"
    DUPLICATE = "duplicate"  # the inbox had it: acknowledged with no second effect
    IGNORED = "ignored"  # no handler subscribed to its type


MessageHandler = Callable[[IncomingMessage, "InboxTransaction"], Awaitable[None]]
"""``async def handler(message, tx)``: apply the effects through ``tx.connection``
(or ``tx.after_commit``); they commit with the inbox row."""

DeliveryProcessor = Callable[[IncomingMessage], Awaitable[Outcome]]
"""Processes one delivery; raises when it failed (the subscriber retries, then dead-letters)."""


class BatchProcessor(Protocol):
    """Processes one delivery, or several of one queue in one transaction
    (the :class:`~.consumer.MessageConsumer`)."""

    async def process(self, message: IncomingMessage) -> Outcome:
        """As a :data:`DeliveryProcessor`."""
        ...

    async def process_batch(
        self, messages: Sequence[IncomingMessage]
    ) -> list[Outcome | Exception | None]:
        """Process ``messages`` in order, in one transaction; per message its outcome
        (committed or skipped), the error it failed with, or None (not tried). What
        follows the first entry that is not an outcome was not committed; the
        subscriber retries the failed message alone, then the rest, in order, and
        acknowledges the outcomes only."""
        ...


class Subscriber(Protocol):
    """Feeds a broker's deliveries to a processor until stopped."""

    async def run(
        self, processor: DeliveryProcessor | BatchProcessor, stop_event: asyncio.Event
    ) -> None:
        """Consume until ``stop_event`` is set; acknowledge only after ``processor`` returned
        (after the batch's commit, with a :class:`BatchProcessor`)."""
        ...


class CommitListener(Protocol):
    """Calls back when outbox rows were committed (by any process)."""

    @property
    def listening(self) -> bool:
        """Whether notifications arrive now (otherwise the relay polls)."""
        ...

    async def start(self, callback: Callable[[], None]) -> None:
        """Listen (again), calling ``callback()`` on each commit."""
        ...

    async def stop(self) -> None:
        """Stop listening."""
        ...
