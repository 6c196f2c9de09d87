"""The in-memory audit store: staged records roll back with their transaction."""

from __future__ import annotations

from cqrs_ddd_core.adapters.memory import InMemoryAuditStore, InMemoryUnitOfWork
from cqrs_ddd_core.domain import new_id, utc_now
from cqrs_ddd_core.persistence import AuditRecord


def record(correlation_id: str, outcome: str = "success") -> AuditRecord:
    return AuditRecord(
        audit_id=new_id(),
        message_id=new_id(),
        message_type="PlaceOrder",
        correlation_id=correlation_id,
        causation_id=None,
        actor="alice",
        outcome=outcome,
        error_type=None,
        started_at=utc_now(),
        duration_ms=1.5,
    )


async def test_staged_records_are_kept_on_commit_and_dropped_on_rollback() -> None:
    audit = InMemoryAuditStore()
    committed, rolled_back = InMemoryUnitOfWork(), InMemoryUnitOfWork()
    kept = record("flow-1")
    await audit.stage(kept, committed)
    await audit.stage(record("flow-2"), rolled_back)

    await committed.commit()
    await rolled_back.rollback()

    assert await audit.list_records() == [kept]


async def test_a_record_written_directly_is_kept_and_listed_by_correlation_id() -> None:
    audit = InMemoryAuditStore()
    error = record("flow-1", outcome="error")
    await audit.write(error)
    await audit.write(record("flow-2"))

    assert await audit.list_records(correlation_id="flow-1") == [error]
    assert len(await audit.list_records()) == 2
