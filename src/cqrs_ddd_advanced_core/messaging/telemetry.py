"""Messaging telemetry: names per the OpenTelemetry messaging conventions, and instruments.

Spans: ``publish <exchange>`` (PRODUCER, child of the command's span whose
context the outbox row stored, and linked to it) and ``process <queue>``
(CONSUMER, child of the producer span whose context the message carried), so
one trace runs from the command to the remote handler.

Metrics (seconds; explicit buckets):

* ``messaging.client.operation.duration`` (publish, confirm included),
  ``messaging.process.duration``;
* ``messaging.client.sent.messages``, ``messaging.client.consumed.messages``
  (with ``cqrs.outcome``: ``handled``, ``duplicate``, ``ignored``, ``error``);
* ``cqrs.outbox.dead_lettered`` (the relay gave up), ``cqrs.consumer.dead_lettered``;
* ``cqrs.outbox.lag``: the age in seconds of the oldest unpublished message.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar, Final

from opentelemetry import trace

from cqrs_ddd_core.telemetry.api import get_tracer
from cqrs_ddd_core.telemetry.names import DURATION_BUCKETS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from opentelemetry.metrics import CallbackOptions, Meter, Observation

__all__ = [
    "ATTR_CONSUMER_GROUP",
    "ATTR_CONVERSATION_ID",
    "ATTR_DESTINATION",
    "ATTR_MESSAGE_ID",
    "ATTR_OPERATION_NAME",
    "ATTR_OPERATION_TYPE",
    "ATTR_ROUTING_KEY",
    "ATTR_SYSTEM",
    "METRIC_CONSUMED",
    "METRIC_CONSUMER_DEAD_LETTERED",
    "METRIC_OUTBOX_DEAD_LETTERED",
    "METRIC_OUTBOX_LAG",
    "METRIC_PROCESS_DURATION",
    "METRIC_PUBLISH_DURATION",
    "METRIC_SENT",
    "LazyTracer",
    "MessagingInstruments",
    "observe_lag",
]

ATTR_SYSTEM: Final = "messaging.system"
ATTR_DESTINATION: Final = "messaging.destination.name"
ATTR_OPERATION_NAME: Final = "messaging.operation.name"
ATTR_OPERATION_TYPE: Final = "messaging.operation.type"
ATTR_MESSAGE_ID: Final = "messaging.message.id"
ATTR_CONVERSATION_ID: Final = "messaging.message.conversation_id"
ATTR_ROUTING_KEY: Final = "messaging.rabbitmq.destination.routing_key"
ATTR_CONSUMER_GROUP: Final = "messaging.consumer.group.name"

METRIC_PUBLISH_DURATION: Final = "messaging.client.operation.duration"
METRIC_PROCESS_DURATION: Final = "messaging.process.duration"
METRIC_SENT: Final = "messaging.client.sent.messages"
METRIC_CONSUMED: Final = "messaging.client.consumed.messages"
METRIC_OUTBOX_DEAD_LETTERED: Final = "cqrs.outbox.dead_lettered"
METRIC_CONSUMER_DEAD_LETTERED: Final = "cqrs.consumer.dead_lettered"
METRIC_OUTBOX_LAG: Final = "cqrs.outbox.lag"


class LazyTracer:
    """The messaging spans' tracer, and whether a tracing SDK is there to record them.

    With no SDK (the API's no-op tracer, directly or behind the global proxy
    while no provider is installed) :meth:`recording` is False and the
    publisher and the consumer skip their span work: extracting the stored
    context, building attributes, starting a span that records nothing. An
    SDK installed later is picked up within ``RECHECK`` seconds (asking the
    API for the global provider reads the environment each time: a few
    microseconds per message otherwise).

    Args:
        tracer_provider: Use this provider instead of the global one.
    """

    __slots__ = ("_next_check", "_noop", "_unset", "tracer")

    RECHECK: ClassVar[float] = 0.1
    """Seconds between two looks for a global provider installed since."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        tracer = get_tracer(tracer_provider)
        self.tracer: trace.Tracer = tracer
        # No provider given and none installed: the API's placeholder provider,
        # remembered; while it is still the global one there is nothing to record.
        self._unset = trace.get_tracer_provider() if type(tracer) is trace.ProxyTracer else None
        self._noop = isinstance(tracer, trace.NoOpTracer)
        self._next_check = 0.0  # the first call looks

    def recording(self) -> bool:
        """Whether spans can record (an SDK is installed); ``tracer`` is then the SDK's."""
        unset = self._unset
        if unset is not None:
            now = time.monotonic()
            if now < self._next_check:
                return False
            self._next_check = now + self.RECHECK
            provider = trace.get_tracer_provider()
            if provider is unset:
                return False
            self.tracer, self._unset = get_tracer(provider), None  # installed: for good
            self._noop = isinstance(self.tracer, trace.NoOpTracer)
        return not self._noop


class MessagingInstruments:
    """The messaging instruments of one meter (created once per relay or consumer)."""

    __slots__ = (
        "consumed",
        "consumer_dead_lettered",
        "outbox_dead_lettered",
        "process_duration",
        "publish_duration",
        "sent",
    )

    def __init__(self, meter: Meter) -> None:
        self.publish_duration = meter.create_histogram(
            METRIC_PUBLISH_DURATION,
            unit="s",
            description="Time to publish one message, until the broker confirmed it.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.process_duration = meter.create_histogram(
            METRIC_PROCESS_DURATION,
            unit="s",
            description="Time to process one delivery, commit included.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.sent = meter.create_counter(
            METRIC_SENT, unit="{message}", description="Messages the broker confirmed."
        )
        self.consumed = meter.create_counter(
            METRIC_CONSUMED, unit="{message}", description="Deliveries processed, by outcome."
        )
        self.outbox_dead_lettered = meter.create_counter(
            METRIC_OUTBOX_DEAD_LETTERED,
            unit="{message}",
            description="Outbox messages the relay gave up on (dead letters).",
        )
        self.consumer_dead_lettered = meter.create_counter(
            METRIC_CONSUMER_DEAD_LETTERED,
            unit="{message}",
            description="Deliveries rejected to the dead-letter exchange.",
        )


def observe_lag(meter: Meter, lag: Callable[[], float | None]) -> None:
    """Report ``lag()`` (seconds, None: unknown yet) as the ``cqrs.outbox.lag`` gauge."""
    from opentelemetry.metrics import Observation

    def callback(_: CallbackOptions) -> Iterable[Observation]:
        value = lag()
        return () if value is None else (Observation(value),)

    meter.create_observable_gauge(
        METRIC_OUTBOX_LAG,
        callbacks=[callback],
        unit="s",
        description="Age of the oldest unpublished outbox message (0 when none).",
    )
