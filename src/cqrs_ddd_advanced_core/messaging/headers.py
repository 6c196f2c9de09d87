"""The message headers every broker adapter writes and reads (names are a contract).

Besides the broker's own properties (message id = event id, type, correlation
id, persistent delivery), a message carries:

==========================  ==================================================
``cqrs-aggregate-type``     the aggregate type
``cqrs-aggregate-id``       the aggregate id
``cqrs-aggregate-version``  the event's version in its stream
``cqrs-schema-version``     the schema version of the body (after upcasting)
``cqrs-stream``             ``<type>:<id>`` (its bucket ends the routing key)
``cqrs-causation-id``       the id of the message that caused the event
``cqrs-correlation-id``     the business flow's id
``traceparent`` ...         the producer span's W3C trace context
==========================  ==================================================
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

from cqrs_ddd_advanced_core.messaging.ports import IncomingMessage
from cqrs_ddd_core.persistence.records import OutboxMessage, stream_name

__all__ = [
    "AGGREGATE_ID",
    "AGGREGATE_TYPE",
    "AGGREGATE_VERSION",
    "BUCKETS",
    "CAUSATION_ID",
    "CORRELATION_ID",
    "MESSAGE_TYPE",
    "SCHEMA_VERSION",
    "STREAM",
    "bucket",
    "decode",
    "encode_headers",
    "routing_key",
]

AGGREGATE_TYPE = "cqrs-aggregate-type"
AGGREGATE_ID = "cqrs-aggregate-id"
AGGREGATE_VERSION = "cqrs-aggregate-version"
SCHEMA_VERSION = "cqrs-schema-version"
STREAM = "cqrs-stream"
CAUSATION_ID = "cqrs-causation-id"
CORRELATION_ID = "cqrs-correlation-id"
MESSAGE_TYPE = "cqrs-message-type"
_NO_AGGREGATE = "_"
BUCKETS = 256
"""Streams are spread over this many buckets; a consumer's partitions each take a share."""


def bucket(stream: str) -> int:
    """The bucket of a stream (CRC-32 of its name): the same in every process, for ever."""
    return zlib.crc32(stream.encode()) % BUCKETS


def _stream(message: OutboxMessage) -> str:
    if message.aggregate_id is None:
        return message.message_id  # no stream: spread by message id
    return stream_name(message.aggregate_type or "", message.aggregate_id)


def routing_key(message: OutboxMessage) -> str:
    """``<aggregate type>.<event type>.<bucket>`` (``_`` for no aggregate).

    Bind with topic patterns such as ``Order.*.*`` or ``*.OrderPlaced.*``; the
    bucket (:func:`bucket` of the stream) lets a consumer route each stream to
    one partition by static bindings, which stay the same across broker restarts.
    """
    stream = _stream(message)
    return f"{message.aggregate_type or _NO_AGGREGATE}.{message.message_type}.{bucket(stream)}"


def encode_headers(message: OutboxMessage, trace_context: Mapping[str, str]) -> dict[str, Any]:
    """The headers of ``message``; ``trace_context`` is the producer span's."""
    headers: dict[str, Any] = {MESSAGE_TYPE: message.message_type, STREAM: _stream(message)}
    if message.aggregate_id is not None:
        headers[AGGREGATE_TYPE] = message.aggregate_type or ""
        headers[AGGREGATE_ID] = message.aggregate_id
    if message.aggregate_version is not None:
        headers[AGGREGATE_VERSION] = message.aggregate_version
    if message.schema_version is not None:
        headers[SCHEMA_VERSION] = message.schema_version
    if message.correlation_id is not None:
        headers[CORRELATION_ID] = message.correlation_id
    if message.causation_id is not None:
        headers[CAUSATION_ID] = message.causation_id
    headers.update(trace_context)
    return headers


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def decode(
    message_id: str,
    body: bytes,
    headers: Mapping[str, Any],
    *,
    destination: str = "",
    redelivered: bool = False,
) -> IncomingMessage:
    """An :class:`IncomingMessage` from what the broker delivered.

    Raises:
        ValueError: the body is not a JSON object or the type header is missing
            (a message no retry can fix: the subscriber dead-letters it at once).
    """
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"message {message_id}: the body is not JSON ({exc})") from exc
    if not isinstance(payload, dict):
        raise ValueError(f"message {message_id}: the body is not a JSON object")
    message_type = _text(headers.get(MESSAGE_TYPE))
    if not message_type:
        raise ValueError(f"message {message_id}: no {MESSAGE_TYPE} header")
    version = headers.get(AGGREGATE_VERSION)
    schema_version = headers.get(SCHEMA_VERSION)
    trace_context = {
        key: text
        for key in ("traceparent", "tracestate", "baggage")
        if (text := _text(headers.get(key)))
    }
    return IncomingMessage(
        message_id=message_id,
        message_type=message_type,
        payload=payload,
        aggregate_type=_text(headers.get(AGGREGATE_TYPE)),
        aggregate_id=_text(headers.get(AGGREGATE_ID)),
        aggregate_version=None if version is None else int(version),
        schema_version=None if schema_version is None else int(schema_version),
        correlation_id=_text(headers.get(CORRELATION_ID)),
        causation_id=_text(headers.get(CAUSATION_ID)),
        trace_context=trace_context,
        destination=destination,
        redelivered=redelivered,
        headers=dict(headers),
    )
