"""RabbitMQ (aio-pika): the relay's publisher and the consumers' subscriber.

Needs the ``rabbitmq`` extra (``pip install "cqrs-ddd-advanced-core[rabbitmq]"``);
no broker plugin (see :mod:`.topology` for the exchanges and queues).
"""

from __future__ import annotations

from cqrs_ddd_advanced_core.adapters.rabbitmq.publisher import RabbitMQPublisher
from cqrs_ddd_advanced_core.adapters.rabbitmq.subscriber import RabbitMQSubscriber
from cqrs_ddd_advanced_core.adapters.rabbitmq.topology import (
    DEFAULT_EXCHANGE,
    ConsumerTopology,
    declare_exchange,
    queue_depths,
)

__all__ = [
    "DEFAULT_EXCHANGE",
    "ConsumerTopology",
    "RabbitMQPublisher",
    "RabbitMQSubscriber",
    "declare_exchange",
    "queue_depths",
]
