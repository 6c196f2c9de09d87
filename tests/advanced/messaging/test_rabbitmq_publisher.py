"""The publisher's frames: what it sends is what ``aio_pika.Message`` would have sent."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pamqp import frame
from pamqp.header import ContentHeader

from cqrs_ddd_advanced_core.adapters.rabbitmq import publisher
from cqrs_ddd_advanced_core.messaging.headers import encode_headers
from cqrs_ddd_core.persistence import OutboxMessage

T0 = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest.mark.parametrize(
    "message",
    [
        OutboxMessage(
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
        ),
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
