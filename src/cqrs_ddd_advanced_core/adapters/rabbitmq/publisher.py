"""Publishing outbox messages to RabbitMQ with publisher confirms."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import aio_pika
import aiormq
from aiormq.exceptions import AMQPError
from opentelemetry import propagate, trace
from pamqp.commands import Basic

from cqrs_ddd_advanced_core.adapters.rabbitmq.topology import DEFAULT_EXCHANGE, declare_exchange
from cqrs_ddd_advanced_core.domain.exceptions import PublishError
from cqrs_ddd_advanced_core.messaging.headers import encode_headers, routing_key
from cqrs_ddd_advanced_core.messaging.telemetry import (
    ATTR_CONVERSATION_ID,
    ATTR_DESTINATION,
    ATTR_MESSAGE_ID,
    ATTR_OPERATION_NAME,
    ATTR_OPERATION_TYPE,
    ATTR_ROUTING_KEY,
    ATTR_SYSTEM,
    LazyTracer,
)
from cqrs_ddd_core.telemetry.api import error_type
from cqrs_ddd_core.telemetry.names import ATTR_ERROR_TYPE, ATTR_MESSAGE_TYPE

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange
    from opentelemetry.trace import TracerProvider

    from cqrs_ddd_core.persistence.records import OutboxMessage

__all__ = ["RabbitMQPublisher"]


class RabbitMQPublisher:
    """Publishes outbox messages, persistent, and returns once RabbitMQ confirmed each.

    Each message: ``message_id`` = the event id, ``type`` = the event type,
    ``correlation_id``, JSON body (the payload), the headers of
    :mod:`cqrs_ddd_advanced_core.messaging.headers` and the PRODUCER span's
    ``traceparent``; routing key ``<aggregate type>.<event type>``.

    The connection is opened on first use and again after it was lost; a
    publish that cannot be confirmed raises :class:`PublishError` (the relay
    retries it later). Use as ``async with RabbitMQPublisher(url) as publisher``
    or call :meth:`close`.

    Args:
        url: ``amqp://user:password@host:port/vhost``.
        exchange: The topic exchange (declared if missing).
        connect_timeout: Seconds to wait for a connection.
        confirm_timeout: Seconds to wait for one confirm.
        tracer_provider: Spans go there (default: the global provider).
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str = DEFAULT_EXCHANGE,
        connect_timeout: float = 10.0,
        confirm_timeout: float = 10.0,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        if connect_timeout <= 0 or confirm_timeout <= 0:
            raise ValueError("connect_timeout and confirm_timeout must be positive")
        self._url = url
        self._exchange_name = exchange
        self._connect_timeout = connect_timeout
        self._confirm_timeout = confirm_timeout
        self._tracer = LazyTracer(tracer_provider)
        self._span_name = f"publish {exchange}"
        self._attributes: dict[str, str] = {  # the same on every span
            ATTR_SYSTEM: "rabbitmq",
            ATTR_OPERATION_NAME: "publish",
            ATTR_OPERATION_TYPE: "send",
            ATTR_DESTINATION: exchange,
        }
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._underlay: aiormq.Channel | None = None  # the channel's own, see _send
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RabbitMQPublisher:
        await self._ready()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _ready(self) -> AbstractExchange:
        exchange, channel = self._exchange, self._channel
        if exchange is not None and channel is not None and not channel.is_closed:
            return exchange
        async with self._lock:  # one reconnect for all the publishes waiting on it
            if self._exchange is not None and self._channel and not self._channel.is_closed:
                return self._exchange
            await self.close()
            try:
                self._connection = await aio_pika.connect(self._url, timeout=self._connect_timeout)
                self._channel = await self._connection.channel(publisher_confirms=True)
                self._exchange = await declare_exchange(self._channel, self._exchange_name)
                underlay = await self._channel.get_underlay_channel()
                self._underlay = underlay if isinstance(underlay, aiormq.Channel) else None
            except (TimeoutError, AMQPError, OSError) as exc:
                await self.close()
                raise PublishError(f"RabbitMQ is unreachable: {type(exc).__name__}: {exc}") from exc
            return self._exchange

    async def publish(self, message: OutboxMessage) -> None:
        """Publish ``message`` and wait for RabbitMQ's confirm.

        Raises:
            PublishError: no connection, a nack, or no confirm in time.
        """
        key = routing_key(message)
        stored = message.trace_context
        if not self._tracer.recording():
            # No tracing SDK: no span to make; the message carries the command's
            # context as stored (what injecting its non-recording span would write).
            await self._publish(message, key, stored)
            return
        attributes = {
            **self._attributes,
            ATTR_ROUTING_KEY: key,
            ATTR_MESSAGE_ID: message.message_id,
            ATTR_MESSAGE_TYPE: message.message_type,
        }
        if message.correlation_id:
            attributes[ATTR_CONVERSATION_ID] = message.correlation_id
        command = propagate.extract(stored) if stored else None
        parent = trace.get_current_span(command)
        command_span = parent.get_span_context()
        span = self._tracer.tracer.start_span(
            self._span_name,
            context=command,
            kind=trace.SpanKind.PRODUCER,
            attributes=attributes,
            links=[trace.Link(command_span)] if command_span.is_valid else None,
            record_exception=False,
            set_status_on_exception=False,
        )
        if span is parent:
            # A tracer that hands the command's own (non-recording) span back: the
            # message carries the command's context, as stored.
            await self._publish(message, key, stored)
            return
        carrier: dict[str, str] = {}
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            propagate.inject(carrier)
            try:
                await self._publish(message, key, carrier)
            except PublishError as exc:
                span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                span.set_attribute(ATTR_ERROR_TYPE, error_type(exc))
                raise

    async def _publish(self, message: OutboxMessage, key: str, carrier: dict[str, str]) -> None:
        exchange, channel = self._exchange, self._channel
        if exchange is None or channel is None or channel.is_closed:
            exchange = await self._ready()
        body = (message.payload_json or _dumps(message.payload)).encode()
        headers = encode_headers(message, carrier)
        try:
            underlay = self._underlay
            if underlay is not None:
                confirm = await self._send(underlay, body, headers, message, key)
            else:
                confirm = await exchange.publish(
                    _message(body, headers, message), key, mandatory=False,
                    timeout=self._confirm_timeout,
                )  # fmt: skip
        except (TimeoutError, AMQPError, OSError, RuntimeError) as exc:
            # RuntimeError: aio-pika's "channel closed" while the connection dies.
            await self.close()
            raise PublishError(
                f"RabbitMQ did not confirm {message.message_id}: {type(exc).__name__}: {exc}"
            ) from exc
        except asyncio.CancelledError:
            # Cancelled mid-publish (the caller's deadline): the channel may hold half
            # a message or count confirms differently from the broker. Drop it; the
            # next publish opens a new one (publishes in flight on it fail and retry).
            self._discard()
            raise
        if not isinstance(confirm, Basic.Ack):
            raise PublishError(f"RabbitMQ did not accept {message.message_id}: {confirm!r}")

    async def _send(
        self,
        underlay: aiormq.Channel,
        body: bytes,
        headers: dict[str, Any],
        message: OutboxMessage,
        key: str,
    ) -> object:
        """Publish on aio-pika's channel's own ``aiormq`` channel, with the properties
        ``aio_pika.Message`` would give (frame for frame the same: tested), and
        ``wait=False``: the publish does not wait, holding the channel's lock, for
        the frame to be written before its neighbours may queue theirs (the
        confirm, awaited within ``confirm_timeout``, comes after the write
        anyway). ``Exchange.publish`` builds the same frames from an
        ``aio_pika.Message`` and waits for each write (measured in groups of three
        concurrent publishes: 0.40 ms of CPU per message against 0.31)."""
        return await underlay.basic_publish(
            body,
            exchange=self._exchange_name,
            routing_key=key,
            properties=_properties(headers, message),
            mandatory=False,
            timeout=self._confirm_timeout,
            wait=False,
        )

    def _discard(self) -> None:
        connection = self._connection
        self._connection, self._channel, self._exchange = None, None, None
        self._underlay = None
        if connection is not None and not connection.is_closed:
            task = asyncio.get_running_loop().create_task(self._close_quietly(connection))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _close_quietly(self, connection: AbstractConnection) -> None:
        with contextlib.suppress(TimeoutError, AMQPError, OSError, RuntimeError):
            await asyncio.wait_for(connection.close(), self._connect_timeout)

    async def close(self) -> None:
        """Close the connection (the next publish opens a new one)."""
        connection = self._connection
        self._connection, self._channel, self._exchange = None, None, None
        self._underlay = None
        if connection is not None and not connection.is_closed:
            # It is gone either way.
            with contextlib.suppress(TimeoutError, AMQPError, OSError, RuntimeError):
                await asyncio.wait_for(connection.close(), self._connect_timeout)

    def __repr__(self) -> str:
        return f"RabbitMQPublisher(exchange={self._exchange_name!r})"


def _properties(headers: dict[str, Any], message: OutboxMessage) -> Basic.Properties:
    """The AMQP properties of ``message``: those the ``aio_pika.Message`` of
    :func:`_message` has (``priority`` 0 is its default)."""
    return Basic.Properties(
        content_type="application/json",
        delivery_mode=2,  # persistent
        headers=headers,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        message_type=message.message_type,
        timestamp=message.created_at,
        priority=0,
    )


def _message(body: bytes, headers: dict[str, Any], message: OutboxMessage) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        headers=headers,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.message_type,
        timestamp=message.created_at,
    )


def _dumps(payload: object) -> str:
    from cqrs_ddd_core.persistence.serialization import dumps

    return dumps(payload, "payload")
