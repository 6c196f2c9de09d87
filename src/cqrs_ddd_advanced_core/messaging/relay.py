"""The outbox relay: carries committed outbox messages to the broker, stream by stream.

::

    commit -> outbox row -> relay (wakes on commit, claims a batch, publishes
    each stream's messages in order, each confirmed) -> broker

* **Wakes on commit**: after a commit in this process (the store's commit
  listeners), on PostgreSQL ``NOTIFY`` from any process (a
  :class:`~.ports.CommitListener`), and otherwise every ``poll_interval``.
  A published batch is marked by the next claim: at the next wake-up, or
  ``mark_delay`` later at the latest.
* **Order**: the store's claim never hands out a message while an earlier one
  of its stream is unpublished; within a batch one stream's messages are
  published one after the other, each awaited until the broker confirmed it,
  while different streams go concurrently. If one fails, the rest of its
  stream is given back and waits behind it.
* **Several relays** on one PostgreSQL database claim disjoint batches
  (``FOR UPDATE SKIP LOCKED``); a batch is published well within the claim
  timeout (``publish_deadline``), so no other relay takes it over meanwhile.
  Delivery is at least once: a relay killed between the confirm and marking
  the message published publishes it again; consumers deduplicate (inbox).
* **Failures**: a failed publish is retried after an exponential backoff;
  after ``max_attempts`` the message becomes a dead letter (see
  ``cqrs-ddd outbox dead-letters`` / ``requeue``). An upcaster that raises
  (``EventSchemaVersionError``: no upcasting path) fails the attempt the
  same way: nothing of a wrong shape is published, the row is kept.
* **Schemas**: ``upcaster=UpcasterRegistry.upcast_message`` (bound to the
  registry) publishes each message at its type's current schema version,
  upcast from the ``schema_version`` its row was written at; the row is
  never changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from cqrs_ddd_advanced_core.messaging.telemetry import MessagingInstruments, observe_lag
from cqrs_ddd_advanced_core.outbox.service import Backoff, BatchResult
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.telemetry.api import get_meter

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

    from cqrs_ddd_advanced_core.messaging.ports import CommitListener, Publisher
    from cqrs_ddd_core.persistence.ports import OutboxStore
    from cqrs_ddd_core.persistence.records import OutboxMessage

__all__ = ["OutboxRelay", "Upcaster"]

_log = structlog.get_logger("cqrs_ddd_advanced_core.messaging")

_LAG_EVERY = 1.0  # seconds between two lag measurements while batches run back to back

Upcaster = Callable[["OutboxMessage"], "OutboxMessage"]
"""Brings an outbox message's payload to the current schema before it is published.

