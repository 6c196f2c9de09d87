"""An in-memory outbox store."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.exceptions import PersistenceError
from cqrs_ddd_core.persistence.limits import check_outbox_message
from cqrs_ddd_core.persistence.records import OutboxMessage, OutboxStatus
from cqrs_ddd_core.persistence.serialization import dumps
from cqrs_ddd_core.persistence.unit_of_work import require_uow

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.ports import UnitOfWork

__all__ = ["InMemoryOutboxStore"]


class InMemoryOutboxStore:
    """Outbox messages in a dict, staged on the unit of work like the SQL store."""

    collection = "outbox"
    operation = "INSERT"

    def __init__(self, *, claim_timeout: timedelta = timedelta(seconds=30)) -> None:
        if claim_timeout <= timedelta(0):
            raise ValueError(f"claim_timeout must be positive, got {claim_timeout!r}")
        self._messages: dict[str, OutboxMessage] = {}
        self._claim_timeout = claim_timeout
        self._listeners: list[Callable[[], None]] = []

    @property
    def claim_timeout(self) -> timedelta:
        """How long a claimed message is hidden from other relays."""
        return self._claim_timeout

    def add_commit_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after each commit that wrote messages; returns its remover."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def _notify(self) -> None:
        for listener in tuple(self._listeners):
            listener()

    async def enqueue(
        self, messages: Sequence[OutboxMessage], *, uow: UnitOfWork | None = None
    ) -> None:
        uow = require_uow(uow, "InMemoryOutboxStore.enqueue")
        for message in messages:  # the SQL adapters' rules, before anything is staged
            text = message.payload_json
            check_outbox_message(
                message, dumps(message.payload, message.message_type) if text is None else text
            )
        for message in messages:
            uow.stage(self, dataclasses.replace(message))
        if self._listeners and messages:
            uow.after_commit(self._notify)

    def prepare(self, records: list[OutboxMessage]) -> Callable[[], None]:
        seen: set[str] = set()
        for message in records:
            if message.message_id in self._messages or message.message_id in seen:
                raise PersistenceError(f"Outbox message {message.message_id} already exists")
            seen.add(message.message_id)

        def apply() -> None:
            for message in records:
                self._messages[message.message_id] = message

        return apply

    async def claim_batch(
        self, limit: int = 100, *, now: datetime | None = None
    ) -> list[OutboxMessage]:
        """Claim up to ``limit`` due messages, oldest first, keeping each stream's order.

        As in the SQL store, a claimed message is not due again for
        ``claim_timeout``, so two relays never claim the same message, and a
        message is not claimed while an earlier one of its stream is
        unpublished and not claimed with it.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        now = now or utc_now()
        due: list[OutboxMessage] = []
        blocked: set[tuple[str | None, str]] = set()
        for m in self._messages.values():  # insertion order = commit order
            if m.status is OutboxStatus.PUBLISHED:
                continue
            stream = None if m.aggregate_id is None else (m.aggregate_type, m.aggregate_id)
            is_due = m.status is not OutboxStatus.DEAD and (
                m.next_attempt_at is None or m.next_attempt_at <= now
            )
            if stream is not None and stream in blocked:
                continue
            if is_due and len(due) < limit:
                due.append(m)
            elif stream is not None:
                blocked.add(stream)  # unpublished and not taken: its successors wait
        claimed = [dataclasses.replace(m) for m in due]
        for message in due:
            message.next_attempt_at = now + self._claim_timeout
        return claimed

    async def mark_published(
        self, message_ids: Sequence[str], *, at: datetime | None = None
    ) -> None:
        at = at or utc_now()
        for message_id in message_ids:
            message = self._messages[message_id]
            message.status = OutboxStatus.PUBLISHED
            message.published_at = at
            message.next_attempt_at = None

    async def mark_failed(self, message_id: str, error: str, *, next_attempt_at: datetime) -> None:
        message = self._messages[message_id]
        message.status = OutboxStatus.FAILED
        message.attempts += 1
        message.last_error = error
        message.next_attempt_at = next_attempt_at

    async def release(self, message_ids: Sequence[str]) -> None:
        """Give claimed messages back unpublished: they are due again at once."""
        for message_id in message_ids:
            message = self._messages[message_id]
            if message.status is not OutboxStatus.PUBLISHED:
                message.next_attempt_at = None

    async def mark_dead(self, message_id: str, error: str) -> None:
        """Record a last failed attempt: the message becomes a dead letter."""
        message = self._messages[message_id]
        message.status = OutboxStatus.DEAD
        message.attempts += 1
        message.last_error = error
        message.next_attempt_at = None

    async def dead_letters(self, *, limit: int = 100) -> list[OutboxMessage]:
        """Dead letters, oldest first."""
        dead = [m for m in self._messages.values() if m.status is OutboxStatus.DEAD]
        return [dataclasses.replace(m) for m in dead[:limit]]

    async def requeue(self, message_ids: Sequence[str] | None = None) -> int:
        """Make dead letters pending again (all when ``message_ids`` is None); returns how many."""
        wanted = None if message_ids is None else set(message_ids)
        count = 0
        for m in self._messages.values():
            if m.status is OutboxStatus.DEAD and (wanted is None or m.message_id in wanted):
                m.status, m.attempts, m.next_attempt_at = OutboxStatus.PENDING, 0, None
                count += 1
        return count

    async def oldest_unpublished_at(self) -> datetime | None:
        """When the oldest unpublished message (dead letters included) was written."""
        times = [
            m.created_at for m in self._messages.values() if m.status is not OutboxStatus.PUBLISHED
        ]
        return min(times, default=None)

    async def get(self, message_id: str) -> OutboxMessage | None:
        found = self._messages.get(message_id)
        return None if found is None else dataclasses.replace(found)

    def __len__(self) -> int:
        return len(self._messages)
