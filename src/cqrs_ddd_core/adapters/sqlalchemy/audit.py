"""The SQL audit store: records staged with the command, or written on their own."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.exc import DBAPIError

from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error
from cqrs_ddd_core.adapters.sqlalchemy.plan import AUDIT_COLUMNS, as_utc
from cqrs_ddd_core.adapters.sqlalchemy.reads import Query, aware, fetch
from cqrs_ddd_core.adapters.sqlalchemy.tables import audit_log
from cqrs_ddd_core.persistence.records import AuditRecord
from cqrs_ddd_core.persistence.serialization import dumps

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
    from cqrs_ddd_core.persistence.ports import UnitOfWork

__all__ = ["SQLAlchemyAuditStore"]

_COLUMNS = tuple(audit_log.c[name] for name in AUDIT_COLUMNS)
_ALL = select(*_COLUMNS).order_by(audit_log.c.id)
_LIST = Query(_ALL)
_LIST_BY_CORRELATION = Query(_ALL.where(audit_log.c.correlation_id == bindparam("correlation_id")))


def _row(record: AuditRecord) -> tuple[Any, ...]:
    return (
        record.audit_id,
        record.message_id,
        record.message_type,
        record.correlation_id,
        record.causation_id,
        record.actor,
        record.outcome,
        record.error_type,
        as_utc(record.started_at),
        float(record.duration_ms),
        dumps(record.metadata, "AuditRecord") if record.metadata else "{}",
    )


class SQLAlchemyAuditStore:
    """Audit records in the ``audit_log`` table.

    Args:
        engine: The database (a unit of work staging records must use the same one).
    """

    collection = "audit_log"

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def stage(self, record: AuditRecord, uow: UnitOfWork) -> None:
        uow.stage(self, _row(record))

    def add_to_plan(self, plan: FlushPlan, records: list[tuple[Any, ...]]) -> None:
        plan.audit.extend(records)

    async def write(self, record: AuditRecord) -> None:
        values = dict(zip(AUDIT_COLUMNS, _row(record), strict=True))
        values["metadata"] = json.loads(values["metadata"])
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(audit_log).values(values))
        except DBAPIError as exc:
            raise persistence_error(exc.orig or exc, "Writing the audit record failed") from exc

    async def list_records(self, *, correlation_id: str | None = None) -> list[AuditRecord]:
        if correlation_id is None:
            rows = await fetch(self._engine, _LIST)
        else:
            rows = await fetch(self._engine, _LIST_BY_CORRELATION, correlation_id=correlation_id)
        return [
            AuditRecord(
                audit_id=row[0],
                message_id=row[1],
                message_type=row[2],
                correlation_id=row[3],
                causation_id=row[4],
                actor=row[5],
                outcome=row[6],
                error_type=row[7],
                started_at=aware(row[8]),
                duration_ms=row[9],
                metadata=json.loads(row[10]) if isinstance(row[10], str) else row[10],
            )
            for row in rows
        ]

    def __repr__(self) -> str:
        return f"SQLAlchemyAuditStore({self._engine.url.render_as_string(hide_password=True)!r})"
