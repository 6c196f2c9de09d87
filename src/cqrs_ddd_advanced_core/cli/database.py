"""The demo's database: URLs, opening it, and what the tables say after a run.

The demo reads its tables with plain SQL through the engine the SQLAlchemy
adapters created (``exec_driver_sql``), the same text on SQLite and
PostgreSQL: row counts per aggregate type, and the checks that nothing was
half written:

* every event stream has versions ``1..n`` without a gap;
* every event has its outbox message, and every outbox message of an
  event-sourced type has its event;
* no event of a non-event-sourced type reached the event store, and each
  state-stored aggregate's version equals the number of its outbox messages.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_DATABASE",
    "DatabaseError",
    "Integrity",
    "TableCounts",
    "check_integrity",
    "count_rows",
    "dialect_of",
    "open_database",
    "redact",
]

DEFAULT_DATABASE = Path("demo-data") / "demo.db"

_SCHEMES = {
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "postgres": "postgresql",
    "postgresql": "postgresql",
    "postgresql+asyncpg": "postgresql",
}

Engine = Any
"""An ``AsyncEngine`` of the SQLAlchemy adapters (the CLI imports SQLAlchemy only through them)."""


class DatabaseError(Exception):
    """The database cannot be used; the message is one line for the user."""


def dialect_of(url: str) -> str:
    """``"sqlite"`` or ``"postgresql"``; raises ``ValueError`` with a one-line reason."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(
            f"not a database URL: {url!r} (expected sqlite:///path or postgresql://...)"
        )
    dialect = _SCHEMES.get(scheme.lower())
    if dialect is None:
        known = ", ".join(sorted(_SCHEMES))
        raise ValueError(f"unsupported database URL scheme {scheme!r} (use one of: {known})")
    if dialect == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        path = path.split("?", 1)[0]
        if not path or path == ":memory:" or "mode=memory" in rest:
            raise ValueError("the demo needs a SQLite *file*: sqlite:///path/to/demo.db")
    elif not rest.split("/", 1)[0]:
        raise ValueError(f"no host in {redact(url)!r} (postgresql://user@host:port/database)")
    else:
        try:
            urllib.parse.urlsplit(url).port  # noqa: B018 (parsing it is the check)
        except ValueError:
            netloc = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]
            raise ValueError(
                f"the port in {netloc!r} is not a number from 0 to 65535 "
                "(postgresql://user@host:5432/database)"
            ) from None
    return dialect


def redact(url: str) -> str:
    """``url`` without its password."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parsed._replace(netloc=netloc))


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite://`` URL points at."""
    rest = url.partition("://")[2]
    return Path((rest[1:] if rest.startswith("/") else rest).split("?", 1)[0])


def _reason(exc: BaseException) -> str:
    """The most telling one-line message in an exception chain (driver errors are wrapped)."""
    seen: list[BaseException] = []
    node: BaseException | None = exc
    while node is not None and node not in seen:
        seen.append(node)
        node = node.__cause__ or node.__context__
    root = seen[-1]
    text = " ".join(str(root).split()) or type(root).__name__
    text = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", text)
    return f"{type(root).__name__}: {text}" if not text.startswith(type(root).__name__) else text


async def open_database(
    url: str,
    *,
    fresh: bool,
    pool_size: int,
    sqlite_synchronous: str = "FULL",
    connect_timeout: float = 10.0,
) -> Engine:
    """An engine on ``url`` with the adapters' tables created.

    ``fresh`` (the default database) deletes the SQLite file first.

    Raises:
        DatabaseError: unreachable, refused, or not a database we can write.
    """
    from cqrs_ddd_core.adapters.sqlalchemy import create_engine, create_tables

    if dialect_of(url) == "sqlite":
        await asyncio.to_thread(_prepare_sqlite_file, url, fresh)
    try:
        engine = create_engine(
            url,
            pool_size=pool_size,
            sqlite_synchronous=sqlite_synchronous,  # type: ignore[arg-type]
        )
    except ModuleNotFoundError:  # a missing extra: the CLI names it
        raise
    except Exception as exc:
        raise DatabaseError(f"cannot use {redact(url)}: {_reason(exc)}") from exc
    try:
        await asyncio.wait_for(create_tables(engine), connect_timeout)
    except TimeoutError as exc:
        await engine.dispose()
        raise DatabaseError(
            f"cannot reach the database at {redact(url)}: no answer in {connect_timeout:g} s"
        ) from exc
    except Exception as exc:
        await engine.dispose()
        raise DatabaseError(f"cannot reach the database at {redact(url)}: {_reason(exc)}") from exc
    return engine


