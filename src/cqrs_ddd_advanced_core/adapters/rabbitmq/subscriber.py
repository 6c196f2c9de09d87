"""Consuming a service's partition queues from RabbitMQ.

One task per partition queue takes its deliveries in queue order (the
queues are single-active-consumer, see :mod:`.topology`), so a stream's
messages are processed in order. What the queue has ready when the task
looks (bounded by ``prefetch``) is processed together:

* with a ``MessageConsumer`` (or its ``process`` method) as the processor,
  in one transaction with what the other partition queues have ready at
  that moment (up to ``batch_size`` deliveries, at most ``transactions``
  such batches at once, started at most every ``linger`` seconds, see
  :mod:`.batcher`; each queue waits for its deliveries' results before it
  submits more):
  :meth:`~cqrs_ddd_advanced_core.messaging.MessageConsumer.process_batch`
  runs one inbox statement, the handlers in order, one commit; once it
  committed, the deliveries are acknowledged. A delivery whose handler failed
  is left out of that commit (the ones before it in the batch commit; it and
  the ones after it do not): its queue retries it alone, in place, then goes
  on with the rest, while the other queues submit theirs again at once. A
  queue's order is kept and nothing of it commits before an earlier failed
  delivery of it. If the batch as a whole fails (the commit, the database),
  each of its deliveries is processed alone;
* with another processor, or ``batch_size=1``, one delivery at a time, each
  acknowledged once the processor returned (committed, or the inbox said
  "duplicate");
* a failed delivery (it raised, or took longer than ``process_timeout``: a
  database that stopped answering, the attempt is cancelled and its
  transaction rolled back) is tried again after an exponential backoff, in
  place (the partition waits: order is kept); after ``max_attempts`` it is
  rejected without requeue, which RabbitMQ routes to the service's
  dead-letter exchange (``<service>.dlx`` -> queue ``<service>.dead``);
* a message that cannot be decoded is dead-lettered at once;
* asked to stop, it takes no further delivery: what a queue is processing is
  finished and acknowledged after its commit (bounded by ``process_timeout``),
  what it had not started is given back.

A lost connection is reopened after ``reconnect_delay``; deliveries that were
not acknowledged come again (the inbox makes that harmless: a batch is
acknowledged only after its commit, so a consumer killed mid-batch leaves
either none of its effects or all of them, and the redelivered ones are
skipped by the inbox).

The queues share one channel, consumed on its aiormq channel (aio-pika's
``get_underlay_channel()``): a delivery is decoded straight from aiormq's
``DeliveredMessage`` and settled by its delivery tag, without the message
object (and second task) aio-pika's ``Queue.consume`` makes of each. What
committed is acknowledged several deliveries at a time (``basic.ack`` with
``multiple``, never past a delivery of the channel that is not settled; one
that waits for an earlier one goes alone after ``ack_hold``): see :mod:`.acks`.

Each batch (with the SQL inbox) is a transaction on a connection of its own,
and a retried delivery another: give the inbox's engine a pool of at least
``transactions`` plus a few (one delivery at a time: at least the partition
count), or connections are opened and closed for the ones beyond it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import deque
from datetime import timedelta
from typing import TYPE_CHECKING

import aio_pika
import structlog
from aiormq.exceptions import AMQPError

from cqrs_ddd_advanced_core.adapters.rabbitmq.acks import ChannelAcks
from cqrs_ddd_advanced_core.adapters.rabbitmq.batcher import Batcher
from cqrs_ddd_advanced_core.messaging.headers import decode
from cqrs_ddd_advanced_core.messaging.ports import Outcome
from cqrs_ddd_advanced_core.messaging.telemetry import MessagingInstruments
from cqrs_ddd_advanced_core.outbox.service import Backoff
from cqrs_ddd_core.telemetry.api import get_meter

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, DeliveredMessage
    from opentelemetry.metrics import MeterProvider

    from cqrs_ddd_advanced_core.adapters.rabbitmq.topology import ConsumerTopology
    from cqrs_ddd_advanced_core.messaging.ports import (
        BatchProcessor,
        DeliveryProcessor,
        IncomingMessage,
    )

__all__ = ["RabbitMQSubscriber"]

_log = structlog.get_logger("cqrs_ddd_advanced_core.messaging")
_CONNECTION_ERRORS = (AMQPError, OSError, asyncio.TimeoutError, RuntimeError)
_LOST_GRACE = 1.0  # seconds a failed session waits for its connection's close callback


class RabbitMQSubscriber:
    """Feeds one service's partition queues to a processor.

    Args:
        url: ``amqp://user:password@host:port/vhost``.
        topology: The service's exchanges and queues (declared on connect).
        max_attempts: Processing attempts before a delivery is dead-lettered.
        backoff: Delay between attempts (default 0.1 s doubling to 5 s).
        prefetch: Unacknowledged deliveries RabbitMQ sends ahead, per channel.
        batch_size: At most this many of the deliveries a queue has ready are
            processed in one transaction (``MessageConsumer.process_batch``);
            1: one transaction per delivery.
        transactions: Batch transactions at once (each on a connection of its own;
            more help handlers that wait on I/O).
        linger: Batch transactions start at most every ``linger`` seconds
            unless ``batch_size`` deliveries wait, and one starts beside a
            batch under way only after that; no delivery waits longer (see
            :mod:`.batcher`). A lone delivery after a quiet spell goes at once.
            0: a transaction starts whenever one of the ``transactions`` is free.
        process_timeout: Seconds one processing attempt may take; past it the
            attempt is cancelled and counts as failed (never acknowledged).
        ack_hold: Seconds a committed delivery may wait for the deliveries before
            it on the channel, so that one ``basic.ack`` (``multiple``)
            acknowledges them together; then it is acknowledged alone (see
            :mod:`.acks`). 0: one ``basic.ack`` per delivery, at once.
        reconnect_delay: Seconds between attempts to reconnect.
        connect_timeout: Seconds to wait for a connection.
        meter_provider: Metrics go there (default: the global provider).
    """

    def __init__(
        self,
        url: str,
        topology: ConsumerTopology,
        *,
        max_attempts: int = 5,
        backoff: Backoff | None = None,
        prefetch: int = 64,
        batch_size: int = 64,
        transactions: int = 4,
        linger: float = 0.005,
        process_timeout: float = 60.0,
        ack_hold: float = 0.05,
        reconnect_delay: float = 1.0,
        connect_timeout: float = 10.0,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if transactions < 1:
            raise ValueError(f"transactions must be at least 1, got {transactions}")
        if process_timeout <= 0:
            raise ValueError(f"process_timeout must be positive, got {process_timeout}")
        if linger < 0:
            raise ValueError(f"linger must not be negative, got {linger}")
        if ack_hold < 0:
            raise ValueError(f"ack_hold must not be negative, got {ack_hold}")
        self._url = url
        self.topology = topology
        self._max_attempts = max_attempts
        self._backoff = backoff or _default_backoff()
        self._prefetch = prefetch
        self._batch_size = batch_size
        self._transactions = transactions
        self._linger = linger
        self._process_timeout = process_timeout
        self._ack_hold = ack_hold
        self._reconnect_delay = reconnect_delay
        self._connect_timeout = connect_timeout
        self._instruments = MessagingInstruments(get_meter(meter_provider))
        self.ready = asyncio.Event()
        """Set once the topology is declared and every queue is being consumed."""

    async def declare(self) -> None:
        """Declare the service's topology now (before anything is published to it)."""
        connection = await aio_pika.connect(self._url, timeout=self._connect_timeout)
        async with connection:
            await self.topology.declare(await connection.channel())

    async def run(
        self, processor: DeliveryProcessor | BatchProcessor, stop_event: asyncio.Event
    ) -> None:
        """Consume until ``stop_event`` is set, reconnecting whenever the connection is lost.

        ``processor``: a ``MessageConsumer`` or its ``process`` method (deliveries
        in batches, see the module), or any other ``async (message) -> Outcome``
        (one delivery at a time).
        """
        while not stop_event.is_set():
            try:
                await self._session(processor, stop_event)
            except _CONNECTION_ERRORS as exc:
                self.ready.clear()
                _log.warning("subscriber_connection_lost", error_type=type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), self._reconnect_delay)

    async def _session(
        self, processor: DeliveryProcessor | BatchProcessor, stop_event: asyncio.Event
    ) -> None:
        connection = await aio_pika.connect(self._url, timeout=self._connect_timeout)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self._prefetch)
            queues = await self.topology.declare(channel)
            underlay = await channel.get_underlay_channel()
            lost = asyncio.Event()
            connection.close_callbacks.add(lambda *_: lost.set())
            single, batch = _processors(processor)
            acks = ChannelAcks(underlay, hold=self._ack_hold)
            tasks = [asyncio.create_task(acks.run())]
            batcher = None
            if batch is not None and self._batch_size > 1:
                batcher = Batcher(batch, self._batch_size, self._process_timeout, self._linger)
                tasks += [asyncio.create_task(batcher.work()) for _ in range(self._transactions)]
            busy: set[str] = set()  # queues whose task is processing deliveries
            lanes = {
                queue.name: asyncio.create_task(
                    self._consume(
                        underlay, queue.name, _Lane(single, batcher, acks, stop_event), busy
                    )
                )
                for queue in queues
            }
            tasks.extend(lanes.values())
            self.ready.set()
            stop = asyncio.ensure_future(stop_event.wait())
            closed = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait([stop, closed, *tasks], return_when=asyncio.FIRST_COMPLETED)
                if stop.done() and not closed.done():
                    await self._finish(lanes, busy)
                    async with asyncio.timeout(self._connect_timeout):
                        await acks.flush()  # what committed is acknowledged before closing
            finally:
                self.ready.clear()
                for task in (stop, closed, *tasks):
                    task.cancel()
                results = await asyncio.gather(stop, closed, *tasks, return_exceptions=True)
            errors = [
                r
                for r in results
                if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
            ]
            if errors and not lost.is_set():
                # A task may fail with the connection before its close callback has run:
                # aiormq fails the calls in flight with whatever the connection was closed
                # with (a bare Exception, once), so give the callback a moment (bounded).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), _LOST_GRACE)
            if lost.is_set() and (errors or not stop_event.is_set()):
                # Whatever the tasks failed with, the connection's loss came first:
                # reconnect (``run``) instead of ending the subscriber for good.
                raise ConnectionError("the RabbitMQ connection was closed") from (
                    errors[0] if errors else None
                )
            if errors:
                raise errors[0]

    async def _finish(self, lanes: dict[str, asyncio.Task[None]], busy: set[str]) -> None:
        """Stopping: the queues waiting for deliveries stop now; those processing some
        finish them (acknowledged after their commit; bounded by ``process_timeout``)
        and stop, giving back what they had not started."""
        finishing = [task for name, task in lanes.items() if name in busy]
        for name, task in lanes.items():
            if name not in busy:
                task.cancel()
        if finishing:
            await asyncio.wait(finishing, timeout=self._process_timeout)

    async def _consume(
        self, channel: AbstractChannel, queue: str, lane: _Lane, busy: set[str]
    ) -> None:
        ready = _Arrivals()
        tag = (await channel.basic_consume(queue, ready.put)).consumer_tag
        if tag is None:  # (as aio-pika's Queue.consume: pamqp types it optional)
            raise RuntimeError(f"queue {queue}: no consumer tag")
        try:
            while True:
                deliveries = await ready.take(self._batch_size)
                if lane.stop_event.is_set():  # stopping: give them back untouched
                    for delivery in deliveries:
                        await _give_back(delivery, lane.acks)
                    return
                busy.add(queue)
                try:
                    await self._deliver(queue, deliveries, lane)
                finally:
                    busy.discard(queue)
                if lane.stop_event.is_set():
                    return
        finally:
            await self._stop_consuming(channel, tag, ready, lane.acks)

    async def _stop_consuming(
        self,
        channel: AbstractChannel,
        tag: str,
        ready: _Arrivals,
        acks: ChannelAcks,
    ) -> None:
        """Cancel the consumer and give back what arrived and was not processed (on a
        channel that closed they come back anyway)."""
        if channel.is_closed:
            return
        with contextlib.suppress(*_CONNECTION_ERRORS):
            async with asyncio.timeout(self._connect_timeout):
                await channel.basic_cancel(tag)
                for delivery in ready.take_all():
                    await _give_back(delivery, acks)

    async def _deliver(self, queue: str, deliveries: list[DeliveredMessage], lane: _Lane) -> None:
        """Process deliveries of one queue in their order: in batches of what is ready
        (with other queues' in one transaction, when the processor has
        ``process_batch``); a delivery that fails is retried alone, in place, before
        those after it."""
        acks, stop_event, batch = lane.acks, lane.stop_event, lane.batch
        pending: list[tuple[int, IncomingMessage]] = []  # (delivery tag, message)
        for delivery in deliveries:
            decoded = await self._decode(queue, delivery, acks)
            if decoded is not None:
                pending.append(decoded)
        while pending:
            if stop_event.is_set():  # stopping: what was not started goes back
                for tag, _ in pending:
                    await acks.give_back(tag)
                return
            if batch is None:
                tag, message = pending.pop(0)
                if not await self._retry(queue, tag, message, lane, 1, None):
                    for tag, _ in pending:  # stopping: give back the rest
                        await acks.give_back(tag)
                    return
                continue
            try:
                results = await batch.process([m for _, m in pending])
            except Exception as exc:  # the batch as a whole: each is retried alone
                _log.warning(
                    "message_batch_failed", queue=queue, size=len(pending),
                    error_type=type(exc).__name__,
                )  # fmt: skip
                batch = None
                continue
            done = 0
            while done < len(results) and isinstance(results[done], Outcome):
                done += 1
            await acks.ack([tag for tag, _ in pending[:done]])
            failed = results[done] if done < len(results) else None
            rest = pending[done:]
            if isinstance(failed, Exception):  # attempt 1 failed: the retries, in place
                tag, message = rest.pop(0)
                if not await self._retry(queue, tag, message, lane, 2, failed):
                    for tag, _ in rest:
                        await acks.give_back(tag)
                    return
            pending = rest

    async def _decode(
        self, queue: str, delivery: DeliveredMessage, acks: ChannelAcks
    ) -> tuple[int, IncomingMessage] | None:
        """The delivery's tag and message; None if it was dead-lettered (undecodable)."""
        tag = _tag(delivery)
        properties = delivery.header.properties
        try:
            message = decode(
                properties.message_id or "",
                delivery.body,
                properties.headers or {},
                destination=queue,
                redelivered=bool(delivery.redelivered),
            )
            if not message.message_id:
                raise ValueError("a message without message_id")
        except ValueError as exc:
            _log.error("message_undecodable", queue=queue, error=str(exc))
            await self._dead_letter(tag, acks)
            return None
        return tag, message

    async def _retry(
        self,
        queue: str,
        tag: int,
        message: IncomingMessage,
        lane: _Lane,
        first: int,
        failure: Exception | None,
    ) -> bool:
        """Attempts ``first`` ... ``max_attempts`` of one delivery (after ``failure`` of
        the attempt before, if any), then ack or dead-letter it; False when stopping
        gave it back instead."""
        attempt = first
        while True:
            if failure is not None:
                if attempt > self._max_attempts:
                    _log.error(
                        "message_dead_lettered",
                        queue=queue,
                        message_id=message.message_id,
                        attempts=attempt - 1,
                        error_type=type(failure).__name__,
                    )
                    await self._dead_letter(tag, lane.acks)
                    return True
                delay = self._backoff.delay(attempt - 1).total_seconds()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lane.stop_event.wait(), delay)
                if lane.stop_event.is_set():  # give it back for the next consumer
                    await lane.acks.give_back(tag)
                    return False
            try:
                async with asyncio.timeout(self._process_timeout):
                    # decode() made it attempt 1: copied only for a retry.
                    await lane.single(
                        message if attempt == 1 else dataclasses.replace(message, attempt=attempt)
                    )
            except Exception as exc:
                failure = exc
                attempt += 1
                continue
            await lane.acks.ack([tag])
            return True

    async def _dead_letter(self, tag: int, acks: ChannelAcks) -> None:
        await acks.reject(tag)
        self._instruments.consumer_dead_lettered.add(
            1, {"messaging.consumer.group.name": self.topology.service}
        )

    def __repr__(self) -> str:
        return f"RabbitMQSubscriber({self.topology!r})"


