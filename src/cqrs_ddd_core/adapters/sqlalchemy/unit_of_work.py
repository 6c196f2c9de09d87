"""The SQL unit of work: staged writes, flushed and committed in one go.

The unit of work owns the transaction. Stores, the outbox, the audit store
and repositories stage their records on it (they never write and never
commit); :meth:`~BaseUnitOfWork.commit` gathers everything into one
:class:`~.plan.FlushPlan` and writes it with as few trips to the database as
the dialect allows:

* SQLite: one hop to the database thread runs ``BEGIN IMMEDIATE``, one
  statement per table, ``COMMIT`` (:mod:`.sqlite`);
* PostgreSQL: one statement, committed in the same round trip (:mod:`.postgres`),
  shared with the commits running at the same time (:mod:`.postgres_group`).

No connection is held while the handler runs: nothing reaches the database
before commit, so a slow handler holds no lock and no pooled connection, and
a rollback has nothing to undo. Reads (``load_stream``, ``get``) see what is
committed; the versions staged with the writes are checked at commit.

Each step is measured into :attr:`timings` (``StepTiming``), success or not.

A commit cancelled while its flush is on its way to the database lets the
flush finish (it may commit whatever the caller does) and reports what
really happened: committed (after-commit hooks run, the cancellation reaches
the caller at its next ``await``) or rolled back. On SQLite's open writer the
flush does that itself, without a task (:func:`.sqlite.flush_open_writer`);
otherwise (the first SQLite commit) it runs as a shielded task
(:func:`_finish`). On PostgreSQL a cancelled caller waits a bounded time for
the outcome, and reports it unknown when it does not come
(:mod:`.postgres_cancel`); a
:class:`~cqrs_ddd_core.exceptions.CommitOutcomeUnknownError` is given the
message id of the command being dispatched.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from cqrs_ddd_core.adapters.sqlalchemy.engine import dialect_name
from cqrs_ddd_core.adapters.sqlalchemy.identity import database_identity
from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan
from cqrs_ddd_core.adapters.sqlalchemy.postgres_cancel import commit_alone
from cqrs_ddd_core.adapters.sqlalchemy.postgres_group import committer_for
from cqrs_ddd_core.adapters.sqlalchemy.sqlite import flush_open_writer, flush_sqlite, writer_for
from cqrs_ddd_core.context import current_context
from cqrs_ddd_core.exceptions import CommitOutcomeUnknownError, ConfigurationError, UnitOfWorkError
from cqrs_ddd_core.persistence.unit_of_work import BaseUnitOfWork, StagedGroup

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.records import DatabaseIdentity, StepTiming

__all__ = ["SQLAlchemyUnitOfWork", "engine_of"]

_Flush = Callable[[AsyncEngine, FlushPlan, "list[StepTiming]"], Any]


def engine_of(bind: AsyncEngine | async_sessionmaker[Any]) -> AsyncEngine:
    """The engine behind ``bind`` (an ``AsyncEngine`` or an ``async_sessionmaker``)."""
    if isinstance(bind, AsyncEngine):
        return bind
    if isinstance(bind, async_sessionmaker):
        engine = bind.kw.get("bind")
        if isinstance(engine, AsyncEngine):
            return engine
        raise ConfigurationError(f"{bind!r} is not bound to an AsyncEngine (bind=engine)")
    raise ConfigurationError(f"Expected an AsyncEngine or an async_sessionmaker, got {bind!r}")


class SQLAlchemyUnitOfWork(BaseUnitOfWork):
    """One transaction over a SQLite or PostgreSQL database.

    Args:
        bind: The ``AsyncEngine`` (or an ``async_sessionmaker`` bound to one)
            of the stores that stage on this unit of work.

    Use :meth:`factory` to give a mediator a ``uow_factory``.
    """

    system: ClassVar[str] = "sqlalchemy"  # the steps name the real one (sqlite, postgresql)

    def __init__(self, bind: AsyncEngine | async_sessionmaker[Any]) -> None:
        engine = engine_of(bind)
        self._setup(engine, _FLUSHES[dialect_name(engine)], database_identity(engine))

    def _setup(self, engine: AsyncEngine, flush: _Flush, database: DatabaseIdentity) -> None:
        BaseUnitOfWork.__init__(self)
        self.engine = engine
        self._flush = flush
        self.database = database  # db.namespace, server.* of its steps
        self.commit_window: tuple[int, int] | None = None

    @classmethod
    def factory(
        cls, bind: AsyncEngine | async_sessionmaker[Any]
    ) -> Callable[[], SQLAlchemyUnitOfWork]:
        """A ``uow_factory`` making units of work over ``bind``'s engine.

        The engine's dialect, flush and identity are looked up once, here
        (fails now, not at the first command), not for every unit of work.
        """
        engine = engine_of(bind)
        flush = _FLUSHES[dialect_name(engine)]
        return functools.partial(_made, cls, engine, flush, database_identity(engine))

    async def _write_and_commit(self, groups: list[StagedGroup]) -> None:
        if not groups:
            return  # nothing staged: no connection, no transaction
        plan = FlushPlan()
        for writer, records in groups:
            # Not isinstance(writer, SqlWriter): a runtime protocol check costs
            # tens of microseconds per writer, on every commit.
            add_to_plan = getattr(writer, "add_to_plan", None)
            engine = getattr(writer, "engine", None)  # (a property: read once)
            if add_to_plan is None or engine is None:
                raise UnitOfWorkError(
                    f"{writer!r} staged records on a SQLAlchemyUnitOfWork but is not a SQL "
                    "store; stores and unit of work must come from the same adapter"
                )
            if engine is not self.engine and (
                engine.sync_engine.pool is not self.engine.sync_engine.pool
            ):
                raise UnitOfWorkError(
                    f"{writer!r} writes to {writer.engine.url!r} but this unit of work "
                    f"commits to {self.engine.url!r}; one transaction needs one database"
                )
            add_to_plan(plan, records)
        started = time.time_ns()
        try:
            await self._flush(self.engine, plan, self.timings)
        finally:
            # What the caller waited for, hops and queues included: tracing
            # stretches the step spans over it (a client's view of its commit).
            self.commit_window = (started, time.time_ns())

    async def _discard(self) -> None:
        return None  # nothing reached the database before commit

    def __repr__(self) -> str:
        return f"SQLAlchemyUnitOfWork({self.engine.url.render_as_string(hide_password=True)!r})"


def _made(
    cls: type[SQLAlchemyUnitOfWork], engine: AsyncEngine, flush: _Flush, database: DatabaseIdentity
) -> SQLAlchemyUnitOfWork:
    uow = cls.__new__(cls)
    uow._setup(engine, flush, database)
    return uow


async def _flush_sqlite(engine: AsyncEngine, plan: FlushPlan, timings: list[StepTiming]) -> None:
    if not await flush_open_writer(writer_for(engine), plan, timings):
        # No open writer yet (or it died): open one, or report it, under the shield.
        await _finish(flush_sqlite(engine, plan, timings))


async def _flush_postgres(engine: AsyncEngine, plan: FlushPlan, timings: list[StepTiming]) -> None:
    committer = committer_for(engine)
    try:
        if committer is None:  # grouping turned off: one statement per commit
            await commit_alone(engine, plan, timings)
        else:  # both handle cancellation themselves
            await committer.commit(engine, plan, timings)
    except CommitOutcomeUnknownError as unknown:
        if unknown.message_id is None:
            context = current_context()
            unknown.message_id = context.message_id if context is not None else None
        raise


# Each runs its flush to the end even if the caller is cancelled meanwhile.
_FLUSHES: dict[str, _Flush] = {"sqlite": _flush_sqlite, "postgresql": _flush_postgres}


async def _finish(flush: Coroutine[Any, Any, None]) -> None:
    """Run ``flush`` to its end even if the caller is cancelled meanwhile.

    A flush that reached the database may commit whatever the caller does (on
    SQLite the database thread finishes the job anyway), so a cancellation must
    not make the unit of work report a rollback for a commit. When the flush
    committed, the cancellation is handed back to the caller's next ``await``;
    when it failed, the cancellation is raised (nothing was kept either way).
    """
    task = asyncio.ensure_future(flush)
    try:
        await asyncio.shield(task)
        return
    except asyncio.CancelledError as exc:
        if task.cancelled():  # the flush itself was cancelled (the loop is closing)
            raise
        cancelled = exc
    while not task.done():  # wait for the outcome; asyncio.wait never cancels the task
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task})
    if task.exception() is not None:
        raise cancelled  # rolled back: nothing to report but the cancellation
    current = asyncio.current_task()
    if current is not None:  # committed: deliver the cancellation at the next await
        current.uncancel()
        current.cancel()