def _prepare_sqlite_file(url: str, fresh: bool) -> None:
    path = sqlite_path(url)
    if fresh:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        except OSError as exc:  # a read-only directory, a file in the way...
            raise DatabaseError(
                f"cannot create {path}: {exc.strerror or exc} (hint: run the demo in a "
                "writable directory, or pass --database-url sqlite:///path/to/demo.db)"
            ) from exc
    elif not path.parent.is_dir():
        raise DatabaseError(f"cannot open {redact(url)}: directory {path.parent} does not exist")


async def _rows(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(sql)
        return [tuple(row) for row in result.all()]


def _literal_list(values: Iterable[str]) -> str:
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values) or "''"


@dataclass(frozen=True)
class TableCounts:
    """Rows per aggregate type in ``events`` and ``outbox``, and the audit records."""

    events: Counter[str] = field(default_factory=Counter)
    outbox: Counter[str] = field(default_factory=Counter)
    audit: int = 0

    def __sub__(self, before: TableCounts) -> TableCounts:
        return TableCounts(
            events=self.events - before.events,
            outbox=self.outbox - before.outbox,
            audit=self.audit - before.audit,
        )


async def count_rows(engine: Engine) -> TableCounts:
    """How many rows each of the library's tables holds (events per aggregate type)."""
    events = await _rows(
        engine, "SELECT aggregate_type, count(*) FROM events GROUP BY aggregate_type"
    )
    outbox = await _rows(
        engine,
        "SELECT coalesce(aggregate_type, 'none'), count(*) FROM outbox GROUP BY aggregate_type",
    )
    audit = await _rows(engine, "SELECT count(*) FROM audit_log")
    return TableCounts(
        events=Counter({str(k): int(n) for k, n in events}),
        outbox=Counter({str(k): int(n) for k, n in outbox}),
        audit=int(audit[0][0]),
    )


@dataclass(frozen=True)
class Integrity:
    """What the checks found (every ``*_broken`` / ``*_missing`` count must be 0)."""

    streams: int
    streams_broken: int
    events_without_outbox: int
    outbox_without_event: int
    state_events_in_store: int
    states: int
    states_out_of_step: int

    @property
    def ok(self) -> bool:
        return not (
            self.streams_broken
            or self.events_without_outbox
            or self.outbox_without_event
            or self.state_events_in_store
            or self.states_out_of_step
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "streams": self.streams,
            "streams_not_1_to_n": self.streams_broken,
            "events_without_outbox_message": self.events_without_outbox,
            "outbox_messages_without_event": self.outbox_without_event,
            "state_stored_events_in_event_store": self.state_events_in_store,
            "states": self.states,
            "states_not_matching_their_outbox_messages": self.states_out_of_step,
        }


async def check_integrity(
    engine: Engine, *, event_sourced: Iterable[str], state_stored: Iterable[str]
) -> Integrity:
    """Check what the demo stored: streams numbered 1..n, events and outbox messages one
    to one, no events of state-stored types, states in step with their messages."""
    sourced = _literal_list(event_sourced)
    stored = _literal_list(state_stored)
    streams = await _rows(
        engine,
        "SELECT count(*), coalesce(sum(CASE WHEN lo <> 1 OR hi <> n THEN 1 ELSE 0 END), 0) "
        "FROM (SELECT min(version) AS lo, max(version) AS hi, count(*) AS n FROM events "
        "GROUP BY aggregate_type, aggregate_id) AS s",
    )
    no_outbox = await _rows(
        engine,
        "SELECT count(*) FROM events e "
        "WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.message_id = e.event_id)",
    )
    no_event = await _rows(
        engine,
        f"SELECT count(*) FROM outbox o WHERE o.aggregate_type IN ({sourced}) "
        "AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = o.message_id)",
    )
    stray = await _rows(engine, f"SELECT count(*) FROM events WHERE aggregate_type IN ({stored})")
    states = await _rows(
        engine,
        "SELECT count(*), "
        "coalesce(sum(CASE WHEN s.version <> coalesce(o.n, 0) THEN 1 ELSE 0 END), 0) "
        "FROM aggregate_state s LEFT JOIN (SELECT aggregate_type, aggregate_id, count(*) AS n "
        "FROM outbox GROUP BY aggregate_type, aggregate_id) AS o "
        "ON o.aggregate_type = s.aggregate_type AND o.aggregate_id = s.aggregate_id "
        f"WHERE s.aggregate_type IN ({stored})",
    )
    return Integrity(
        streams=int(streams[0][0]),
        streams_broken=int(streams[0][1]),
        events_without_outbox=int(no_outbox[0][0]),
        outbox_without_event=int(no_event[0][0]),
        state_events_in_store=int(stray[0][0]),
        states=int(states[0][0]),
        states_out_of_step=int(states[0][1]),
    )
