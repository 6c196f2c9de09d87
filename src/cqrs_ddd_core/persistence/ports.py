"""The persistence ports: what the pipeline needs from storage.

Adapters (``cqrs_ddd_core.adapters.memory``, ``cqrs_ddd_core.adapters.sqlalchemy``)
implement these; nothing here imports an adapter.

Writes are *staged* on the unit of work and reach storage when it commits,
in as few round trips as the adapter can manage. A store method that takes
``uow=None`` uses the unit of work of the dispatch running in the task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

from cqrs_ddd_core.domain.aggregate import AggregateRoot
from cqrs_ddd_core.domain.messages import DomainEvent
from cqrs_ddd_core.persistence.reading import DEFAULT_PAGE_SIZE, EventPages
from cqrs_ddd_core.persistence.records import (
    AuditRecord,
    OutboxMessage,
    Snapshot,
    StepTiming,
    StoredEvent,
)

__all__ = [
    "AfterHook",
    "AuditStore",
    "EventStore",
    "InboxStore",
    "InboxTransaction",
    "OutboxStore",
    "ProjectionSession",
    "ProjectionStore",
    "SnapshotStore",
    "StateRepository",
    "UnitOfWork",
    "UnitOfWorkFactory",
]

AfterHook = Callable[[], Awaitable[None]]
TAggregate = TypeVar("TAggregate", bound=AggregateRoot)
TTransaction = TypeVar("TTransaction")


@runtime_checkable
class UnitOfWork(Protocol):
    """One transaction: staged writes that commit together or not at all.

    Attributes:
        timings: The steps measured at commit (filled by :meth:`commit`).
    """

    timings: list[StepTiming]

    @property
    def is_open(self) -> bool: ...

    def open_slot(self) -> list[tuple[Any, Any]]:
        """Reserve a place in the write order, to fill later.

        A middleware that persists what its handler produced reserves the slot
        *before* calling the handler, so a parent's writes precede those of
        commands it causes, whatever order they finish in.
        """
        ...

    def stage(self, writer: Any, record: Any, slot: list[tuple[Any, Any]] | None = None) -> None:
        """Queue ``record`` for ``writer`` (a store of the same adapter)."""
        ...

    def savepoint(self) -> int:
        """A mark in the staged writes."""
        ...

    def rollback_to_savepoint(self, mark: int) -> None:
        """Forget the writes staged since ``mark`` (a failed nested command's)."""
        ...

    def after_commit(self, hook: AfterHook) -> None:
        """Run ``hook`` once the transaction has committed."""
        ...

    def after_rollback(self, hook: AfterHook) -> None:
        """Run ``hook`` once the transaction has rolled back."""
        ...

    async def commit(self) -> None:
        """Write everything staged and commit; on any failure roll back and re-raise."""
        ...

    async def rollback(self) -> None:
        """Discard everything staged (a no-op once committed or rolled back)."""
        ...


UnitOfWorkFactory = Callable[[], UnitOfWork]


class EventStore(Protocol):
    """Append-only storage of event streams, one stream per aggregate."""

    async def append(
        self,
        aggregate_type: str,
        aggregate_id: str,
        events: Sequence[DomainEvent],
        *,
        expected_version: int,
        uow: UnitOfWork | None = None,
    ) -> None:
        """Stage ``events`` as versions ``expected_version + 1 ...`` of the stream.

        Raises:
            SerializationError: a payload cannot be stored (nothing is staged).
            ConcurrencyError: at commit, when the stream is not at ``expected_version``.
        """
        ...

    async def load_stream(
        self, aggregate_type: str, aggregate_id: str, *, from_version: int = 1
    ) -> list[StoredEvent]:
        """The committed events of one stream, by version."""
        ...

    def read_all(
        self,
        *,
        after_position: int = 0,
        limit: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> EventPages:
        """Every committed event with a position above ``after_position``, by position.

        Nothing is cut off unless ``limit`` says so: ``async for`` over the
        result fetches ``page_size`` events at a time; ``await`` it for a list.
        A reader never sees position k+1 while k may still commit.
        """
        ...

    async def read_page(self, *, after_position: int = 0, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` committed events above ``after_position``, by position.

        One round trip; a short page means nothing more is visible now.
        """
        ...

    async def latest_position(self) -> int:
        """The highest committed position, 0 when the store is empty."""
        ...


class OutboxStore(Protocol):
    """Messages written with the transaction, published after it."""

    async def enqueue(
        self, messages: Sequence[OutboxMessage], *, uow: UnitOfWork | None = None
    ) -> None:
        """Stage ``messages`` in the unit of work."""
        ...

    async def claim_batch(
        self, limit: int = 100, *, now: datetime | None = None
    ) -> list[OutboxMessage]:
        """Pending messages due at ``now``, oldest first, claimed for this worker."""
        ...

    async def mark_published(
        self, message_ids: Sequence[str], *, at: datetime | None = None
    ) -> None:
        """Record that the broker accepted these messages."""
        ...

    async def mark_failed(self, message_id: str, error: str, *, next_attempt_at: datetime) -> None:
        """Record a failed attempt; the message is retried at ``next_attempt_at``."""
        ...

    async def release(self, message_ids: Sequence[str]) -> None:
        """Give claimed messages back unpublished (due again at once)."""
        ...

    async def mark_dead(self, message_id: str, error: str) -> None:
        """Record a last failed attempt: the message becomes a dead letter
        (kept, not retried, its stream's later messages held back)."""
        ...

    async def dead_letters(self, *, limit: int = 100) -> list[OutboxMessage]:
        """Dead letters, oldest first."""
        ...

    async def requeue(self, message_ids: Sequence[str] | None = None) -> int:
        """Make dead letters pending again (all when ``message_ids`` is None); returns how many."""
        ...

    async def oldest_unpublished_at(self) -> datetime | None:
        """When the oldest unpublished message was written (the outbox lag's start)."""
        ...

    def add_commit_listener(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener()`` after each commit in this process that wrote messages;
        returns a function that removes it."""
        ...

    async def get(self, message_id: str) -> OutboxMessage | None:
        """One message by id, whatever its status."""
        ...


class InboxTransaction(Protocol):
    """One consumer transaction: the inbox row and the handler's effects commit together.

    Attributes:
        connection: What the handler writes its effects with, in this
            transaction: for the SQLAlchemy adapter an ``AsyncConnection``;
            ``None`` in memory (use :meth:`after_commit`).
    """

    connection: Any

    async def record(self, consumer: str, message_id: str, message_type: str) -> bool:
        """Record that ``consumer`` handles ``message_id``; False if it already did
        (a redelivery: the caller rolls back and acknowledges)."""
        ...

    async def record_many(self, consumer: str, messages: Sequence[tuple[str, str]]) -> set[str]:
        """Record several ``(message_id, message_type)`` pairs in this transaction (a
        consumer's batch of deliveries); returns the ids that were not handled before.

        Broker-neutral: one round trip where the database allows it. A consumer
        that finds a transaction without it calls :meth:`record` per message.
        """
        ...

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook()`` once the transaction has committed."""
        ...

    async def commit(self) -> None:
        """Commit the inbox row and the effects; raises if the outcome is not committed."""
        ...

    async def rollback(self) -> None:
        """Discard everything (a no-op once committed or rolled back)."""
        ...


class InboxStore(Protocol):
    """Which messages each consumer has handled (effects exactly once under redelivery)."""

    async def begin(self) -> InboxTransaction:
        """Open a transaction for one delivery."""
        ...

    async def has_handled(self, consumer: str, message_id: str) -> bool:
        """Whether ``consumer`` committed the handling of ``message_id``."""
        ...


class AuditStore(Protocol):
    """Audit trail of dispatched commands."""

    async def stage(self, record: AuditRecord, uow: UnitOfWork) -> None:
        """Write ``record`` with the unit of work (it rolls back with it)."""
        ...

    async def write(self, record: AuditRecord) -> None:
        """Write ``record`` in a transaction of its own, now."""
        ...

    async def list_records(self, *, correlation_id: str | None = None) -> list[AuditRecord]:
        """Stored records, oldest first."""
        ...


class StateRepository(Protocol[TAggregate]):
    """State-stored aggregates with optimistic locking on ``version``."""

    async def get(self, aggregate_id: str, *, uow: UnitOfWork | None = None) -> TAggregate:
        """Load an aggregate; raises ``RecordNotFoundError`` when absent."""
        ...

    async def find(self, aggregate_id: str, *, uow: UnitOfWork | None = None) -> TAggregate | None:
        """Load an aggregate or return None."""
        ...

    def save(self, aggregate: TAggregate, *, uow: UnitOfWork | None = None) -> None:
        """Stage the aggregate's state; at commit the stored version must still be
        the version it was loaded at, else ``ConcurrencyError``."""
        ...


class SnapshotStore(Protocol):
    """The latest snapshot of each event-sourced aggregate.

    Snapshots are written in a transaction of their own, after the events
    they summarise have committed (they are a cache of the stream).
    """

    async def save(self, snapshot: Snapshot) -> bool:
        """Keep ``snapshot`` unless a snapshot at a higher version is stored.

        Returns:
            Whether it was stored.
        """
        ...

    async def latest(self, aggregate_type: str, aggregate_id: str) -> Snapshot | None:
        """The stream's latest snapshot, or ``None``."""
        ...

    async def delete(self, aggregate_type: str, aggregate_id: str) -> None:
        """Forget the stream's snapshot (the next load replays the stream)."""
        ...


class ProjectionSession(Protocol):
    """A projection runner's hold on its projection, and its wake-up call.

    On PostgreSQL one runner of a projection is active at a time (an
    advisory lock held by the session's connection) and new events wake it
    (``LISTEN``); elsewhere every runner is active and wakes by polling.
    """

    @property
    def active(self) -> bool:
        """True while this runner holds the projection (False once its hold is lost)."""
        ...

    async def acquire(self) -> None:
        """Return once this runner is the projection's active one (waits in
        short polls; cancel it to give up)."""
        ...

    async def wait_for_events(self, seconds: float) -> None:
        """Return when new events may have been committed, or after ``seconds``."""
        ...


class ProjectionStore(Protocol[TTransaction]):
    """Where projections keep their checkpoints, in their read model's transactions.

    ``TTransaction`` is what a projection's handlers write through (a
    SQLAlchemy ``AsyncConnection`` for the SQL store): the checkpoint is
    moved in that same transaction, so an event's effects and the checkpoint
    past it commit together or not at all.
    """

    def transaction(self) -> AbstractAsyncContextManager[TTransaction]:
        """A transaction: committed when the block ends, rolled back if it raises."""
        ...

    async def checkpoint(self, name: str) -> int:
        """The committed position of projection ``name`` (0 before its first batch)."""
        ...

    async def checkpoints(self) -> dict[str, int]:
        """Every projection's committed position, by name."""
        ...

    async def advance(self, tx: TTransaction, name: str, *, expected: int, position: int) -> None:
        """Move ``name``'s checkpoint from ``expected`` to ``position`` in ``tx``.

        Raises:
            ConcurrencyError: the checkpoint is no longer at ``expected``
                (another runner moved it); ``tx`` must roll back.
        """
        ...

    async def reset(self, tx: TTransaction, name: str) -> None:
        """Set ``name``'s checkpoint back to 0 in ``tx`` (a rebuild)."""
        ...

    def session(self, name: str) -> AbstractAsyncContextManager[ProjectionSession]:
        """A runner's session for projection ``name`` (see :class:`ProjectionSession`)."""
        ...
