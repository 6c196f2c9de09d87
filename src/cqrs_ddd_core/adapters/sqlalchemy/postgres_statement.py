"""The PostgreSQL flush statement: one data-modifying CTE per table written.

The text depends only on the *shape* of a flush (which of events, outbox,
audit records, new and updated state rows it writes), so it is built once
per shape; the rows of each table travel as one JSON text parameter (an array
of rows, each an array of its values in column order, read back with
``jsonb_array_elements`` and ``->> i``), so asyncpg prepares each shape once
per connection whatever the row counts, and encodes one text per table
instead of one array per column. Rows as arrays rather than objects cost the
client about half as much to encode (no keys, no dict per row). JSON columns travel as
JSON *strings* holding their text, cast to ``json`` in the statement, so they
are stored byte for byte.
How the statement keeps the global order gap-free is explained in
:mod:`cqrs_ddd_core.adapters.sqlalchemy.postgres`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cqrs_ddd_core.adapters.sqlalchemy.errors import CONFLICT_MARKER
from cqrs_ddd_core.adapters.sqlalchemy.plan import as_utc

if TYPE_CHECKING:
    from cqrs_ddd_core.adapters.sqlalchemy.plan import FlushPlan

__all__ = ["EVENTS_LOCK_KEY", "STREAM_LOCK_CLASS", "Shape", "build_flush", "shape_of"]

EVENTS_LOCK_KEY = 0x63717273_65767473  # "cqrsevts": the advisory lock around event inserts
STREAM_LOCK_CLASS = 0x63717273  # "cqrs": the first key of the per-stream (two-key) locks

_EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "text"),
    ("aggregate_type", "text"),
    ("aggregate_id", "text"),
    ("version", "int8"),
    ("event_type", "text"),
    ("schema_version", "int4"),
    ("payload", "text"),
    ("metadata", "text"),
    ("occurred_at", "timestamptz"),
    ("correlation_id", "text"),
    ("causation_id", "text"),
)
_OUTBOX_COLUMNS: tuple[tuple[str, str], ...] = (
    ("message_id", "text"),
    ("message_type", "text"),
    ("payload", "text"),
    ("aggregate_type", "text"),
    ("aggregate_id", "text"),
    ("status", "text"),
    ("attempts", "int4"),
    ("next_attempt_at", "timestamptz"),
    ("last_error", "text"),
    ("created_at", "timestamptz"),
    ("published_at", "timestamptz"),
    ("correlation_id", "text"),
    ("causation_id", "text"),
    ("trace_context", "text"),
    ("aggregate_version", "int8"),
    ("schema_version", "int4"),
)
_AUDIT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("audit_id", "text"),
    ("message_id", "text"),
    ("message_type", "text"),
    ("correlation_id", "text"),
    ("causation_id", "text"),
    ("actor", "text"),
    ("outcome", "text"),
    ("error_type", "text"),
    ("started_at", "timestamptz"),
    ("duration_ms", "float8"),
    ("metadata", "text"),
)
_JSON = frozenset({"payload", "metadata", "trace_context", "state"})


class _Params:
    """Numbers the parameters of one statement, in the order the arguments are built."""

    def __init__(self) -> None:
        self.count = 0

    def one(self, cast: str) -> str:
        self.count += 1
        return f"${self.count}::{cast}"

    def rows(self, columns: Sequence[tuple[str, str]], param: str | None = None) -> str:
        """The rows of one JSON parameter (``[[v0, v1, ...], ...]``) as
        ``u(col, ..., ord)``; ``param`` reads an earlier parameter again."""
        source = param if param is not None else self.one("jsonb")
        fields = ", ".join(
            f"r ->> {i} AS {name}" if kind == "text" else f"(r ->> {i})::{kind} AS {name}"
            for i, (name, kind) in enumerate(columns)
        )
        return (
            f"(SELECT {fields}, x.ord FROM jsonb_array_elements({source}) "
            "WITH ORDINALITY AS x(r, ord)) AS u"
        )


def _select_list(columns: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"u.{name}::json" if name in _JSON else f"u.{name}" for name, _ in columns)


_HEAD_COLUMNS = (("aggregate_type", "text"), ("aggregate_id", "text"), ("expected", "int8"))
_STATE_INSERT_COLUMNS = (
    ("aggregate_type", "text"),
    ("aggregate_id", "text"),
    ("version", "int8"),
    ("state", "text"),
)
_STATE_UPDATE_COLUMNS = (
    ("aggregate_type", "text"),
    ("aggregate_id", "text"),
    ("expected", "int8"),
    ("version", "int8"),
    ("state", "text"),
)
_KEY_COLUMNS = (("aggregate_type", "text"), ("aggregate_id", "text"))

Shape = tuple[bool, bool, bool, bool, bool]
"""Which of events, outbox, audit, state inserts, state updates a flush writes."""


@functools.lru_cache(maxsize=64)
def _statement(shape: Shape) -> str:
    """The flush statement for ``shape``; :func:`_arguments` fills its parameters."""
    has_events, has_outbox, has_audit, has_inserts, has_updates = shape
    p = _Params()
    ctes: list[str] = []
    checks: list[str] = []
    after = ""  # the dependency that orders the other writes after the events
    if has_events:
        key = p.one("int8")
        heads = p.one("jsonb")
        ctes.append(
            f"stream_conflicts AS (SELECT 1 FROM {p.rows(_HEAD_COLUMNS, heads)} WHERE u.expected "
            "<> coalesce((SELECT max(e.version) FROM events e WHERE e.aggregate_type = "
            "u.aggregate_type AND e.aggregate_id = u.aggregate_id), 0))"
        )
        checks.append("SELECT 1 FROM stream_conflicts")
        # One transaction-scoped lock per stream, in key order (no cycles),
        # before the events lock: a flush meeting another's uncommitted rows
        # of its stream waits here, holding nothing others need. (A volatile
        # call in the select list runs after the sort.)
        ctes.append(
            "stream_locks AS MATERIALIZED (SELECT count(*) AS n FROM (SELECT "
            f"pg_advisory_xact_lock({STREAM_LOCK_CLASS}, s.k) FROM (SELECT DISTINCT "
            "hashtext(u.aggregate_type || chr(31) || u.aggregate_id) AS k FROM "
            f"{p.rows(_HEAD_COLUMNS, heads)}) AS s ORDER BY s.k) AS l)"
        )
        names = ", ".join(name for name, _ in _EVENT_COLUMNS)
        # The lock's row feeds the insert (positions are drawn after it is
        # held); the release reads the insert's rows (it comes after the last
        # one); every other write reads the release's row (it comes after).
        ctes.append(f"lock AS MATERIALIZED (SELECT pg_advisory_lock({key}) FROM stream_locks)")
        ctes.append(
            f"ev AS (INSERT INTO events ({names}, transaction_id, recorded_at) "
            f"SELECT {_select_list(_EVENT_COLUMNS)}, pg_current_xact_id()::text::int8, now() "
            f"FROM lock, {p.rows(_EVENT_COLUMNS)} ORDER BY u.ord RETURNING 1)"
        )
        ctes.append(
            f"unlock AS MATERIALIZED (SELECT pg_advisory_unlock({key}) AS released "
            "FROM (SELECT count(*) FROM ev) AS written)"
        )
        after = "unlock, "
    for table, columns, present in (
        ("outbox", _OUTBOX_COLUMNS, has_outbox),
        ("audit_log", _AUDIT_COLUMNS, has_audit),
    ):
        if present:
            names = ", ".join(name for name, _ in columns)
            ctes.append(
                f"w_{table} AS (INSERT INTO {table} ({names}) SELECT {_select_list(columns)} "
                f"FROM {after}{p.rows(columns)} ORDER BY u.ord)"
            )
    if has_inserts:
        ctes.append(
            "state_inserts AS (INSERT INTO aggregate_state "
            "(aggregate_type, aggregate_id, version, state, updated_at) "
            "SELECT u.aggregate_type, u.aggregate_id, u.version, u.state::json, now() "
            f"FROM {after}{p.rows(_STATE_INSERT_COLUMNS)})"
        )
    if has_updates:
        updates = p.one("jsonb")
        ctes.append(
            "state_updates AS (UPDATE aggregate_state AS s SET version = u.version, "
            f"state = u.state::json, updated_at = now() FROM {after}"
            f"{p.rows(_STATE_UPDATE_COLUMNS, updates)} WHERE s.aggregate_type = u.aggregate_type "
            "AND s.aggregate_id = u.aggregate_id AND s.version = u.expected "
            "RETURNING s.aggregate_type, s.aggregate_id)"
        )
        ctes.append(
            f"state_conflicts AS (SELECT 1 FROM {p.rows(_KEY_COLUMNS, updates)} WHERE NOT EXISTS "
            "(SELECT 1 FROM state_updates d WHERE d.aggregate_type = u.aggregate_type "
            "AND d.aggregate_id = u.aggregate_id))"
        )
        checks.append("SELECT 1 FROM state_conflicts")
    # The release is read first, so it runs even when a check then fails.
    outputs = ["(SELECT released FROM unlock)"] if has_events else ["NULL::bool"]
    # The statement commits by itself, so a failed check must fail it: the cast
    # raises only when a conflict row exists (it reads a sub-select, so the
    # planner cannot fold it away), and the error text carries the marker.
    if checks:
        failed = f"(SELECT '{CONFLICT_MARKER}' FROM ({' UNION ALL '.join(checks)}) c LIMIT 1)"
        outputs.append(f"CAST({failed} AS integer)")
    return f"WITH {', '.join(ctes)} SELECT {', '.join(outputs)}"


def _encode(value: object) -> str:
    """What :func:`json.dumps` cannot write itself: timestamps (as UTC ISO text)."""
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    raise TypeError(f"cannot send {type(value).__name__} to PostgreSQL")


_dumps = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, separators=(",", ":"), default=_encode
).encode


def _table(rows: Sequence[Sequence[Any]], width: int) -> str:
    """One table's rows as the JSON text :meth:`_Params.rows` reads (an array per row)."""
    for row in rows:
        if len(row) != width:
            raise ValueError(f"a row of {len(row)} values for {width} columns")
    return _dumps(rows)


