"""In-memory adapters of the advanced package: first-class, transactional."""

from __future__ import annotations

from cqrs_ddd_advanced_core.adapters.memory.sagas import InMemorySagaStore

__all__ = ["InMemorySagaStore"]
