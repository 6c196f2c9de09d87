"""Reading committed rows: statements compiled once, one trip to the database each.

Each read is a SQLAlchemy Core ``select`` with named ``bindparam`` s, compiled
once per dialect when the module is imported (:class:`Query`), and costs one
trip to the database: on SQLite one hop to a reader thread of the adapter's
own (:mod:`.sqlite_reader`; through SQLAlchemy's async layer each statement
costs several), on PostgreSQL one round trip on a connection checked out of
the engine's pool, in autocommit mode (no ``BEGIN``/``ROLLBACK`` around it).

Reads never join a unit of work: the unit of work writes only at commit, so
there is nothing uncommitted to see, and the versions it staged are checked
when it commits.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, overload

from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import await_only, greenlet_spawn

from cqrs_ddd_core.adapters.sqlalchemy.engine import dialect_name
from cqrs_ddd_core.adapters.sqlalchemy.errors import persistence_error, sqlstate
from cqrs_ddd_core.adapters.sqlalchemy.identity import database_identity
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_reader import reader_for
from cqrs_ddd_core.persistence.records import StepTiming
from cqrs_ddd_core.persistence.steps import reads_wanted
from cqrs_ddd_core.telemetry.api import error_type

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.sql import ClauseElement

__all__ = ["Query", "aware", "fetch"]


class Query:
    """A statement compiled for SQLite and PostgreSQL, with its parameter order.

    Attributes:
        collection: The table it reads first (``db.collection.name`` of its span).
    """

    __slots__ = ("_compiled", "collection")

    def __init__(self, statement: ClauseElement) -> None:
        self._compiled: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {}
        froms: list[Any] = list(getattr(statement, "get_final_froms", list)())
        self.collection: str | None = getattr(froms[0], "name", None) if froms else None
        for name, dialect in (
            ("sqlite", sqlite_dialect.dialect()),
            ("postgresql", asyncpg_dialect.dialect()),  # type: ignore[no-untyped-call]
        ):
            compiled = statement.compile(dialect=dialect)
            if not isinstance(compiled, SQLCompiler):  # a select always compiles to one
                raise TypeError(f"{statement!r} is not a SQL statement")
            self._compiled[name] = (
                str(compiled),
                tuple(compiled.positiontup or ()),
                dict(compiled.params),
            )

    def sql(self, dialect: str, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The text for ``dialect`` and its positional arguments from ``values``."""
        text, names, defaults = self._compiled[dialect]
        return text, [values[name] if name in values else defaults[name] for name in names]


def _fetch_in_greenlet(engine: Engine, dialect: str, sql: str, args: list[Any]) -> list[Any]:
    # One greenlet for checkout, query and checkin: each greenlet_spawn costs
    # about as much as the pool work itself.
    fairy = engine.raw_connection()
    driver: Any = fairy.driver_connection
    try:
        return list(await_only(driver.fetch(sql, *args)))
    except Exception as exc:
        if sqlstate(exc) is None:
            fairy.invalidate(exc)  # the connection itself failed
        raise
    except BaseException:
        fairy.invalidate()  # cancelled mid-read: the connection's state is unknown
        raise
    finally:
        fairy.close()


async def fetch(engine: AsyncEngine, query: Query, **values: Any) -> list[Any]:
    """The rows ``query`` returns for ``values`` (tuples; driver types, see :func:`aware`).

    Raises:
        PersistenceError: the database failed.
    """
    dialect = dialect_name(engine)
    sql, args = query.sql(dialect, values)
    steps = reads_wanted()  # a list while tracing records the dispatch's span
    if steps is None:
        try:
            return await _run(engine, dialect, sql, args)
        except Exception as exc:
            raise persistence_error(exc, "Reading failed") from exc
    start = time.time_ns()
    try:
        rows = await _run(engine, dialect, sql, args)
    except Exception as exc:
        error = persistence_error(exc, "Reading failed")
        steps.append(_read_step(engine, dialect, query, start, 0, error_type(error)))
        raise error from exc
    steps.append(_read_step(engine, dialect, query, start, len(rows), None))
    return rows


async def _run(engine: AsyncEngine, dialect: str, sql: str, args: Any) -> list[Any]:
    if dialect == "sqlite":
        return await reader_for(engine).fetch(engine, sql, args)
    return await greenlet_spawn(_fetch_in_greenlet, engine.sync_engine, dialect, sql, args)


def _read_step(
    engine: AsyncEngine, dialect: str, query: Query, start: int, rows: int, error: str | None
) -> StepTiming:
    """The read as a ``SELECT <table>`` step (a client span under the dispatch's)."""
    return StepTiming(
        "SELECT",
        query.collection,
        dialect,
        start,
        time.time_ns(),
        rows,
        error,
        database_identity(engine),
    )


@overload
def aware(value: datetime | str) -> datetime: ...


@overload
def aware(value: None) -> None: ...


def aware(value: datetime | str | None) -> datetime | None:
    """A stored timestamp as an aware UTC datetime.

    PostgreSQL returns aware datetimes; SQLite returns the text SQLAlchemy
    stores (``2024-01-01 12:00:00.000000``, UTC), or a naive datetime when read
    through SQLAlchemy's own type.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
