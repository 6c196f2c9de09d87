"""Running a projection: catch up from the checkpoint, then follow new events live.

A batch reads the events after the projection's checkpoint by global
position (``EventStore.read_all``, the gap-safe reader: it never returns
position k+1 while k may still commit), applies them in one transaction of
the projection store, and moves the checkpoint in that same transaction with
a compare-and-set. So:

* an event's effects and the checkpoint past it commit together: a runner
  killed at any point resumes after the last committed batch, and no event
  is applied twice or skipped;
* two runners racing (a standby that took over too early, a rebuild from the
  command line) cannot both commit the same batch: the loser's
  compare-and-set fails and its transaction rolls back.

:meth:`ProjectionRunner.run` holds the projection's session (on PostgreSQL:
an advisory lock, so one runner is active and the others stand by, taking
over when it dies; ``LISTEN`` wakes it when events commit) and polls at
``poll_interval`` where no notification comes.

Telemetry: a span per batch (``projection <name>``), the counter
``cqrs.projection.events.applied``, the gauges ``cqrs.projection.lag.positions``
and ``cqrs.projection.lag`` (seconds) and the histogram
``cqrs.projection.batch.duration``, all with ``cqrs.projection.name``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import structlog
from opentelemetry.trace import Status, StatusCode

from cqrs_ddd_advanced_core.domain.exceptions import (
    EventSourcingConfigurationError,
    ProjectionError,
)
from cqrs_ddd_advanced_core.event_sourcing.upcasting import UpcastingEventStore
from cqrs_ddd_advanced_core.projections.instruments import ProjectionInstruments
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.exceptions import ConcurrencyError, CqrsDddError
from cqrs_ddd_core.telemetry.api import error_type, get_meter, get_tracer
from cqrs_ddd_core.telemetry.names import (
    ATTR_ERROR_TYPE,
    ATTR_PROJECTION_EVENTS,
    ATTR_PROJECTION_NAME,
    ATTR_PROJECTION_POSITION,
    SPAN_PROJECTION_BATCH,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from cqrs_ddd_advanced_core.event_sourcing.upcasting import UpcasterRegistry
    from cqrs_ddd_advanced_core.projections.projection import Projection
    from cqrs_ddd_core.persistence.ports import EventStore, ProjectionStore
    from cqrs_ddd_core.persistence.records import StoredEvent

__all__ = ["ProjectionRunner", "ProjectionStatus"]

_log = structlog.get_logger("cqrs_ddd_advanced_core.projections")

TTx = TypeVar("TTx")


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """Where a projection stands.

    Attributes:
        name: The projection's name.
        checkpoint: The position of the last event applied (0: none yet).
        head: The event store's latest readable position.
    """

    name: str
    checkpoint: int
    head: int

    @property
    def lag(self) -> int:
        """Events between the checkpoint and the head."""
        return max(self.head - self.checkpoint, 0)


class ProjectionRunner(Generic[TTx]):
    """Applies a projection's events in batches, exactly once per event.

    Args:
        projection: What to run.
        events: Where the events are read from (by global position).
        store: Where the checkpoint and the read model's transactions are.
        upcasters: Bring stored events to their current schema first.
        batch_size: Events per batch (one transaction each).
        poll_interval: Seconds between two looks for new events when no
            notification comes (PostgreSQL notifies; SQLite is polled).
        tracer_provider, meter_provider: Instead of the global ones.

    Raises:
        EventSourcingConfigurationError: a bad batch size or poll interval.
    """

    def __init__(
        self,
        projection: Projection[TTx],
        *,
        events: EventStore,
        store: ProjectionStore[TTx],
        upcasters: UpcasterRegistry | None = None,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise EventSourcingConfigurationError(f"batch_size must be >= 1, got {batch_size!r}")
        if not poll_interval > 0:
            raise EventSourcingConfigurationError(
                f"poll_interval must be > 0 seconds, got {poll_interval!r}"
            )
        self._projection = projection
        self._events: EventStore | UpcastingEventStore = (
            events if upcasters is None else UpcastingEventStore(events, upcasters)
        )
        self._store = store
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._tracer = get_tracer(tracer_provider)
        self._instruments = ProjectionInstruments(get_meter(meter_provider))
        self._attributes = {ATTR_PROJECTION_NAME: projection.name}
        self._span_name = SPAN_PROJECTION_BATCH.format(projection=projection.name)

    @property
    def name(self) -> str:
        """The projection's name."""
        return self._projection.name

    # -- batches ---------------------------------------------------------------

    async def run_batch(self) -> int:
        """Apply the next batch; returns how many events it read (0: caught up).

        Raises:
            ProjectionError: a handler failed (the batch rolled back; the
                checkpoint stays before the failing event).
            ConcurrencyError: another runner moved the checkpoint meanwhile
                (this batch rolled back; the next one starts from there).
            PersistenceError: the database failed (nothing of the batch kept).
        """
        started = time.perf_counter()
        with self._tracer.start_as_current_span(
            self._span_name, attributes=self._attributes, record_exception=False
        ) as span:
            try:
                position = await self._store.checkpoint(self.name)
                batch = await self._events.read_page(
                    after_position=position, limit=self._batch_size
                )
                span.set_attribute(ATTR_PROJECTION_EVENTS, len(batch))
                if batch:
                    span.set_attribute(ATTR_PROJECTION_POSITION, batch[-1].position)
                    await self._apply(batch, position)
            except (CqrsDddError, OSError) as exc:
                span.set_status(Status(StatusCode.ERROR, str(exc)))
                span.set_attribute(ATTR_ERROR_TYPE, error_type(exc))
                raise
        if batch:
            self._instruments.events_applied.add(len(batch), self._attributes)
            self._instruments.batch_duration.record(time.perf_counter() - started, self._attributes)
        await self._record_lag(batch[-1] if batch else None, position)
        return len(batch)

    async def _apply(self, batch: list[StoredEvent], position: int) -> None:
        projection = self._projection
        async with self._store.transaction() as tx:
            for event in batch:
                try:
                    await projection.apply(event, tx)
                except ProjectionError:
                    raise
                except Exception as exc:  # wrapped, even our own errors: a handler's
                    # ConcurrencyError must not pass for a lost checkpoint race
                    raise ProjectionError(
                        f"{type(exc).__name__}: {exc}",
                        projection=projection.name,
                        position=event.position,
                        event_type=event.event_type,
                    ) from exc
            await self._store.advance(
                tx, projection.name, expected=position, position=batch[-1].position
            )

    async def _record_lag(self, last: StoredEvent | None, previous: int) -> None:
        head = await self._events.latest_position()
        checkpoint = last.position if last is not None else previous
        behind = max(head - checkpoint, 0)
        self._instruments.lag_positions.set(behind, self._attributes)
        if behind == 0:
            self._instruments.lag_seconds.set(0.0, self._attributes)
        elif last is not None:
            age = (utc_now() - last.occurred_at).total_seconds()
            self._instruments.lag_seconds.set(max(age, 0.0), self._attributes)

    async def catch_up(self) -> int:
        """Run batches until none is left; returns the events read.

        A batch that lost a race with another runner is retried from the
        checkpoint that runner committed.
        """
        total = 0
        while True:
            try:
                count = await self.run_batch()
            except ConcurrencyError as exc:
                _log.info("projection_checkpoint_moved", projection=self.name, error=str(exc))
                continue
            total += count
            if count < self._batch_size:
                return total

    async def rebuild(self) -> int:
        """Clear the read model and set the checkpoint to 0 (one transaction),
        then catch up from the first event; returns the events applied.

        Run it where no other runner of the projection is active (the
        command line takes the projection's session first).
        """
        async with self._store.transaction() as tx:
            await self._projection.reset(tx)
            await self._store.reset(tx, self.name)
        return await self.catch_up()

    async def status(self) -> ProjectionStatus:
        """The projection's checkpoint and the head it is measured against."""
        return ProjectionStatus(
            name=self.name,
            checkpoint=await self._store.checkpoint(self.name),
            head=await self._events.latest_position(),
        )

    # -- live --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, *, retry_delay: float = 1.0) -> None:
        """Follow the events until ``stop`` is set.

        Takes the projection's session (waiting as a standby while another
        runner holds it), catches up, then waits for notifications or polls.
        A failure (the database, a handler) is logged and retried after
        ``retry_delay`` seconds with a new session; the checkpoint makes the
        retry exact.
        """
        while not stop.is_set():
            try:
                await self._run_session(stop)
            except (CqrsDddError, OSError) as exc:
                _log.error(
                    "projection_runner_failed",
                    projection=self.name,
                    error_type=error_type(exc),
                    error=str(exc),
                )
                await _wait(stop, retry_delay)

    async def _run_session(self, stop: asyncio.Event) -> None:
        async with self._store.session(self.name) as session:
            if not await _unless_stopped(stop, session.acquire()):
                return  # stopped while standing by
            _log.info("projection_runner_active", projection=self.name)
            while not stop.is_set() and session.active:
                await self.catch_up()
                if stop.is_set():
                    return
                await _unless_stopped(stop, session.wait_for_events(self._poll_interval))

    def __repr__(self) -> str:
        return (
            f"ProjectionRunner({self._projection!r}, store={self._store!r}, "
            f"batch_size={self._batch_size})"
        )


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _unless_stopped(stop: asyncio.Event, work: Coroutine[Any, Any, None]) -> bool:
    """Run ``work`` until it ends (True) or ``stop`` is set first (False: it is cancelled)."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return False
    task.result()  # raise what it raised
    return True
