"""The SQL outbox: messages written with the command's transaction, published after it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.exc import DBAPIError

from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.plan import as_utc
from cqrs_ddd_core.adapters.sqlalchemy.reads import Query, aware, fetch
from cqrs_ddd_core.adapters.sqlalchemy.tables import outbox
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.persistence.limits import check_outbox_message
from cqrs_ddd_core.persistence.records import OutboxMessage, OutboxStatus
from cqrs_ddd_core.persistence.serialization import dumps
from cqrs_ddd_core.persistence.unit_of_work import require_uow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
    from cqrs_ddd_core.persistence.ports import UnitOfWork

__all__ = ["SQLAlchemyOutboxStore"]

_COLUMNS = (
    outbox.c.message_id,
    outbox.c.message_type,
    outbox.c.payload,
    outbox.c.created_at,
    outbox.c.aggregate_type,
    outbox.c.aggregate_id,
    outbox.c.correlation_id,
    outbox.c.causation_id,
    outbox.c.trace_context,
    outbox.c.status,
    outbox.c.attempts,
    outbox.c.next_attempt_at,
    outbox.c.last_error,
    outbox.c.published_at,
    outbox.c.id,
)


_GET = Query(select(*_COLUMNS).where(outbox.c.message_id == bindparam("message_id")))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _message(row: Any) -> OutboxMessage:
    return OutboxMessage(
        message_id=row[0],
        message_type=row[1],
        payload=_json(row[2]),
        created_at=aware(row[3]),
        aggregate_type=row[4],
        aggregate_id=row[5],
        correlation_id=row[6],
        causation_id=row[7],
        trace_context=_json(row[8]),
        status=OutboxStatus(row[9]),
        attempts=row[10],
        next_attempt_at=aware(row[11]),
        last_error=row[12],
        published_at=aware(row[13]),
    )


class SQLAlchemyOutboxStore:
    """Outbox messages in the ``outbox`` table.

    :meth:`enqueue` stages messages on the unit of work (payloads are
    serialised then, so a bad one fails the command before anything is
    written). The worker's calls (:meth:`claim_batch`, :meth:`mark_published`,
    :meth:`mark_failed`) run in transactions of their own.

    Args:
        engine: The database (the unit of work must use the same one).
        claim_timeout: How long a claimed message is hidden from other
            workers; if its worker dies, the message is due again after it.
    """

    collection = "outbox"

    def __init__(self, engine: AsyncEngine, *, claim_timeout: timedelta = timedelta(seconds=30)):
        if claim_timeout <= timedelta(0):
            raise ValueError(f"claim_timeout must be positive, got {claim_timeout!r}")
        self._engine = engine
        self._claim_timeout = claim_timeout

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def enqueue(
        self, messages: Sequence[OutboxMessage], *, uow: UnitOfWork | None = None
    ) -> None:
        uow = require_uow(uow, "SQLAlchemyOutboxStore.enqueue")
        rows = [
            (
                m.message_id,
                m.message_type,
                dumps(m.payload, m.message_type) if m.payload_json is None else m.payload_json,
                m.aggregate_type,
                m.aggregate_id,
                OutboxStatus(m.status).value,
                m.attempts,
                None if m.next_attempt_at is None else as_utc(m.next_attempt_at),
                m.last_error,
                as_utc(m.created_at),
                None if m.published_at is None else as_utc(m.published_at),
                m.correlation_id,
                m.causation_id,
                dumps(m.trace_context, m.message_type) if m.trace_context else "{}",
            )
            for m in messages
        ]
        for message, row in zip(messages, rows, strict=True):  # the same rules on every backend
            check_outbox_message(message, row[2])
        for row in rows:  # every message serialised and checked before any is staged
            uow.stage(self, row)

    def add_to_plan(self, plan: FlushPlan, records: list[tuple[Any, ...]]) -> None:
        plan.outbox.extend(records)

    @staticmethod
    def aggregate_type_of(record: tuple[Any, ...]) -> str | None:
        """The aggregate type of a staged row (``cqrs.outbox.enqueued`` counts by it)."""
        aggregate_type: str | None = record[3]
        return aggregate_type

    async def claim_batch(
        self, limit: int = 100, *, now: datetime | None = None
    ) -> list[OutboxMessage]:
        """Claim up to ``limit`` due messages, oldest first.

        A claimed message is not due again for ``claim_timeout``, so
        concurrent workers never claim the same message (on PostgreSQL they
        skip each other's rows instead of waiting: ``FOR UPDATE SKIP LOCKED``).
        """
        now = as_utc(now or utc_now())
        due = (
            select(outbox.c.id)
            .where(
                outbox.c.status != OutboxStatus.PUBLISHED.value,
                or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now),
            )
            .order_by(outbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        statement = (
            update(outbox)
            .where(outbox.c.id.in_(due))
            .values(next_attempt_at=now + self._claim_timeout)
            .returning(*_COLUMNS)
        )
        rows = await self._write(statement)
        return [_message(row) for row in sorted(rows, key=lambda row: row[-1])]

    async def mark_published(
        self, message_ids: Sequence[str], *, at: datetime | None = None
    ) -> None:
        if not message_ids:
            return
        await self._write(
            update(outbox)
            .where(outbox.c.message_id.in_(list(message_ids)))
            .values(status=OutboxStatus.PUBLISHED.value, published_at=as_utc(at or utc_now()))
        )

    async def mark_failed(self, message_id: str, error: str, *, next_attempt_at: datetime) -> None:
        await self._write(
            update(outbox)
            .where(outbox.c.message_id == message_id)
            .values(
                status=OutboxStatus.FAILED.value,
                attempts=outbox.c.attempts + 1,
                last_error=error,
                next_attempt_at=as_utc(next_attempt_at),
            )
        )

    async def get(self, message_id: str) -> OutboxMessage | None:
        rows = await fetch(self._engine, _GET, message_id=message_id)
        return _message(rows[0]) if rows else None

    async def _write(self, statement: Any) -> list[Any]:
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(statement)
                return list(result.all()) if result.returns_rows else []
        except DBAPIError as exc:
            raise persistence_error(exc.orig or exc, "Outbox update failed") from exc

    def __repr__(self) -> str:
        return f"SQLAlchemyOutboxStore({self._engine.url.render_as_string(hide_password=True)!r})"
