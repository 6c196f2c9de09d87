"""The SQL outbox: messages written with the command's transaction, published after it.

Claims keep each stream's order (see :func:`~.outbox_claim.claim`); a message
that keeps failing becomes a dead letter, listed by :meth:`dead_letters` and
sent again by :meth:`requeue`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, bindparam, cast, func, select, update
from sqlalchemy.exc import DBAPIError

from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.outbox_claim import (
    claim,
    claim_pg,
    in_list,
    is_stuck,
    is_unpublished,
    plan_for,
)
from cqrs_ddd_core.adapters.sqlalchemy.plan import as_utc
from cqrs_ddd_core.adapters.sqlalchemy.reads import Query, aware, fetch
from cqrs_ddd_core.adapters.sqlalchemy.tables import outbox
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.exceptions import PersistenceError
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
    # As stored (text): the relay publishes it as it is, without serialising it again.
    cast(outbox.c.payload, Text).label("payload"),
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
    outbox.c.aggregate_version,
    outbox.c.schema_version,
)

# The same columns for PostgreSQL's one-statement claim (``claim_pg``), over its rows.
_PG_COLUMNS = (
    "taken.message_id, taken.message_type, CAST(taken.payload AS TEXT), taken.created_at, "
    "taken.aggregate_type, taken.aggregate_id, taken.correlation_id, taken.causation_id, "
    "taken.trace_context, taken.status, taken.attempts, taken.next_attempt_at, "
    "taken.last_error, taken.published_at, taken.id, taken.aggregate_version, "
    "taken.schema_version"
)

_GET = Query(select(*_COLUMNS).where(outbox.c.message_id == bindparam("message_id")))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _published(dialect: str) -> Any:
    """Marks messages published (built once per dialect: building it cost more than
    running it)."""
    return (
        update(outbox)
        .where(in_list(outbox.c.message_id, "message_ids", dialect))
        .values(
            status=OutboxStatus.PUBLISHED.value,
            published_at=bindparam("published_at", type_=outbox.c.published_at.type),
            next_attempt_at=None,
        )
    )


_PUBLISHED: dict[str, Any] = {}

_OLDEST_UNPUBLISHED = select(func.min(outbox.c.created_at)).where(is_unpublished())
"""The relay's lag query (built once: it runs after every batch that emptied the outbox)."""


def _published_for(dialect: str) -> Any:
    statement = _PUBLISHED.get(dialect)
    if statement is None:
        statement = _PUBLISHED[dialect] = _published(dialect)
    return statement


def _message(row: Any) -> OutboxMessage:
    text = row[2] if isinstance(row[2], str) else None
    return OutboxMessage(
        message_id=row[0],
        message_type=row[1],
        payload=_json(row[2]),
        payload_json=text,
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
        aggregate_version=row[15],
        schema_version=row[16],
    )


# A status's stored text by member (or by its text: a StrEnum member hashes and
# compares as its value): a dict lookup on every enqueued message, where
# ``OutboxStatus(status).value`` is two Python-level calls; an unknown status
# still raises the enum's ValueError.
_STATUS_TEXT: dict[str, str] = {status: status.value for status in OutboxStatus}


