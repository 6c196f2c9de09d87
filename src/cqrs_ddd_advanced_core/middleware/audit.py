"""Record who sent which command, when, and how it ended.

How a record is written depends on the outcome, so that the audit of a
failure can never be rolled back silently and never blocks the database:

* **success, inside a unit of work**: the record (``outcome="success"``) is
  staged in the same transaction, so it exists exactly when the command's
  effects do. An ``after_rollback`` hook covers a later failure (the commit,
  or an outer step): it writes a ``"rolled_back"`` record in a transaction of
  its own.
* **failure, inside a unit of work**: the ``"error"`` record is written by an
  ``after_rollback`` / ``after_commit`` hook, once the transaction has ended
  (a nested command's failure may be caught by its parent, which then
  commits). It is never staged in the doomed transaction, and never written
  while that transaction is open: on SQLite a second writer would wait for
  the open write transaction and could deadlock the command.
* **outside a unit of work** (no ``context.uow``): the record is written on
  its own once the outcome is known, including the commit's outcome when the
  unit of work is listed inside the audit.

The original exception always propagates unchanged; a failing audit write
after a failed command is logged, not raised.

Where the audit is listed decides what it sees. Listed outside ``validation``
it records commands rejected by validation (``error_type =
"MessageValidationError"``); listed inside ``unit_of_work`` (after
validation) it never sees them, because they stop before reaching it.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from cqrs_ddd_core.domain.messages import new_id, utc_now
from cqrs_ddd_core.persistence.records import AuditRecord

if TYPE_CHECKING:
    from cqrs_ddd_core.context import DispatchContext
    from cqrs_ddd_core.persistence.ports import AuditStore
    from cqrs_ddd_core.pipeline.pipeline import CallNext

__all__ = ["AuditMiddleware"]

_log = structlog.get_logger("cqrs_ddd_advanced_core.audit")


class AuditMiddleware:
    """Writes an :class:`AuditRecord` for every command (see the module docstring).

    Args:
        audit_store: The audit port.
        actor_key: The ``context.metadata`` key naming who sent the command
            (``mediator.send(cmd, metadata={"actor": "alice"})``).
    """

    name = "audit"

    __slots__ = ("_actor_key", "_store")

    def __init__(self, *, audit_store: AuditStore, actor_key: str = "actor") -> None:
        if not callable(getattr(audit_store, "write", None)):
            raise TypeError(f"audit_store must be an AuditStore, got {audit_store!r}")
        if not actor_key:
            raise ValueError("actor_key must be a non-empty string")
        self._store = audit_store
        self._actor_key = actor_key

    async def __call__(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        started_at = utc_now()
        start = time.perf_counter()
        try:
            response = await call_next(message, context)
        except BaseException as exc:
            record = self._record(context, started_at, start, "error", type(exc).__name__)
            uow = context.uow
            if uow is not None and uow.is_open:
                write = _Writer(self._store, record)
                uow.after_rollback(write)
                uow.after_commit(write)  # a parent caught the failure and committed
            else:
                await _Writer(self._store, record)()
            raise
        record = self._record(context, started_at, start, "success", None)
        uow = context.uow
        if uow is not None and uow.is_open:
            await self._store.stage(record, uow)
            rolled_back = dataclasses.replace(record, audit_id=new_id(), outcome="rolled_back")
            uow.after_rollback(_Writer(self._store, rolled_back))
        else:
            await self._store.write(record)
        return response

    def _record(
        self,
        context: DispatchContext,
        started_at: datetime,
        start: float,
        outcome: str,
        error_type: str | None,
    ) -> AuditRecord:
        actor = context.metadata.get(self._actor_key)
        return AuditRecord(
            audit_id=new_id(),
            message_id=context.message_id,
            message_type=context.message_type,
            correlation_id=context.correlation_id,
            causation_id=context.causation_id,
            actor=None if actor is None else str(actor),
            outcome=outcome,
            error_type=error_type,
            started_at=started_at,
            duration_ms=(time.perf_counter() - start) * 1000.0,
        )

    def __repr__(self) -> str:
        return f"AuditMiddleware(audit_store={self._store!r}, actor_key={self._actor_key!r})"


class _Writer:
    """Writes one record in its own transaction; logs instead of raising."""

    __slots__ = ("_record", "_store")

    def __init__(self, store: AuditStore, record: AuditRecord) -> None:
        self._store = store
        self._record = record

    async def __call__(self) -> None:
        try:
            await self._store.write(self._record)
        except Exception as exc:
            _log.error(
                "audit_write_failed",
                message_type=self._record.message_type,
                message_id=self._record.message_id,
                outcome=self._record.outcome,
                error_type=type(exc).__name__,
                exc_info=exc,
            )
