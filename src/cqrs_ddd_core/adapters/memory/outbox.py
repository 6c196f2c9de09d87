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
        """Claim up to ``limit`` due messages, oldest first.

        As in the SQL store, a claimed message is not due again for
        ``claim_timeout``, so two workers never claim the same message.
        """
        now = now or utc_now()
        due = [
            m
            for m in self._messages.values()
            if m.status is not OutboxStatus.PUBLISHED
            and (m.next_attempt_at is None or m.next_attempt_at <= now)
        ][:limit]
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

    async def mark_failed(self, message_id: str, error: str, *, next_attempt_at: datetime) -> None:
        message = self._messages[message_id]
        message.status = OutboxStatus.FAILED
        message.attempts += 1
        message.last_error = error
        message.next_attempt_at = next_attempt_at

    async def get(self, message_id: str) -> OutboxMessage | None:
        found = self._messages.get(message_id)
        return None if found is None else dataclasses.replace(found)

    def __len__(self) -> int:
        return len(self._messages)
