"""Consuming a service's partition queues from RabbitMQ.

One task per partition queue takes its deliveries one after the other (the
queues are single-active-consumer, see :mod:`.topology`), so a stream's
messages are processed in order. For each delivery:

* the processor (a :class:`~cqrs_ddd_advanced_core.messaging.MessageConsumer`)
  runs; once it returned (the effects and the inbox row committed, or the
  inbox said "duplicate") the delivery is acknowledged;
* if it raises, or takes longer than ``process_timeout`` (a database that
  stopped answering: the attempt is cancelled, its transaction rolled back),
  it is tried again after an exponential backoff, in place (the
  partition waits: order is kept); after ``max_attempts`` it is rejected
  without requeue, which RabbitMQ routes to the service's dead-letter
  exchange (``<service>.dlx`` -> queue ``<service>.dead``);
* a message that cannot be decoded is dead-lettered at once.

A lost connection is reopened after ``reconnect_delay``; deliveries that were
not acknowledged come again (the inbox makes that harmless).

Up to one delivery per partition queue is processed at once, each (with the
SQL inbox) in a transaction on a connection of its own: give the inbox's
engine a pool of at least the partition count, or connections are opened and
closed for the deliveries beyond it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING

import aio_pika
import structlog
from aiormq.exceptions import AMQPError

from cqrs_ddd_advanced_core.messaging.headers import decode
from cqrs_ddd_advanced_core.messaging.telemetry import MessagingInstruments
from cqrs_ddd_advanced_core.outbox.service import Backoff
from cqrs_ddd_core.telemetry.api import get_meter

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
    from opentelemetry.metrics import MeterProvider

    from cqrs_ddd_advanced_core.adapters.rabbitmq.topology import ConsumerTopology
    from cqrs_ddd_advanced_core.messaging.ports import DeliveryProcessor

__all__ = ["RabbitMQSubscriber"]

_log = structlog.get_logger("cqrs_ddd_advanced_core.messaging")
_CONNECTION_ERRORS = (AMQPError, OSError, asyncio.TimeoutError, RuntimeError)


class RabbitMQSubscriber:
    """Feeds one service's partition queues to a processor.

    Args:
        url: ``amqp://user:password@host:port/vhost``.
        topology: The service's exchanges and queues (declared on connect).
        max_attempts: Processing attempts before a delivery is dead-lettered.
        backoff: Delay between attempts (default 0.1 s doubling to 5 s).
        prefetch: Unacknowledged deliveries RabbitMQ sends ahead, per channel.
        process_timeout: Seconds one processing attempt may take; past it the
            attempt is cancelled and counts as failed (never acknowledged).
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
        process_timeout: float = 60.0,
        reconnect_delay: float = 1.0,
        connect_timeout: float = 10.0,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        if process_timeout <= 0:
            raise ValueError(f"process_timeout must be positive, got {process_timeout}")
        self._url = url
        self.topology = topology
        self._max_attempts = max_attempts
        self._backoff = backoff or _default_backoff()
        self._prefetch = prefetch
        self._process_timeout = process_timeout
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

    async def run(self, processor: DeliveryProcessor, stop_event: asyncio.Event) -> None:
        """Consume until ``stop_event`` is set, reconnecting whenever the connection is lost."""
        while not stop_event.is_set():
            try:
                await self._session(processor, stop_event)
            except _CONNECTION_ERRORS as exc:
                self.ready.clear()
                _log.warning("subscriber_connection_lost", error_type=type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), self._reconnect_delay)

    async def _session(self, processor: DeliveryProcessor, stop_event: asyncio.Event) -> None:
        connection = await aio_pika.connect(self._url, timeout=self._connect_timeout)
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self._prefetch)
            queues = await self.topology.declare(channel)
            lost = asyncio.Event()
            connection.close_callbacks.add(lambda *_: lost.set())
            tasks = [
                asyncio.create_task(self._consume(queue, processor, stop_event)) for queue in queues
            ]
            self.ready.set()
            stop = asyncio.ensure_future(stop_event.wait())
            closed = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait([stop, closed, *tasks], return_when=asyncio.FIRST_COMPLETED)
            finally:
                self.ready.clear()
                for task in (stop, closed, *tasks):
                    task.cancel()
                results = await asyncio.gather(stop, closed, *tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    raise result
            if lost.is_set() and not stop_event.is_set():
                raise ConnectionError("the RabbitMQ connection was closed")

    async def _consume(
        self, queue: AbstractQueue, processor: DeliveryProcessor, stop_event: asyncio.Event
    ) -> None:
        async with queue.iterator() as deliveries:
            async for delivery in deliveries:
                if stop_event.is_set():  # stopping: give it back untouched
                    await delivery.nack(requeue=True)
                    return
                await self._deliver(queue.name, delivery, processor, stop_event)

    async def _deliver(
        self,
        queue: str,
        delivery: AbstractIncomingMessage,
        processor: DeliveryProcessor,
        stop_event: asyncio.Event,
    ) -> None:
        try:
            message = decode(
                delivery.message_id or "",
                delivery.body,
                delivery.headers or {},
                destination=queue,
                redelivered=bool(delivery.redelivered),
            )
            if not message.message_id:
                raise ValueError("a message without message_id")
        except ValueError as exc:
            _log.error("message_undecodable", queue=queue, error=str(exc))
            await self._dead_letter(delivery)
            return
        for attempt in range(1, self._max_attempts + 1):
            try:
                async with asyncio.timeout(self._process_timeout):
                    # decode() made it attempt 1: copied only for a retry.
                    await processor(
                        message if attempt == 1 else dataclasses.replace(message, attempt=attempt)
                    )
            except Exception as exc:
                if attempt == self._max_attempts:
                    _log.error(
                        "message_dead_lettered",
                        queue=queue,
                        message_id=message.message_id,
                        attempts=attempt,
                        error_type=type(exc).__name__,
                    )
                    await self._dead_letter(delivery)
                    return
                delay = self._backoff.delay(attempt).total_seconds()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), delay)
                if stop_event.is_set():  # give it back for the next consumer
                    await delivery.nack(requeue=True)
                    return
            else:
                await delivery.ack()
                return

    async def _dead_letter(self, delivery: AbstractIncomingMessage) -> None:
        await delivery.reject(requeue=False)
        self._instruments.consumer_dead_lettered.add(
            1, {"messaging.consumer.group.name": self.topology.service}
        )

    def __repr__(self) -> str:
        return f"RabbitMQSubscriber({self.topology!r})"


def _default_backoff() -> Backoff:
    return Backoff(initial=timedelta(seconds=0.1), factor=2.0, maximum=timedelta(seconds=5))
