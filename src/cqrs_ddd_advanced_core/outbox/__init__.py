"""The transactional outbox: messages, batch service, background worker."""

from __future__ import annotations

from cqrs_ddd_advanced_core.outbox.message import current_trace_context, message_from_event
from cqrs_ddd_advanced_core.outbox.service import Backoff, BatchResult, OutboxService, Publisher
from cqrs_ddd_advanced_core.outbox.worker import OutboxWorker

__all__ = [
    "Backoff",
    "BatchResult",
    "OutboxService",
    "OutboxWorker",
    "Publisher",
    "current_trace_context",
    "message_from_event",
]
