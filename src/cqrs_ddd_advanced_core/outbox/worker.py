"""A background worker that drains the outbox to a publisher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from cqrs_ddd_advanced_core.outbox.service import Backoff, BatchResult, OutboxService, Publisher
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.telemetry.api import error_type

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.ports import OutboxStore
    from cqrs_ddd_core.persistence.records import OutboxMessage

__all__ = ["OutboxWorker"]

_log = structlog.get_logger("cqrs_ddd_advanced_core.outbox")


class OutboxWorker:
    """Claims due outbox messages in batches and publishes them.

    Args:
        outbox_store: The outbox to drain.
        publisher: Where messages go (``async publish(message)``).
        batch_size: Messages claimed per batch.
        poll_interval: Seconds to wait when a batch found nothing to do.
        backoff: Retry delay after a failed publish (exponential).
        clock: The current time.
        upcaster: Applied to each message before it is published (see
            :class:`~.service.OutboxService`).

    ``run_once()`` processes one batch; ``run(stop_event)`` loops until the
    event is set, draining full batches back to back and sleeping
    ``poll_interval`` when idle. An error of the store itself (not of a
    publish) is logged and retried after ``poll_interval``.
    """

    __slots__ = ("_batch_size", "_poll_interval", "_publisher", "_service")

    def __init__(
        self,
        outbox_store: OutboxStore,
        publisher: Publisher,
        *,
        batch_size: int = 100,
        poll_interval: float = 1.0,
        backoff: Backoff | None = None,
        clock: Callable[[], datetime] = utc_now,
        upcaster: Callable[[OutboxMessage], OutboxMessage] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if poll_interval < 0:
            raise ValueError(f"poll_interval must not be negative, got {poll_interval}")
        if not callable(getattr(publisher, "publish", None)):
            raise TypeError(f"publisher must have an async publish(message), got {publisher!r}")
        self._service = OutboxService(outbox_store, backoff=backoff, clock=clock, upcaster=upcaster)
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval = poll_interval

    async def run_once(self) -> BatchResult:
        """Claim one batch and publish it."""
        return await self._service.publish_batch(self._publisher, limit=self._batch_size)

    async def run(self, stop_event: asyncio.Event) -> None:
        """Publish until ``stop_event`` is set."""
        while not stop_event.is_set():
            try:
                result = await self.run_once()
            except Exception as exc:
                _log.error("outbox_worker_batch_failed", error_type=error_type(exc), exc_info=exc)
                result = BatchResult()
            if result.processed < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_event.wait(), timeout=self._poll_interval)

    def __repr__(self) -> str:
        return (
            f"OutboxWorker(publisher={self._publisher!r}, batch_size={self._batch_size}, "
            f"poll_interval={self._poll_interval})"
        )
