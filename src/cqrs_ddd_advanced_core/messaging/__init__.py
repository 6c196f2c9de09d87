"""Events leave the process: the outbox relay, consumers with an inbox, broker-neutral ports.

See ``docs/tutorials/messaging.md``. Broker adapters live under
``cqrs_ddd_advanced_core.adapters`` (``rabbitmq``).
"""

from __future__ import annotations

from cqrs_ddd_advanced_core.messaging.consumer import (
    ConsumeContext,
    ConsumerMiddleware,
    IncomingUpcaster,
    MessageConsumer,
    PayloadUpcaster,
    upcast_with,
)
from cqrs_ddd_advanced_core.messaging.ports import (
    BatchProcessor,
    CommitListener,
    DeliveryProcessor,
    IncomingMessage,
    MessageHandler,
    Outcome,
    Publisher,
    Subscriber,
)
from cqrs_ddd_advanced_core.messaging.relay import OutboxRelay, Upcaster

__all__ = [
    "BatchProcessor",
    "CommitListener",
    "ConsumeContext",
    "ConsumerMiddleware",
    "DeliveryProcessor",
    "IncomingMessage",
    "IncomingUpcaster",
    "MessageConsumer",
    "MessageHandler",
    "OutboxRelay",
    "Outcome",
    "PayloadUpcaster",
    "Publisher",
    "Subscriber",
    "Upcaster",
    "upcast_with",
]
