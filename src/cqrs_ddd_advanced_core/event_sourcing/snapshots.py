"""Snapshots of event-sourced aggregates: when to take one, and taking it.

A snapshot is the aggregate's state at one version of its stream. Loading
reads the latest snapshot and only the events after it
(:class:`~cqrs_ddd_advanced_core.event_sourcing.EventSourcedRepository`).

**When they are written: after commit, in a transaction of their own.** A
snapshot is a cache of the stream; the events are the truth. Writing it in
the command's transaction would make every N-th command larger, put a
second table in the hot flush path, and could fail a command for the sake
of a cache. Written after the events committed, a lost snapshot (a crash
between the two, a failed write) costs only a longer replay next time, and
a snapshot never describes events that rolled back. The write runs in the
unit of work's ``after_commit`` hook, so it adds one write to the command
that crossed the threshold, never to the others; a failure is logged, never
raised.

**Policy**: :class:`EveryNEvents` (a snapshot each time the version crosses
a multiple of N), or any callable ``policy(aggregate, previous_version) ->
bool``.

**Schema version**: the aggregate class's ``snapshot_schema_version``
(default 1) is stored with the snapshot. Change the class's fields? Bump
it: older snapshots are then ignored and the stream is replayed in full
(and a new snapshot is taken when the policy next says so). A snapshot that
no longer validates against the class is ignored the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from pydantic import ValidationError

from cqrs_ddd_advanced_core.domain.exceptions import EventSourcingConfigurationError
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.exceptions import CqrsDddError
from cqrs_ddd_core.persistence.records import Snapshot

if TYPE_CHECKING:
    from cqrs_ddd_advanced_core.event_sourcing.aggregate import EventSourcedAggregate
    from cqrs_ddd_core.persistence.ports import SnapshotStore

__all__ = [
    "EveryNEvents",
    "SnapshotPolicy",
    "restore_snapshot",
    "take_snapshot",
]

_log = structlog.get_logger("cqrs_ddd_advanced_core.snapshots")

TAggregate = TypeVar("TAggregate", bound="EventSourcedAggregate")

SnapshotPolicy = Callable[["EventSourcedAggregate", int], bool]
"""``policy(aggregate, previous_version)``: snapshot ``aggregate`` (now at
``aggregate.version``, committed) whose last load or snapshot was at
``previous_version``?"""


class EveryNEvents:
    """Snapshot each time the stream's version crosses a multiple of ``n``.

    A command that takes a stream from version 98 to 103 crosses 100, so it
    is snapshotted even though no event had version 100 exactly.

    Args:
        n: The interval, in events (>= 1).

    Raises:
        EventSourcingConfigurationError: ``n`` is not a positive int.
    """

    __slots__ = ("_n",)

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise EventSourcingConfigurationError(f"EveryNEvents needs an int n >= 1, got {n!r}")
        self._n = n

    @property
    def n(self) -> int:
        """The interval, in events."""
        return self._n

    def __call__(self, aggregate: EventSourcedAggregate, previous_version: int) -> bool:
        return aggregate.version // self._n > previous_version // self._n

    def __repr__(self) -> str:
        return f"EveryNEvents({self._n})"


def _state(aggregate: EventSourcedAggregate) -> dict[str, Any]:
    return aggregate.model_dump(mode="json")


async def take_snapshot(store: SnapshotStore, aggregate: EventSourcedAggregate) -> bool:
    """Store ``aggregate``'s state at its version; False if not stored.

    Never raises for a storage or serialisation failure: it is logged (a
    snapshot is a cache; the stream stays the truth).
    """
    aggregate_type = aggregate.type_name()
    try:
        snapshot = Snapshot(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate.id,
            version=aggregate.version,
            schema_version=type(aggregate).snapshot_schema_version,
            state=_state(aggregate),
            created_at=utc_now(),
        )
        return await store.save(snapshot)
    except (CqrsDddError, ValueError, TypeError, AttributeError) as exc:
        _log.warning(
            "snapshot_not_written",
            aggregate_type=aggregate_type,
            aggregate_id=aggregate.id,
            version=aggregate.version,
            error_type=type(exc).__name__,
            error=str(exc),
        )
        return False


def restore_snapshot(
    aggregate_cls: type[TAggregate], snapshot: Snapshot | None
) -> TAggregate | None:
    """The aggregate ``snapshot`` holds, or ``None`` when it cannot be trusted.

    ``None`` for no snapshot, another schema version than the class's
    ``snapshot_schema_version``, or a state that no longer validates (each
    logged): the caller replays the whole stream instead.
    """
    if snapshot is None:
        return None
    expected = aggregate_cls.snapshot_schema_version
    if snapshot.schema_version != expected:
        _log.info(
            "snapshot_ignored",
            reason="schema_version",
            aggregate_type=snapshot.aggregate_type,
            aggregate_id=snapshot.aggregate_id,
            stored_schema_version=snapshot.schema_version,
            schema_version=expected,
        )
        return None
    try:
        aggregate = aggregate_cls.model_validate(
            {**snapshot.state, "id": snapshot.aggregate_id, "version": snapshot.version}
        )
    except ValidationError as exc:
        _log.warning(
            "snapshot_ignored",
            reason="invalid_state",
            aggregate_type=snapshot.aggregate_type,
            aggregate_id=snapshot.aggregate_id,
            error=str(exc),
        )
        return None
    return aggregate
