"""The publisher's frames: what it sends is what ``aio_pika.Message`` would have sent,
and what arrives is the same on its two paths (aiormq's channel, aio-pika's exchange)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from pamqp import frame
from pamqp.header import ContentHeader

from cqrs_ddd_advanced_core.adapters.rabbitmq import RabbitMQPublisher, publisher
from cqrs_ddd_advanced_core.messaging.headers import encode_headers
from cqrs_ddd_core.persistence import OutboxMessage
from tests.support.rabbitmq import unique_name

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
EVERY_FIELD = OutboxMessage(
    message_id="e-1",
    message_type="OrderPlaced",
    payload={"n": 1},
    created_at=T0,
    aggregate_type="Order",
    aggregate_id="o-1",
    correlation_id="c-1",
    causation_id="k-1",
    trace_context={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
    aggregate_version=3,
    schema_version=2,
)


@pytest.mark.parametrize(
    "message",
    [
        EVERY_FIELD,
        OutboxMessage(message_id="e-2", message_type="Pinged", payload={}, created_at=T0),
    ],
    ids=["every-field", "no-aggregate"],
)
def test_the_properties_marshal_exactly_as_an_aio_pika_message_s(message: OutboxMessage) -> None:
    """Header names and values, and the broker's properties, on the wire stay as they
    were when each message went through ``aio_pika.Message``: consumers (and
    messages already in queues) read both alike."""
    body = b'{"n": 1}'
    headers = encode_headers(message, message.trace_context)
    ours = publisher._properties(headers, message)
    theirs = publisher._message(body, headers, message).properties

    def wire(properties: object) -> bytes:
        return frame.marshal(ContentHeader(0, len(body), properties), 1)  # type: ignore[arg-type]

    assert wire(ours) == wire(theirs)


class _NotAiormqChannel:
    """A channel that is not ``aiormq.Channel`` (another implementation behind
    aio-pika's ``get_underlay_channel()``): forwards everything to the real one."""

    def __init__(self, channel: object) -> None:
        self._channel = channel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._channel, name)


async def _publish_and_get(
    url: str, message: OutboxMessage
) -> aio_pika.abc.AbstractIncomingMessage:
    exchange = unique_name("events")
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(unique_name("all"), exclusive=True)
        await queue.bind(
            await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True),
            "#",
        )
        async with RabbitMQPublisher(url, exchange=exchange) as sender:
            await sender.publish(message)
        async with asyncio.timeout(30):
            while True:
                got = await queue.get(fail=False)
                if got is not None:
                    await got.ack()
                    return got
                await asyncio.sleep(0.02)


async def test_without_aiormqs_channel_it_publishes_through_aio_pika_the_same_message(
    rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The publisher sends on aiormq's channel when aio-pika hands one over; if it
    ever hands over something else, ``Exchange.publish`` sends: what arrives is the
    same, property for property, and the confirm is awaited as before."""
    direct = await _publish_and_get(rabbitmq_url, EVERY_FIELD)

    original = aio_pika.Channel.get_underlay_channel
    wrapped: list[object] = []

    async def not_aiormq(self: aio_pika.Channel) -> Any:
        wrapped.append(_NotAiormqChannel(await original(self)))
        return wrapped[-1]

    monkeypatch.setattr(aio_pika.Channel, "get_underlay_channel", not_aiormq)
    sent = aio_pika.Exchange.publish
    through_aio_pika: list[str] = []

    async def publish(
        self: aio_pika.Exchange, outgoing: aio_pika.Message, *a: Any, **k: Any
    ) -> Any:
        through_aio_pika.append(outgoing.message_id or "")
        return await sent(self, outgoing, *a, **k)

    monkeypatch.setattr(aio_pika.Exchange, "publish", publish)
    fallback = await _publish_and_get(rabbitmq_url, EVERY_FIELD)

    assert wrapped, "the publisher asked aio-pika for its channel's own"
    assert through_aio_pika == ["e-1"]
    assert fallback.body == direct.body == b'{"n":1}'
    assert fallback.routing_key == direct.routing_key
    for name in (
        "message_id",
        "type",
        "correlation_id",
        "content_type",
        "delivery_mode",
        "timestamp",
        "headers",
    ):
        assert getattr(fallback, name) == getattr(direct, name), name
