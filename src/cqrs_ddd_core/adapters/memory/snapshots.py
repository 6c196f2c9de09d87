"""An in-memory snapshot store: the latest snapshot of each stream, in a dict."""

from __future__ import annotations

from cqrs_ddd_core.persistence.records import Snapshot

__all__ = ["InMemorySnapshotStore"]


class InMemorySnapshotStore:
    """Keeps one snapshot per stream; a lower version never replaces a higher one."""

    def __init__(self) -> None:
        self._snapshots: dict[tuple[str, str], Snapshot] = {}

    async def save(self, snapshot: Snapshot) -> bool:
        """Store ``snapshot`` unless one at a higher version is stored already."""
        key = (snapshot.aggregate_type, snapshot.aggregate_id)
        known = self._snapshots.get(key)
        if known is not None and known.version >= snapshot.version:
            return False
        self._snapshots[key] = snapshot
        return True

    async def latest(self, aggregate_type: str, aggregate_id: str) -> Snapshot | None:
        """The stream's snapshot, or ``None``."""
        return self._snapshots.get((aggregate_type, aggregate_id))

    async def delete(self, aggregate_type: str, aggregate_id: str) -> None:
        """Forget the stream's snapshot."""
        self._snapshots.pop((aggregate_type, aggregate_id), None)

    def __len__(self) -> int:
        return len(self._snapshots)

    def __repr__(self) -> str:
        return f"InMemorySnapshotStore(snapshots={len(self._snapshots)})"
