"""PostgreSQL flush statement: rows travel as JSON arrays and come back exactly."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_core.adapters.sqlalchemy import SQLAlchemyAuditStore, SQLAlchemyUnitOfWork
from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
from cqrs_ddd_core.adapters.sqlalchemy.postgres import flush_postgres
from cqrs_ddd_core.exceptions import PersistenceError
from cqrs_ddd_core.persistence import AuditRecord
from cqrs_ddd_core.persistence.records import StepTiming
from tests.support.commits import commit_new, stored_ids

pytestmark = pytest.mark.postgres

STARTED = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))


def record(audit_id: str, duration_ms: float) -> AuditRecord:
    return AuditRecord(
        audit_id=audit_id,
        message_id="cmd-1",
        message_type="Deposit",
        correlation_id="corr",
        causation_id=None,
        actor='a "quoted" \\ actor',
        outcome="success",
        error_type=None,
        started_at=STARTED,
        duration_ms=duration_ms,
        metadata={"z": [1, {"b": None}], "a": "ü"},
    )


async def test_every_column_kind_round_trips_through_the_statement(pg_engine: AsyncEngine) -> None:
    """Text with quotes and backslashes, NULL, floats (NaN and the infinities
    included), an aware timestamp, JSON in its key order."""
    store = SQLAlchemyAuditStore(pg_engine)
    durations = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "exact": 0.1 + 0.2}
    uow = SQLAlchemyUnitOfWork(pg_engine)
    for name, duration in durations.items():
        await store.stage(record(name, duration), uow)
    await uow.commit()

    found = {r.audit_id: r for r in await store.list_records()}
    assert math.isnan(found["nan"].duration_ms)
    assert found["inf"].duration_ms == math.inf
    assert found["-inf"].duration_ms == -math.inf
    assert found["exact"].duration_ms == 0.1 + 0.2  # the float's every bit
    for stored in found.values():
        assert stored.actor == 'a "quoted" \\ actor'
        assert stored.causation_id is None
        assert stored.started_at == STARTED.astimezone(UTC)
        assert list(stored.metadata) == ["z", "a"]
        assert stored.metadata == {"z": [1, {"b": None}], "a": "ü"}


async def test_a_row_of_the_wrong_width_is_refused_before_anything_is_sent(
    pg_engine: AsyncEngine,
) -> None:
    await commit_new(pg_engine, "a1")
    plan = FlushPlan()
    plan.outbox.append(("only", "three", "{}"))
    timings: list[StepTiming] = []

    with pytest.raises(PersistenceError, match="could not be encoded"):
        await flush_postgres(pg_engine, plan, timings)

    assert [t.error_type for t in timings] == ["PersistenceError"]
    assert await stored_ids(pg_engine) == ["a1"]
