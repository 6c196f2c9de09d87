"""An in-memory projection store: a read model and checkpoints that commit together.

A transaction works on a copy of the committed read model (``tx.data``) and
checkpoints; the copy replaces them when the block ends without error, so a
batch that fails leaves nothing behind. Transactions run one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from cqrs_ddd_core.exceptions import ConcurrencyError

__all__ = ["InMemoryProjectionSession", "InMemoryProjectionStore", "InMemoryProjectionTransaction"]


class InMemoryProjectionTransaction:
    """What a projection's handlers write to: ``data``, a dict they lay out as they like.

    Attributes:
        data: The read model (a private copy until the transaction commits).
    """

    __slots__ = ("_checkpoints", "data")

    def __init__(self, data: dict[str, Any], checkpoints: dict[str, int]) -> None:
        self.data = data
        self._checkpoints = checkpoints


class InMemoryProjectionSession:
    """Every runner is active; new events are found by polling (or :meth:`notify`)."""

    def __init__(self) -> None:
        self._wake = asyncio.Event()

    @property
    def active(self) -> bool:
        """Always True: in memory every runner is active."""
        return True

    async def acquire(self) -> None:
        """Return at once: in memory there is one process."""

    def notify(self) -> None:
        """Wake a runner waiting in :meth:`wait_for_events` now."""
        self._wake.set()

    async def wait_for_events(self, seconds: float) -> None:
        """Return after ``seconds``, or sooner when :meth:`notify` is called."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()


class InMemoryProjectionStore:
    """Read models and checkpoints held in memory.

    Attributes:
        data: The committed read model, shared by the projections of this store.
    """

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self._checkpoints: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._sessions: list[InMemoryProjectionSession] = []

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[InMemoryProjectionTransaction]:
        """A copy of the read model and checkpoints, kept if the block ends without error."""
        async with self._lock:
            tx = InMemoryProjectionTransaction(copy.deepcopy(self.data), dict(self._checkpoints))
            yield tx
            self.data = tx.data
            self._checkpoints = tx._checkpoints

    async def checkpoint(self, name: str) -> int:
        """The committed position of projection ``name`` (0 before its first batch)."""
        return self._checkpoints.get(name, 0)

    async def checkpoints(self) -> dict[str, int]:
        """Every projection's committed position, by name."""
        return dict(self._checkpoints)

    async def advance(
        self, tx: InMemoryProjectionTransaction, name: str, *, expected: int, position: int
    ) -> None:
        """Move ``name``'s checkpoint from ``expected`` to ``position`` in ``tx``.

        Raises:
            ConcurrencyError: it is no longer at ``expected``.
        """
        current = tx._checkpoints.get(name, 0)
        if current != expected:
            raise ConcurrencyError(f"projection:{name}", expected, current)
        tx._checkpoints[name] = position

    async def reset(self, tx: InMemoryProjectionTransaction, name: str) -> None:
        """Set ``name``'s checkpoint back to 0 in ``tx``."""
        tx._checkpoints[name] = 0

    @asynccontextmanager
    async def session(self, name: str) -> AsyncIterator[InMemoryProjectionSession]:
        """A session that polls; :meth:`notify_all` wakes every open one."""
        session = InMemoryProjectionSession()
        self._sessions.append(session)
        try:
            yield session
        finally:
            self._sessions.remove(session)

    def notify_all(self) -> None:
        """Wake every runner waiting for events (call it after appending)."""
        for session in self._sessions:
            session.notify()

    def __repr__(self) -> str:
        return f"InMemoryProjectionStore(checkpoints={self._checkpoints})"
