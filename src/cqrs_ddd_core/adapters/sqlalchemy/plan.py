"""What one commit writes, gathered per table from the staged records.

The stores stage plain records on the unit of work. At commit the unit of
work hands each store its records (``add_to_plan``) and the stores add rows
to one :class:`FlushPlan`; the dialect's flush (:mod:`.sqlite`,
:mod:`.postgres`) then writes each table with one statement.

Checks that need no database happen here, before anything is sent: two
appends to one stream in one unit of work must follow on from each other
(``expected_version`` of the second = the head left by the first), and so
must two saves of one aggregate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from cqrs_ddd_core.exceptions import ConcurrencyError
from cqrs_ddd_core.persistence.records import stream_name

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from cqrs_ddd_core.persistence.serialization import PendingEvent

__all__ = [
    "AUDIT_COLUMNS",
    "OUTBOX_COLUMNS",
    "FlushPlan",
    "SqlWriter",
    "StateWrite",
    "StreamAppend",
    "as_utc",
]

OUTBOX_COLUMNS = (
    "message_id",
    "message_type",
    "payload",
    "aggregate_type",
    "aggregate_id",
    "status",
    "attempts",
    "next_attempt_at",
    "last_error",
    "created_at",
    "published_at",
    "correlation_id",
    "causation_id",
    "trace_context",
    "aggregate_version",
    "schema_version",
)
"""The order of the values in an outbox row of the plan (JSON already as text)."""

AUDIT_COLUMNS = (
    "audit_id",
    "message_id",
    "message_type",
    "correlation_id",
    "causation_id",
    "actor",
    "outcome",
    "error_type",
    "started_at",
    "duration_ms",
    "metadata",
)
"""The order of the values in an audit row of the plan (JSON already as text)."""


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (a naive one is taken to be UTC already)."""
    tz = value.tzinfo
    if tz is UTC:
        return value
    if tz is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@runtime_checkable
class SqlWriter(Protocol):
    """What a SQL store offers the unit of work it stages records on."""

    @property
    def engine(self) -> AsyncEngine: ...

    def add_to_plan(self, plan: FlushPlan, records: list[Any]) -> None:
        """Add the rows for ``records`` (as staged, in order) to ``plan``."""
        ...


@dataclass(slots=True)
class StreamAppend:
    """The events appended to one stream in one commit."""

    aggregate_type: str
    aggregate_id: str
    expected_version: int
    head: int  # the version after the last staged event

    @property
    def stream(self) -> str:
        return stream_name(self.aggregate_type, self.aggregate_id)


@dataclass(slots=True)
class StateWrite:
    """The state row of one aggregate, as the commit leaves it."""

    aggregate_type: str
    aggregate_id: str
    expected_version: int  # 0: the row must not exist yet
    version: int
    state_json: str

    @property
    def stream(self) -> str:
        return stream_name(self.aggregate_type, self.aggregate_id)


@dataclass(slots=True)
class FlushPlan:
    """Every row one commit writes, grouped by table, in staging order."""

    streams: dict[tuple[str, str], StreamAppend] = field(default_factory=dict)
    events: list[PendingEvent] = field(default_factory=list)
    outbox: list[tuple[Any, ...]] = field(default_factory=list)
    audit: list[tuple[Any, ...]] = field(default_factory=list)
    states: dict[tuple[str, str], StateWrite] = field(default_factory=dict)

    def add_events(
        self,
        aggregate_type: str,
        aggregate_id: str,
        expected_version: int,
        pending: list[PendingEvent],
    ) -> None:
        key = (aggregate_type, aggregate_id)
        append = self.streams.get(key)
        if append is None:
            self.streams[key] = StreamAppend(
                aggregate_type, aggregate_id, expected_version, expected_version + len(pending)
            )
        elif append.head != expected_version:
            raise ConcurrencyError(append.stream, expected_version, append.head)
        else:
            append.head += len(pending)
        self.events.extend(pending)

    def replay_verdict(
        self, stored: Mapping[str, tuple[str, str]]
    ) -> Literal["replayed"] | StreamAppend | None:
        """What the stored streams of this plan's event ids say after a clash.

        ``stored`` maps each of the plan's event ids that is stored to the
        stream holding it. Returns ``"replayed"`` when every id is stored, each
        in the stream this plan appends it to (the unit of work committed
        before); the append of a stream whose ids are only partly stored
        (another unit of work holds them: a conflict on that stream); ``None``
        when none is stored, one is stored in another stream (a duplicate id,
        not a replay) or the plan has no events. The same rule on every SQL
        backend; each looks the ids up its own way.
        """
        if not stored:
            return None
        partial: tuple[str, str] | None = None
        for event in self.events:
            stream = stored.get(event.event_id)
            if stream is None:
                partial = partial or (event.aggregate_type, event.aggregate_id)
            elif stream != (event.aggregate_type, event.aggregate_id):
                return None
        if partial is None:
            return "replayed"
        for event in self.events:  # name a stream whose ids are partly stored
            if event.event_id in stored:
                partial = (event.aggregate_type, event.aggregate_id)
                break
        return self.streams[partial]

    def add_state(
        self,
        aggregate_type: str,
        aggregate_id: str,
        expected_version: int,
        version: int,
        state_json: str,
    ) -> None:
        key = (aggregate_type, aggregate_id)
        write = self.states.get(key)
        if write is None:
            self.states[key] = StateWrite(
                aggregate_type, aggregate_id, expected_version, version, state_json
            )
        elif write.version != expected_version:
            raise ConcurrencyError(write.stream, expected_version, write.version)
        else:
            write.version = version
            write.state_json = state_json

    @property
    def state_inserts(self) -> list[StateWrite]:
        return [w for w in self.states.values() if w.expected_version == 0]

    @property
    def state_updates(self) -> list[StateWrite]:
        return [w for w in self.states.values() if w.expected_version != 0]

    @property
    def is_empty(self) -> bool:
        return not (self.events or self.outbox or self.audit or self.states)