class _Arrivals:
    """One queue's deliveries not taken yet, in their order (one taker: an
    ``asyncio.Queue`` without its bookkeeping)."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[DeliveredMessage] = deque()
        self._waiter: asyncio.Future[None] | None = None

    async def put(self, delivery: DeliveredMessage) -> None:
        """The consumer callback (aiormq runs it in a task of its own)."""
        self._items.append(delivery)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def take(self, most: int) -> list[DeliveredMessage]:
        """What arrived, at most ``most`` (the oldest first); waits for one."""
        items = self._items
        while not items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return [items.popleft() for _ in range(min(most, len(items)))]

    def take_all(self) -> list[DeliveredMessage]:
        taken = list(self._items)
        self._items.clear()
        return taken


def _tag(delivery: DeliveredMessage) -> int:
    """A ``basic.deliver``'s delivery tag (pamqp types it optional; RabbitMQ always sets it)."""
    tag = delivery.delivery_tag
    if tag is None:
        raise ValueError(f"a delivery without a delivery tag: {delivery.delivery!r}")
    return tag


async def _give_back(delivery: DeliveredMessage, acks: ChannelAcks) -> None:
    await acks.give_back(_tag(delivery))


@dataclasses.dataclass(frozen=True, slots=True)
class _Lane:
    """What a session's queue tasks share: the processors, the channel's acks, the stop."""

    single: DeliveryProcessor
    batch: Batcher | None
    acks: ChannelAcks
    stop_event: asyncio.Event


def _processors(
    processor: DeliveryProcessor | BatchProcessor,
) -> tuple[DeliveryProcessor, BatchProcessor | None]:
    """One delivery's processor, and the batch processor if there is one: ``processor``
    itself when it has ``process_batch`` (a ``MessageConsumer``), or the object whose
    ``process`` method it is (``consumer.process``)."""
    if not callable(processor):
        return processor.process, processor
    owner = getattr(processor, "__self__", None)
    if getattr(processor, "__name__", None) == "process" and callable(
        getattr(owner, "process_batch", None)
    ):
        return processor, owner
    return processor, None


def _default_backoff() -> Backoff:
    return Backoff(initial=timedelta(seconds=0.1), factor=2.0, maximum=timedelta(seconds=5))
