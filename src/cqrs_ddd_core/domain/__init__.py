"""The domain building blocks: messages and aggregate roots."""

from __future__ import annotations

from cqrs_ddd_core.domain.aggregate import AggregateRoot
from cqrs_ddd_core.domain.messages import Command, DomainEvent, Message, Query, new_id, utc_now

__all__ = ["AggregateRoot", "Command", "DomainEvent", "Message", "Query", "new_id", "utc_now"]