class SQLAlchemyOutboxStore:
    """Outbox messages in the ``outbox`` table.

    :meth:`enqueue` stages messages on the unit of work (payloads are
    serialised then, so a bad one fails the command before anything is
    written). The relay's calls (:meth:`claim_batch`, :meth:`mark_published`,
    :meth:`mark_failed`, :meth:`mark_dead`) and the operator's
    (:meth:`dead_letters`, :meth:`requeue`) run in transactions of their own;
    on PostgreSQL each is one statement, its own transaction (autocommit).

    Args:
        engine: The database (the unit of work must use the same one).
        claim_timeout: How long a claimed message is hidden from other
            relays; if its relay dies, the message is due again after it.
            A relay must finish publishing a batch well within it.
    """

    collection = "outbox"

    def __init__(self, engine: AsyncEngine, *, claim_timeout: timedelta = timedelta(seconds=30)):
        if claim_timeout <= timedelta(0):
            raise ValueError(f"claim_timeout must be positive, got {claim_timeout!r}")
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        # The relay's and the operator's calls are one statement each: on PostgreSQL
        # that statement is its own transaction (no BEGIN and COMMIT round trips).
        self._single: AsyncEngine = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if self._postgres else engine
        )
        self._claim_timeout = claim_timeout
        self._listeners: list[Callable[[], None]] = []
        self._plan = 0  # outbox_claim.plan_for the largest id claimed (PostgreSQL)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @property
    def claim_timeout(self) -> timedelta:
        """How long a claimed message is hidden from other relays."""
        return self._claim_timeout

    def add_commit_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after each commit in this process that wrote messages.

        A relay in the same process wakes on it (other processes wake on
        PostgreSQL's ``NOTIFY``). Returns a function that removes the listener.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def _notify(self) -> None:
        for listener in tuple(self._listeners):
            listener()

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
                _STATUS_TEXT.get(m.status) or OutboxStatus(m.status).value,
                m.attempts,
                None if m.next_attempt_at is None else as_utc(m.next_attempt_at),
                m.last_error,
                as_utc(m.created_at),
                None if m.published_at is None else as_utc(m.published_at),
                m.correlation_id,
                m.causation_id,
                dumps(m.trace_context, m.message_type) if m.trace_context else "{}",
                m.aggregate_version,
                m.schema_version,
            )
            for m in messages
        ]
        for message, row in zip(messages, rows, strict=True):  # the same rules on every backend
            check_outbox_message(message, row[2])
        for row in rows:  # every message serialised and checked before any is staged
            uow.stage(self, row)
        if self._listeners and rows:
            uow.after_commit(self._notify)

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
        """Claim up to ``limit`` due messages, oldest first, keeping each stream's order.

        A claimed message is not due again for ``claim_timeout``, so
        concurrent relays never claim the same message (on PostgreSQL they
        skip each other's rows instead of waiting: ``FOR UPDATE SKIP LOCKED``).
        A message is not claimed while an earlier message of its stream is
        unpublished and not claimed with it (held by another relay, waiting
        for a retry, or dead).
        """
        return await self.mark_published_and_claim((), limit, now=now)

    async def mark_published_and_claim(
        self,
        published: Sequence[str],
        limit: int = 100,
        *,
        at: datetime | None = None,
        now: datetime | None = None,
    ) -> list[OutboxMessage]:
        """Mark ``published`` as published, then claim as :meth:`claim_batch` does,
        in one transaction (one commit where a relay would otherwise need two).

        The claim sees the marks: a message whose predecessor is among
        ``published`` can be taken. If it fails, neither happened.

        Args:
            published: Ids the broker confirmed (may be empty).
            limit: Messages claimed at most.
            at: When they were published (default: now).
            now: The claim's notion of now (default: the clock).
        """
        messages, _, _ = await self.claim_and_measure(
            published, limit, at=at, now=now, measure=False
        )
        return messages

    async def claim_and_measure(
        self,
        published: Sequence[str],
        limit: int = 100,
        *,
        at: datetime | None = None,
        now: datetime | None = None,
        measure: bool | None = None,
    ) -> tuple[list[OutboxMessage], bool, datetime | None]:
        """:meth:`mark_published_and_claim`, and the outbox lag's query in the same
        transaction (a relay's measurement without a transaction of its own). On
        PostgreSQL all of it is one statement, its own transaction: one round trip
        (see :func:`~.outbox_claim.claim_pg`).

        Args:
            measure: True: measure; None: measure if nothing was claimed (the
                relay is about to wait); False: do not.

        Returns:
            The claimed messages, whether it measured, and when the oldest
            unpublished message was written (None: none is).
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        moment = as_utc(now or utc_now())
        if self._postgres:
            return await self._claim_pg(
                published, limit, as_utc(at) if at else moment, moment, measure
            )
        oldest: datetime | None = None
        try:
            async with self._engine.begin() as conn:
                if published:
                    await conn.execute(
                        _published_for(conn.dialect.name),
                        {
                            "message_ids": list(published),
                            "published_at": as_utc(at) if at else moment,
                        },
                    )
                rows = await claim(conn, _COLUMNS, limit, moment, self._claim_timeout)
                measured = measure is True or (measure is None and not rows)
                if measured:
                    oldest = aware((await conn.execute(_OLDEST_UNPUBLISHED)).scalar())
        except DBAPIError as exc:
            raise persistence_error(exc.orig or exc, "Outbox claim failed") from exc
        return [_message(row) for row in rows], measured, oldest

    async def _claim_pg(
        self,
        published: Sequence[str],
        limit: int,
        at: datetime,
        now: datetime,
        measure: bool | None,
    ) -> tuple[list[OutboxMessage], bool, datetime | None]:
        """:meth:`claim_and_measure` on PostgreSQL: one statement, its own transaction,
        sent on the driver's connection (:func:`~.reads.fetch`): one round trip where
        ``BEGIN``, the mark, the claim's three steps, the lag's query and ``COMMIT``
        took up to seven."""
        parameters = {
            "published": list(published),
            "published_at": at,
            "now": now,
            "hidden_until": now + self._claim_timeout,
            "measure": measure is True,
            "measure_if_empty": measure is None,
        }
        try:
            rows = await fetch(self._engine, claim_pg(_PG_COLUMNS, limit, self._plan), **parameters)
        except PersistenceError as exc:
            cause = exc.__cause__ or exc
            raise persistence_error(cause, "Outbox claim failed") from cause
        first = rows[0]  # measured and oldest: the same in every row
        if first[0] is None:
            messages = []
        else:
            messages = [_message(row) for row in rows]
            self._plan = max(self._plan, plan_for(rows[-1][14]))  # ordered by id
        return messages, bool(first[17]), aware(first[18])

    async def mark_published(
        self, message_ids: Sequence[str], *, at: datetime | None = None
    ) -> None:
        if not message_ids:
            return
        await self._write(
            _published_for(self._engine.dialect.name),
            {"message_ids": list(message_ids), "published_at": as_utc(at or utc_now())},
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

    async def release(self, message_ids: Sequence[str]) -> None:
        """Give claimed messages back unpublished: they are due again at once."""
        if not message_ids:
            return
        await self._write(
            update(outbox)
            .where(
                outbox.c.message_id.in_(list(message_ids)),
                is_unpublished(),
            )
            .values(next_attempt_at=None)
        )

    async def mark_dead(self, message_id: str, error: str) -> None:
        """Record a last failed attempt: the message becomes a dead letter."""
        await self._write(
            update(outbox)
            .where(outbox.c.message_id == message_id)
            .values(
                status=OutboxStatus.DEAD.value,
                attempts=outbox.c.attempts + 1,
                last_error=error,
                next_attempt_at=None,
            )
        )

    async def dead_letters(self, *, limit: int = 100) -> list[OutboxMessage]:
        """Dead letters, oldest first."""
        statement = (
            select(*_COLUMNS)
            .where(outbox.c.status == OutboxStatus.DEAD.value, is_stuck())
            .order_by(outbox.c.id)
            .limit(limit)
        )
        return [_message(row) for row in await self._read(statement)]

    async def requeue(self, message_ids: Sequence[str] | None = None) -> int:
        """Make dead letters pending again (all of them when ``message_ids`` is None).

        Returns:
            How many were requeued (ids that are not dead letters are ignored).
        """
        statement = update(outbox).where(outbox.c.status == OutboxStatus.DEAD.value, is_stuck())
        if message_ids is not None:
            if not message_ids:
                return 0
            statement = statement.where(outbox.c.message_id.in_(list(message_ids)))
        statement = statement.values(
            status=OutboxStatus.PENDING.value, attempts=0, next_attempt_at=None
        ).returning(outbox.c.id)
        return len(await self._write(statement))

    async def oldest_unpublished_at(self) -> datetime | None:
        """When the oldest unpublished message (dead letters included) was written."""
        rows = await self._read(_OLDEST_UNPUBLISHED)
        return aware(rows[0][0]) if rows else None

    async def get(self, message_id: str) -> OutboxMessage | None:
        rows = await fetch(self._engine, _GET, message_id=message_id)
        return _message(rows[0]) if rows else None

    async def _read(self, statement: Any) -> list[Any]:
        try:
            async with self._single.connect() as conn:
                return list((await conn.execute(statement)).all())
        except DBAPIError as exc:
            raise persistence_error(exc.orig or exc, "Outbox read failed") from exc

    async def _write(self, statement: Any, parameters: dict[str, Any] | None = None) -> list[Any]:
        try:
            # One statement: on PostgreSQL its own transaction (autocommit).
            async with self._single.begin() as conn:
                result = await conn.execute(statement, parameters)
                return list(result.all()) if result.returns_rows else []
        except DBAPIError as exc:
            raise persistence_error(exc.orig or exc, "Outbox update failed") from exc

    def __repr__(self) -> str:
        return f"SQLAlchemyOutboxStore({self._engine.url.render_as_string(hide_password=True)!r})"