:meth:`~cqrs_ddd_advanced_core.event_sourcing.UpcasterRegistry.upcast_message`
is one. Return a copy (never change the claimed message's payload in place),
with ``payload_json=None`` when the payload changed: publishers send
``payload_json`` when it is set."""


class OutboxRelay:
    """Publishes the outbox to a broker.

    Args:
        outbox_store: The outbox (its claims keep each stream's order).
        publisher: The broker (``await publish(message)`` returns once confirmed).
        batch_size: Messages claimed per batch.
        max_attempts: Failed publishes before a message becomes a dead letter.
        backoff: Delay before retrying a failed message.
        poll_interval: Seconds between looks at the outbox when nothing woke the relay.
        mark_delay: Seconds a published batch waits for a commit to wake the relay,
            so that the claim that follows marks it (one statement instead of
            two); then it is marked, and the outbox looked at, anyway. 0: look
            again at once after every batch.
        listener: Wakes the relay on commits of other processes (PostgreSQL ``LISTEN``).
        publish_deadline: Seconds a batch may take before its unpublished rest is
            given back; default: a third of the store's claim timeout.
        upcaster: Applied to every message before it is published: the one
            place where event-schema upcasting plugs into the relay
            (``registry.upcast_message``). If it raises, the attempt fails.
        meter_provider: Metrics go there (default: the global provider).
        clock: The current time.
    """

    def __init__(
        self,
        outbox_store: OutboxStore,
        publisher: Publisher,
        *,
        batch_size: int = 200,
        max_attempts: int = 10,
        backoff: Backoff | None = None,
        poll_interval: float = 1.0,
        mark_delay: float = 0.05,
        listener: CommitListener | None = None,
        publish_deadline: float | None = None,
        upcaster: Upcaster | None = None,
        meter_provider: MeterProvider | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval}")
        if mark_delay < 0:
            raise ValueError(f"mark_delay must not be negative, got {mark_delay}")
        if not callable(getattr(publisher, "publish", None)):
            raise TypeError(f"publisher must have an async publish(message), got {publisher!r}")
        claim_timeout = getattr(outbox_store, "claim_timeout", None)
        if publish_deadline is None:
            publish_deadline = 10.0 if claim_timeout is None else claim_timeout.total_seconds() / 3
        if publish_deadline <= 0:
            raise ValueError(f"publish_deadline must be positive, got {publish_deadline}")
        self._store = outbox_store
        self._mark_and_claim = getattr(outbox_store, "mark_published_and_claim", None)
        # A store that measures the lag in its claim's transaction saves one per wait.
        self._claim_and_measure = getattr(outbox_store, "claim_and_measure", None)
        self._publisher = publisher
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._backoff = Backoff() if backoff is None else backoff
        self._poll_interval = poll_interval
        self._mark_delay = min(mark_delay, poll_interval)
        self._listener = listener
        self._deadline = publish_deadline
        self._upcaster = upcaster
        self._clock = clock
        meter = get_meter(meter_provider)
        self._instruments = MessagingInstruments(meter)
        self._lag: float | None = None
        self._lag_measured = float("-inf")
        observe_lag(meter, lambda: self._lag)
        self._wake = asyncio.Event()

    @property
    def lag(self) -> float | None:
        """The outbox lag in seconds as last measured (None before the first batch)."""
        return self._lag

    def wake(self) -> None:
        """Look at the outbox now (called on commit)."""
        self._wake.set()

    async def run_once(self) -> BatchResult:
        """Claim one batch and publish it; measure the lag (after an empty claim, or a
        second after the last measurement; after an empty claim, in the claim's
        transaction when the store has ``claim_and_measure``)."""
        return await self._deliver(await self._claim(()), mark=True)

    async def _claim(self, published: Sequence[str]) -> tuple[list[OutboxMessage], float]:
        """Mark ``published`` (confirmed before) and claim the next batch: in one
        transaction when the store can (``mark_published_and_claim``)."""
        now = self._clock()
        if self._claim_and_measure is not None:
            # The store measures when the claim comes back empty (the relay is about to
            # wait): no transaction of its own for the measurement a wait needs.
            batch, measured, oldest = await self._claim_and_measure(
                published, self._batch_size, at=now, now=now, measure=None
            )
            if measured:
                self._lag_measured = time.monotonic()
                self._lag = 0.0 if oldest is None else max((now - oldest).total_seconds(), 0.0)
        elif published and self._mark_and_claim is not None:
            batch = await self._mark_and_claim(published, self._batch_size, at=now, now=now)
        else:
            if published:
                await self._store.mark_published(published, at=now)
            batch = await self._store.claim_batch(self._batch_size, now=now)
        return batch, time.monotonic() + self._deadline

    async def _deliver(
        self, claimed: tuple[list[OutboxMessage], float], *, mark: bool
    ) -> BatchResult:
        """Publish a batch; with ``mark``, mark what was confirmed published now (else
        the caller marks it with its next claim)."""
        batch, deadline = claimed
        result = BatchResult()
        if batch:
            streams: dict[object, list[OutboxMessage]] = {}
            for message in batch:
                key = (
                    (message.aggregate_type, message.aggregate_id)
                    if message.aggregate_id is not None
                    else message.message_id
                )
                streams.setdefault(key, []).append(message)
            given_back: list[str] = []
            await self._publish_streams(list(streams.values()), deadline, result, given_back)
            if mark and result.published:
                await self._store.mark_published(result.published, at=self._clock())
            if given_back:
                await self._store.release(given_back)
        elif self._claim_and_measure is None:
            self._lag_measured = float("-inf")  # nothing claimed: measure now
        await self._measure_lag()
        return result

    async def _publish_streams(
        self,
        streams: list[list[OutboxMessage]],
        deadline: float,
        result: BatchResult,
        given_back: list[str],
    ) -> None:
        """Publish each stream in a task of its own, all bounded by one timer for the
        batch (``deadline``): past it, a stream still publishing has the publish in
        flight cut, which counts as that message's failure, and the rest given back.

        One timer, not an ``asyncio.timeout`` per stream nor ``asyncio.gather``:
        with a few messages per batch, those were a tenth of the relay's
        instructions per message. If this task is cancelled, so are the streams."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            for messages in streams:
                given_back.extend(m.message_id for m in messages)
            return
        cut = _Cut()
        tasks = [
            asyncio.ensure_future(self._publish_stream(messages, cut, result, given_back))
            for messages in streams
        ]
        timer = asyncio.get_running_loop().call_later(remaining, cut.fire)
        error: BaseException | None = None
        try:
            for task in tasks:
                try:
                    await task
                except Exception as exc:  # as gather: the first error, once all are done
                    error = error or exc
        except BaseException:  # cancelled: the streams are cancelled too
            for task in tasks:
                task.cancel()
            raise
        finally:
            timer.cancel()
        if error is not None:
            raise error

    async def _publish_stream(
        self,
        messages: Sequence[OutboxMessage],
        cut: _Cut,
        result: BatchResult,
        given_back: list[str],
    ) -> None:
        publish, record = self._publisher.publish, self._instruments.publish_duration.record
        upcaster = self._upcaster
        sent = 0
        failure: Exception | None = None
        task = asyncio.current_task()
        assert task is not None
        if cut.fired:  # the deadline passed before this stream began
            given_back.extend(m.message_id for m in messages)
            return
        cut.publishing.add(task)
        try:
            for message in messages:
                start = time.perf_counter()
                await publish(message if upcaster is None else _upcast(upcaster, message))
                record(time.perf_counter() - start)
                result.published.append(message.message_id)
                sent += 1
        except asyncio.CancelledError:
            if task not in cut.cut or task.uncancel() > 0:
                raise  # cancelled from outside, not (only) by the batch's deadline
            failure = TimeoutError(f"publish deadline passed ({len(messages)} messages)")
        except Exception as exc:
            failure = exc
        finally:
            cut.publishing.discard(task)  # from here on the deadline leaves this stream be
            if sent:
                self._instruments.sent.add(sent)
        if failure is not None:
            if sent == len(messages):  # all were confirmed
                raise failure
            failed = messages[sent]
            await self._failed(failed, failure)
            result.failed.append(failed.message_id)
            given_back.extend(m.message_id for m in messages[sent + 1 :])

    async def _failed(self, message: OutboxMessage, exc: Exception) -> None:
        attempt = message.attempts + 1
        error = f"{type(exc).__name__}: {exc}"
        if attempt >= self._max_attempts:
            await self._store.mark_dead(message.message_id, error)
            self._instruments.outbox_dead_lettered.add(1)
            _log.error(
                "outbox_message_dead_lettered",
                message_id=message.message_id,
                message_type=message.message_type,
                attempts=attempt,
                error_type=type(exc).__name__,
            )
            return
        next_attempt_at = self._clock() + self._backoff.delay(attempt)
        await self._store.mark_failed(message.message_id, error, next_attempt_at=next_attempt_at)
        _log.warning(
            "outbox_publish_failed",
            message_id=message.message_id,
            message_type=message.message_type,
            attempt=attempt,
            error_type=type(exc).__name__,
            next_attempt_at=next_attempt_at.isoformat(),
        )

    async def _measure_lag(self) -> None:
        # At most once a second (a query), and whenever the outbox looked empty.
        now = time.monotonic()
        if self._lag is not None and now - self._lag_measured < _LAG_EVERY:
            return
        self._lag_measured = now
        oldest = await self._store.oldest_unpublished_at()
        self._lag = 0.0 if oldest is None else max((self._clock() - oldest).total_seconds(), 0.0)

    async def run(self, stop_event: asyncio.Event) -> None:
        """Publish until ``stop_event`` is set: batches back to back while commits come,
        then wait for a commit (or ``poll_interval``).

        While a full batch is being published the next one is claimed already
        (the database works while the broker confirms; after a batch that was
        not full, the outbox held no more, and the next claim follows it). Its
        claim keeps every stream's order as any claim does: a message whose
        predecessor is in the batch being published is given back, and taken
        once that one is marked. A
        batch's messages are marked published once all its confirms are in,
        by the next claim's transaction (one commit per batch, not two, and
        none between two batches' publishes); when the relay stops, at once.
        The next claim comes with the next commit that wakes the relay, or
        ``mark_delay`` after the batch at the latest (at once if a commit
        came while it was being published): while commits come, each claim
        marks the batch before it, and an idle relay's last batch is marked
        ``mark_delay`` late.
        """
        remove = self._store.add_commit_listener(self.wake)
        claimed: tuple[list[OutboxMessage], float] | None = None  # claimed ahead, held
        ahead: asyncio.Task[tuple[list[OutboxMessage], float]] | None = None
        confirmed: list[str] = []  # published, to be marked by the next claim
        marking: list[str] = []  # being marked by the claim in flight
        try:
            while not stop_event.is_set():
                await self._listen()
                self._wake.clear()
                try:
                    if claimed is None:
                        marking, confirmed = confirmed, []
                        batch = await self._claim(marking)
                        marking = []
                    else:
                        batch = claimed
                    claimed = None  # from here on the batch is this round's, not held
                    if len(batch[0]) == self._batch_size:  # more may be due: claim them now
                        marking, confirmed = confirmed, []
                        ahead = asyncio.ensure_future(self._claim(marking))
                    result = await self._deliver(batch, mark=False)
                    confirmed.extend(result.published)
                    if ahead is not None:
                        claimed, ahead = await ahead, None
                        marking = []
                        if not claimed[0]:  # claimed while commits may have come: look again
                            claimed = None
                except Exception as exc:
                    _log.error("outbox_relay_batch_failed", error_type=type(exc).__name__)
                    result = BatchResult()
                    # A batch whose delivery failed is left to its claim timeout, as
                    # before; the one claimed ahead is given back, and what its claim
                    # was to mark is marked by the next one.
                    claimed, ahead = await self._give_back(None, ahead)
                    confirmed, marking = marking + confirmed, []
                    await self._sleep(stop_event, self._poll_interval)  # the store is failing
                if claimed is None:
                    if not result.published:
                        await self._sleep(stop_event, self._poll_interval)
                    elif not self._wake.is_set() and self._mark_delay > 0:
                        # The batch is to be marked, and messages another relay gave
                        # back because this one held their predecessor are due now
                        # (no commit will announce them): the next claim does both,
                        # at the next commit, or after mark_delay at the latest.
                        await self._sleep(stop_event, self._mark_delay)
        finally:
            remove()
            await self._give_back(claimed, ahead)
            await self._mark(marking + confirmed)
            if self._listener is not None:
                await self._listener.stop()

    async def _mark(self, message_ids: list[str]) -> None:
        """Mark confirmed messages published on the way out (marking twice is harmless)."""
        if not message_ids:
            return
        try:
            await self._store.mark_published(message_ids, at=self._clock())
        except Exception as exc:  # published again after the claim timeout (at least once)
            _log.warning(
                "outbox_relay_mark_failed", error_type=type(exc).__name__, count=len(message_ids)
            )

    async def _give_back(
        self,
        claimed: tuple[list[OutboxMessage], float] | None,
        ahead: asyncio.Task[tuple[list[OutboxMessage], float]] | None,
    ) -> tuple[None, None]:
        """Release a batch claimed ahead and not published (due again at once)."""
        if ahead is not None:
            if not ahead.done():
                # A claim in flight is let finish (within the publish deadline) and its
                # batch released: on PostgreSQL a claim is one statement, its own
                # transaction, which may commit although cancelled, and would leave its
                # messages hidden until the claim timeout.
                await asyncio.wait({ahead}, timeout=self._deadline)
            if not ahead.done():
                ahead.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                claimed = await ahead
        if claimed and claimed[0]:
            try:
                await self._store.release([m.message_id for m in claimed[0]])
            except Exception as exc:  # they are due again after the claim timeout
                _log.warning("outbox_relay_release_failed", error_type=type(exc).__name__)
        return None, None

    async def _listen(self) -> None:
        if self._listener is None or self._listener.listening:
            return
        try:
            await self._listener.start(self.wake)
        except Exception as exc:  # polling covers it until the database is back
            _log.warning("outbox_relay_listen_failed", error_type=type(exc).__name__)

    async def _sleep(self, stop_event: asyncio.Event, seconds: float) -> None:
        waits = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop_event.wait())}
        try:
            await asyncio.wait(waits, timeout=seconds, return_when="FIRST_COMPLETED")
        finally:
            for waiter in waits:
                waiter.cancel()
            for waiter in waits:
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    def __repr__(self) -> str:
        return (
            f"OutboxRelay(publisher={self._publisher!r}, batch_size={self._batch_size}, "
            f"max_attempts={self._max_attempts})"
        )


class _Cut:
    """A batch's deadline: when it fires, the streams still publishing are cancelled
    (each turns that into its in-flight message's failure)."""

    __slots__ = ("cut", "fired", "publishing")

    def __init__(self) -> None:
        self.fired = False
        self.publishing: set[asyncio.Task[Any]] = set()
        self.cut: set[asyncio.Task[Any]] = set()  # cancelled by the deadline

    def fire(self) -> None:
        self.fired = True
        for task in self.publishing:
            task.cancel()
            self.cut.add(task)


def _upcast(upcaster: Upcaster, message: OutboxMessage) -> OutboxMessage:
    outgoing = upcaster(message)
    if outgoing.payload is not message.payload and outgoing.payload_json is message.payload_json:
        # A new payload with the stored JSON text: that text no longer says what it says.
        return replace(outgoing, payload_json=None)
    return outgoing
