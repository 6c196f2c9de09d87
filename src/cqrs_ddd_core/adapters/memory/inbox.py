"""An in-memory inbox: handled message ids per consumer, kept at commit."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cqrs_ddd_core.exceptions import PersistenceError

__all__ = ["InMemoryInboxStore", "InMemoryInboxTransaction"]


class InMemoryInboxTransaction:
    """One delivery's transaction: effects are ``after_commit`` hooks (no connection)."""

    connection = None

    def __init__(self, store: InMemoryInboxStore) -> None:
        self._store = store
        self._keys: list[tuple[str, str]] = []
        self._hooks: list[Callable[[], None]] = []
        self._open = True

    async def record(self, consumer: str, message_id: str, message_type: str) -> bool:
        """Note the message for this transaction; False if ``consumer`` handled it already."""
        key = (consumer, message_id)
        if key in self._store.handled or key in self._keys:
            return False
        self._keys.append(key)
        return True

    async def record_many(self, consumer: str, messages: Sequence[tuple[str, str]]) -> set[str]:
        """:meth:`record` for each pair ``(message_id, message_type)``; the ids that were new."""
        return {m for m, t in messages if await self.record(consumer, m, t)}

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook()`` once the transaction has committed."""
        self._hooks.append(hook)

    async def commit(self) -> None:
        """Keep the message id and run the hooks (the effects)."""
        if not self._open:
            raise PersistenceError("The inbox transaction is closed")
        self._open = False
        for key in self._keys:
            if key in self._store.handled:  # a concurrent delivery won
                raise PersistenceError(f"Message {key[1]} was handled meanwhile")
        self._store.handled.update(self._keys)
        for hook in self._hooks:
            hook()

    async def rollback(self) -> None:
        """Forget everything."""
        self._open = False


class InMemoryInboxStore:
    """Handled ``(consumer, message_id)`` pairs in a set."""

    def __init__(self) -> None:
        self.handled: set[tuple[str, str]] = set()

    async def begin(self) -> InMemoryInboxTransaction:
        """Open a transaction for one delivery."""
        return InMemoryInboxTransaction(self)

    async def has_handled(self, consumer: str, message_id: str) -> bool:
        """Whether ``consumer`` committed the handling of ``message_id``."""
        return (consumer, message_id) in self.handled

    def __repr__(self) -> str:
        return f"InMemoryInboxStore(handled={len(self.handled)})"