def _float(value: float) -> float | str:
    """JSON has no NaN or infinities; PostgreSQL reads them from their names."""
    if math.isfinite(value):
        return value
    return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")


def _arguments(plan: FlushPlan, lock_key: int) -> list[Any]:
    """The values of :func:`_statement`'s parameters, in the same order."""
    args: list[Any] = []
    if plan.events:
        args.append(lock_key)
        args.append(
            _table(
                [
                    (s.aggregate_type, s.aggregate_id, s.expected_version)
                    for s in plan.streams.values()
                ],
                3,
            )
        )
        args.append(
            _table(
                [
                    (
                        e.event_id,
                        e.aggregate_type,
                        e.aggregate_id,
                        e.version,
                        e.event_type,
                        e.schema_version,
                        e.payload_json,
                        e.metadata_json,
                        e.occurred_at,
                        e.correlation_id,
                        e.causation_id,
                    )
                    for e in plan.events
                ],
                len(_EVENT_COLUMNS),
            )
        )
    if plan.outbox:
        args.append(_table(plan.outbox, len(_OUTBOX_COLUMNS)))
    if plan.audit:
        duration = len(_AUDIT_COLUMNS) - 2
        args.append(
            _table(
                [
                    (*row[:duration], _float(row[duration]), *row[duration + 1 :])
                    for row in plan.audit
                ],
                len(_AUDIT_COLUMNS),
            )
        )
    inserts, updates = plan.state_inserts, plan.state_updates
    if inserts:
        args.append(
            _table(
                [(w.aggregate_type, w.aggregate_id, w.version, w.state_json) for w in inserts], 4
            )
        )
    if updates:
        args.append(
            _table(
                [
                    (w.aggregate_type, w.aggregate_id, w.expected_version, w.version, w.state_json)
                    for w in updates
                ],
                5,
            )
        )
    return args


def shape_of(plan: FlushPlan) -> Shape:
    """Which kinds of rows ``plan`` writes: plans of one shape share one prepared statement."""
    return (
        bool(plan.events),
        bool(plan.outbox),
        bool(plan.audit),
        any(w.expected_version == 0 for w in plan.states.values()),
        any(w.expected_version != 0 for w in plan.states.values()),
    )


def build_flush(plan: FlushPlan, lock_key: int = EVENTS_LOCK_KEY) -> tuple[str, list[Any]]:
    """The single statement that writes ``plan``, and its arguments."""
    return _statement(shape_of(plan)), _arguments(plan, lock_key)
