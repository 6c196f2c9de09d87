"""The saga worker: fires due deadlines and recovers sagas left mid-way."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from cqrs_ddd_advanced_core.sagas.manager import SagaManager

__all__ = ["SagaWorker"]

_log = structlog.get_logger("cqrs_ddd_advanced_core.sagas.worker")


class SagaWorker:
    """Runs :meth:`run_once` every ``interval`` seconds until stopped.

    The first pass recovers every open saga not waiting for an event (the
    process just started: nothing else is running them); later passes only
    those not stored for ``stale_after``, so that sagas being run right now
    are left to their runner. Deadlines are rows, so a restart loses none:
    every pass fires those that are due.

    Args:
        manager: The saga manager whose sagas to look after.
        interval: Seconds between passes (positive).
        stale_after: How long a saga must have stood still to be recovered
            on a later pass.
        batch: At most this many sagas per pass and kind.
    """

    def __init__(
        self,
        manager: SagaManager,
        *,
        interval: float = 1.0,
        stale_after: timedelta = timedelta(seconds=30),
        batch: int = 100,
    ) -> None:
        if interval <= 0 or batch <= 0:
            raise ValueError("interval and batch must be positive")
        self.manager = manager
        self.interval = interval
        self.stale_after = stale_after
        self.batch = batch
        self._passes = 0

    async def run_once(self) -> tuple[int, int]:
        """One pass: fire due deadlines, recover sagas, count the open ones.

        Returns:
            (timeouts fired, sagas recovered)
        """
        fired = await self.manager.fire_due(limit=self.batch)
        stale = None if self._passes == 0 else self.stale_after
        recovered = await self.manager.recover(stale_after=stale, limit=self.batch)
        self._passes += 1
        await self.manager.count_open()
        return fired, recovered

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until ``stop`` is set; a failing pass is logged and retried."""
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception as exc:  # the next pass retries; say why this one failed
                _log.error("saga_worker_pass_failed", error_type=type(exc).__name__, exc_info=exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)

    def __repr__(self) -> str:
        return f"SagaWorker(interval={self.interval}, stale_after={self.stale_after})"
