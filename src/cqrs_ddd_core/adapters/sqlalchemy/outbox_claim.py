"""Claiming outbox messages for one relay without breaking any stream's order.

The rule: a message is not published while an earlier message of its stream
is unpublished. Several relays claim at once, so the claim is three steps in
one transaction:

1. *Take* up to ``limit`` due messages, oldest first, in one
   ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING``:
   each is hidden from other relays for the claim timeout. Concurrent relays
   skip each other's rows instead of waiting (PostgreSQL); on SQLite the
   statement holds the database's write lock, so claims are serial anyway.
2. *Look back*: for the streams taken, read their unpublished messages that
   are older than the newest one taken. This is a new statement, so on
   PostgreSQL (READ COMMITTED) it sees every claim committed meanwhile, and a
   row another relay is claiming right now is still unpublished in it.
3. *Give back* every message that has an unpublished, untaken predecessor in
   its stream (held by another relay, waiting for a retry, a dead letter):
   its ``next_attempt_at`` goes back to ``NULL`` (it was due), so it is taken
   again once the predecessor is published.

Streams stuck behind a failed message or a dead letter are left out of step
1 already, so their waiting messages do not fill every batch.

Messages of one stream that are taken together are published by one relay,
in order. Messages without an aggregate have no stream and no order.

On PostgreSQL the three steps, the relay's mark before them and its lag
query after them are one statement (:func:`claim_pg`), its own transaction:
one round trip per claim.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Integer,
    String,
    any_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql

from cqrs_ddd_core.adapters.sqlalchemy.reads import Query
from cqrs_ddd_core.adapters.sqlalchemy.tables import outbox
from cqrs_ddd_core.persistence.records import OutboxStatus

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = [
    "UNPUBLISHED",
    "claim",
    "claim_pg",
    "in_list",
    "is_stuck",
    "is_unpublished",
    "plan_for",
]

_DUE_STATUSES = (OutboxStatus.PENDING.value, OutboxStatus.FAILED.value)
_STUCK_STATUSES = (OutboxStatus.FAILED.value, OutboxStatus.DEAD.value)
UNPUBLISHED = (OutboxStatus.PENDING.value, OutboxStatus.FAILED.value, OutboxStatus.DEAD.value)
"""Spelled out rather than ``!= 'published'``: the partial index ``ix_outbox_unpublished``
(on ``id``, for these statuses) serves ``IN``, and published rows (the bulk of the table)
are never scanned."""


def _status_in(values: tuple[str, ...], status: Any = outbox.c.status) -> Any:
    # Literals, not bound parameters: PostgreSQL uses a partial index only where it
    # can prove the query's condition implies the index's, and a generic plan of a
    # prepared statement knows no parameter values. Written into the statement's
    # text when it is compiled (once, cached), not rendered anew at every execution
    # as ``literal_execute`` parameters are. The values are the statuses' own names.
    return status.in_([literal_column(f"'{value}'") for value in values])


def is_unpublished() -> Any:
    """``outbox.status IN ('pending', 'failed', 'dead')``, as the partial index says it."""
    return _status_in(UNPUBLISHED)


def is_stuck(status: Any = outbox.c.status) -> Any:
    """``status IN ('failed', 'dead')``, as the partial index ``ix_outbox_stuck`` says it.

    Both databases use a partial index only for a query whose condition contains the
    index's own (SQLite proves no implication: ``status = 'dead'`` alone does not do),
    so a query for dead letters says this as well."""
    return _status_in(_STUCK_STATUSES, status)


def in_list(column: Any, name: str, dialect: str) -> Any:
    """``column`` is one of the list bound as ``name``: on PostgreSQL ``= ANY(:name)``
    with one array parameter, so that the statement's text, and the server's prepared
    statement, is the same whatever the list's length (``IN`` with an expanding
    parameter is rendered anew per execution and prepared anew per length);
    elsewhere ``IN (...)``."""
    if dialect == "postgresql":
        # Text without the column's length: an explicit cast to VARCHAR(n) would
        # truncate a longer value instead of failing to match.
        item = String() if isinstance(column.type, String) else column.type
        return column == any_(bindparam(name, type_=postgresql.ARRAY(item)))
    return column.in_(bindparam(name, expanding=True))


def _take(dialect: str, columns: tuple[Any, ...]) -> Any:
    """Step 1's statement, built once per dialect and column list (parameters: ``now``,
    ``hidden_until``, ``limit``): a statement built anew for every claim cost more
    CPU than running it."""
    # A stream stuck behind a failed message (waiting for its retry) or a dead
    # letter is left out here, so that its waiting messages do not fill every
    # batch; the partial index ix_outbox_stuck (failed and dead rows only, by stream)
    # finds the few such rows.
    stuck = outbox.alias("stuck")
    behind_a_failure = (
        select(stuck.c.id)
        .where(
            is_stuck(stuck.c.status),
            stuck.c.aggregate_type == outbox.c.aggregate_type,
            stuck.c.aggregate_id == outbox.c.aggregate_id,
            stuck.c.id < outbox.c.id,
        )
        .exists()
    )
    now = bindparam("now", type_=outbox.c.next_attempt_at.type)
    due = (
        select(outbox.c.id)
        .where(
            _status_in(_DUE_STATUSES),
            or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= now),
            ~behind_a_failure,
        )
        .order_by(outbox.c.id)
        .limit(bindparam("limit", type_=Integer))
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    # On PostgreSQL ``id = ANY(ARRAY(...))`` finds the taken rows by primary key; with
    # ``id IN (...)`` the planner may hash-join the subquery against a scan of the
    # whole table, published rows included (measured: 15 ms of a 200-message claim).
    taken_rows = (
        outbox.c.id == func.any(func.array(due))
        if dialect == "postgresql"
        else outbox.c.id.in_(due)
    )
    hidden_until = bindparam("hidden_until", type_=outbox.c.next_attempt_at.type)
    return update(outbox).where(taken_rows).values(next_attempt_at=hidden_until).returning(*columns)


_TAKES: dict[tuple[str, tuple[Any, ...]], Any] = {}
_POSITIONS: dict[tuple[Any, ...], tuple[int, int, int]] = {}


def _positions(columns: tuple[Any, ...]) -> tuple[int, int, int]:
    """Where ``id``, ``aggregate_type`` and ``aggregate_id`` are in ``columns``, found by
    identity once per column list (``tuple.index`` compares with ``==``, which builds a
    SQL expression per column: it cost more CPU than the rest of a small claim)."""
    found = _POSITIONS.get(columns)
    if found is None:
        wanted = (outbox.c.id, outbox.c.aggregate_type, outbox.c.aggregate_id)
        at = [next(i for i, c in enumerate(columns) if c is w) for w in wanted]
        found = _POSITIONS[columns] = (at[0], at[1], at[2])
    return found


def _look_back_and_give_back(dialect: str) -> tuple[Any, Any]:
    """Steps 2 and 3's statements for ``dialect`` (built once)."""
    # Step 2: the unpublished messages of the streams taken, older than the newest taken.
    look_back = select(outbox.c.id, outbox.c.aggregate_type, outbox.c.aggregate_id).where(
        is_unpublished(),
        outbox.c.id < bindparam("newest"),
        in_list(outbox.c.aggregate_id, "streams", dialect),
    )
    # Step 3: due again at once.
    give_back = (
        update(outbox)
        .where(in_list(outbox.c.id, "given_back", dialect))
        .values(next_attempt_at=None)
    )
    return look_back, give_back


_STEPS: dict[str, tuple[Any, Any]] = {}


async def claim(
    conn: AsyncConnection,
    columns: tuple[Any, ...],
    limit: int,
    now: datetime,
    claim_timeout: timedelta,
) -> list[Any]:
    """Claim up to ``limit`` messages in ``conn``'s transaction; rows of ``columns``, by id.

    ``columns`` must include ``outbox.c.id``, ``aggregate_type`` and ``aggregate_id``.
    """
    key = (conn.dialect.name, columns)
    take = _TAKES.get(key)
    if take is None:
        take = _TAKES[key] = _take(*key)
    parameters = {"now": now, "hidden_until": now + claim_timeout, "limit": limit}
    taken = list((await conn.execute(take, parameters)).all())
    if not taken:
        return []
    id_at, type_at, agg_at = _positions(columns)
    taken.sort(key=lambda row: row[id_at])
    taken_ids = {row[id_at] for row in taken}
    streams = {(row[type_at], row[agg_at]) for row in taken if row[agg_at] is not None}
    if not streams:
        return taken
    newest = taken[-1][id_at]
    steps = _STEPS.get(conn.dialect.name)
    if steps is None:
        steps = _STEPS[conn.dialect.name] = _look_back_and_give_back(conn.dialect.name)
    look_back, give_back = steps
    earlier = await conn.execute(
        look_back, {"newest": newest, "streams": sorted({agg for _, agg in streams})}
    )
    first_blocker: dict[tuple[Any, Any], int] = {}
    for row_id, aggregate_type, aggregate_id in earlier.all():
        key = (aggregate_type, aggregate_id)
        if key in streams and row_id not in taken_ids:
            known = first_blocker.get(key)
            if known is None or row_id < known:
                first_blocker[key] = row_id
    if not first_blocker:
        return taken
    kept: list[Any] = []
    given_back: list[int] = []
    for row in taken:
        blocker = first_blocker.get((row[type_at], row[agg_at]))
        if blocker is not None and blocker < row[id_at]:
            given_back.append(row[id_at])
        else:
            kept.append(row)
    await conn.execute(give_back, {"given_back": given_back})
    return kept


# -- PostgreSQL: the mark, the three steps and the lag in one statement ---------------

_PG_CLAIM = """\
WITH marked AS (
    UPDATE outbox SET status = 'published',
        published_at = CAST(:published_at AS TIMESTAMP WITH TIME ZONE), next_attempt_at = NULL
    WHERE outbox.id = ANY(ARRAY(
        SELECT (SELECT m.id FROM outbox AS m WHERE m.message_id = p.message_id)
        FROM unnest(CAST((SELECT CAST(:published AS VARCHAR[])) AS VARCHAR[])) AS p(message_id)
    )) AND outbox.status IN ('pending', 'failed', 'dead')
    RETURNING outbox.id
), nosync AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true) AS setting
), due AS MATERIALIZED (
    SELECT o.id, o.aggregate_type, o.aggregate_id FROM outbox AS o
    WHERE o.status IN ('pending', 'failed')
        AND (o.next_attempt_at IS NULL
            OR o.next_attempt_at <= (SELECT CAST(:now AS TIMESTAMP WITH TIME ZONE)))
        AND o.message_id <> ALL(CAST((SELECT CAST(:published AS VARCHAR[])) AS VARCHAR[]))
        AND NOT (EXISTS (SELECT stuck.id FROM outbox AS stuck
            WHERE stuck.status IN ('failed', 'dead')
                AND stuck.aggregate_type = o.aggregate_type
                AND stuck.aggregate_id = o.aggregate_id AND stuck.id < o.id))
    ORDER BY o.id LIMIT {limit}
    FOR UPDATE OF o SKIP LOCKED
), blockers AS MATERIALIZED (
    SELECT e.aggregate_type, e.aggregate_id, min(e.id) AS first FROM outbox AS e
    WHERE e.status IN ('pending', 'failed', 'dead')
        AND e.id < (SELECT max(due.id) FROM due)
        AND e.aggregate_id = ANY(ARRAY(SELECT due.aggregate_id FROM due))
        AND e.id <> ALL(ARRAY(SELECT due.id FROM due))
        AND e.message_id <> ALL(CAST((SELECT CAST(:published AS VARCHAR[])) AS VARCHAR[]))
    GROUP BY e.aggregate_type, e.aggregate_id
), taken AS (
    UPDATE outbox SET next_attempt_at = CASE WHEN EXISTS (SELECT 1 FROM blockers AS b
            WHERE b.aggregate_type = outbox.aggregate_type
                AND b.aggregate_id = outbox.aggregate_id AND b.first < outbox.id)
        THEN NULL ELSE CAST(:hidden_until AS TIMESTAMP WITH TIME ZONE) END
    WHERE outbox.id = ANY(ARRAY(SELECT due.id FROM due))
    RETURNING outbox.*
), lag AS (
    SELECT flag.measured, CASE WHEN flag.measured THEN (
        SELECT min(u.created_at) FROM outbox AS u
        WHERE u.status IN ('pending', 'failed', 'dead')
            AND u.message_id <> ALL(CAST((SELECT CAST(:published AS VARCHAR[])) AS VARCHAR[]))
    ) END AS oldest
    FROM (SELECT CAST(:measure AS BOOLEAN) OR (CAST(:measure_if_empty AS BOOLEAN)
        AND NOT EXISTS (SELECT 1 FROM taken WHERE taken.next_attempt_at IS NOT NULL))
        AS measured) AS flag, nosync
)
SELECT {columns}, lag.measured, lag.oldest
FROM lag LEFT JOIN taken ON taken.next_attempt_at IS NOT NULL
ORDER BY taken.id /* plan {plan} */
"""

_PG_CLAIMS: dict[tuple[str, int, int], Query] = {}

_FIRST_PLAN_BITS = 10
""":func:`plan_for`: the claim is planned anew when the outbox's ids reach 2**10,
2**11, ... (14 times up to ten million messages)."""


def plan_for(position: int) -> int:
    """The plan number of a claim whose outbox holds ids up to ``position``: one
    more each time the ids double (from ``2**10``)."""
    return max(int(position).bit_length() - _FIRST_PLAN_BITS, 0)


def claim_pg(columns: str, limit: int, plan: int = 0) -> Query:
    """The PostgreSQL claim as one statement for :func:`~.reads.fetch`, rows of
    ``columns`` (SQL over ``taken``, the claimed rows) then ``measured`` and ``oldest``
    (built once per column list, limit and plan number).

    What :func:`claim` does in three statements, and the relay's two neighbours of
    it: first the mark (messages confirmed published), last the lag's query. In
    one statement every part reads the same snapshot, taken when it starts, and
    none sees another's writes; so the parts that must not count the messages
    being marked as unpublished (the look-back, the lag) leave them out by id,
    and the take leaves them out as well (a row is changed at most once per
    statement). Otherwise the look-back reads what a statement of its own would:
    a claim committed meanwhile by another relay still leaves its rows
    unpublished, and a mark committed meanwhile only makes the look-back give
    back a message it could have kept (taken at the next claim). A message of a
    stream is committed after the stream's earlier ones (their versions are
    checked at commit), so a snapshot that holds it holds them.

    Parameters: ``published`` (ids, may be empty), ``published_at``, ``now``,
    ``hidden_until``, ``measure`` (always) and ``measure_if_empty``; the limit is
    written into the text. Always one row at least: with nothing claimed, one
    whose ``columns`` are NULL.

    Every parameter a row estimate depends on is read through a scalar subquery,
    so that PostgreSQL's estimates are the same with or without its value: its
    plan cache then keeps one generic plan for the prepared statement instead of
    planning anew at every execution (planning was half of the server's CPU for
    a claim). The taken rows are found by ``id = ANY(ARRAY(...))``: a join could
    be planned as a hash join over the whole table.

    That one plan is made for the table as it is then, and a relay's connection
    keeps it while the table grows (until an ``ANALYZE`` or ``VACUUM`` of it). On
    a new outbox of a few hundred rows the mark, written ``message_id =
    ANY(<ids>)``, was planned as a sequential scan comparing every row with every
    id, and went on scanning the whole table at every claim as it grew (measured:
    the claim's server CPU doubled over the first 3,000 messages). So the mark
    looks each id up on its own (the unique index on ``message_id``), then the
    rows by id among the unpublished ones, a form planned through indexes from
    a smaller table on; and ``plan`` (:func:`plan_for` of the
    largest id claimed) is written into the text as a comment, so that the claim
    is prepared and planned anew each time the ids double.

    The statement's transaction commits without waiting for its WAL to reach the
    disk (``synchronous_commit`` off for it alone: ``set_config(..., true)``, undone
    when it ends; the session's setting, and every other transaction's, are left
    as they were). What a server crash can lose of it is a claim (the messages
    are claimed again) or a mark (they are published again: delivery is at
    least once, as after a relay crash between confirm and mark); the outbox
    rows themselves are written by the command's durable commit, and WAL is
    replayed in order, so what survives is a prefix of the claims and marks.
    It spares each claim a disk flush, which PostgreSQL otherwise waits for
    while the relay waits for it.

    A claim cancelled while in flight may still commit (a statement that reached
    the server runs to its end): its messages are then due again after the claim
    timeout, as when a relay dies.
    """
    key = (columns, int(limit), int(plan))
    statement = _PG_CLAIMS.get(key)
    if statement is None:
        sql = _PG_CLAIM.format(columns=columns, limit=key[1], plan=key[2])
        statement = _PG_CLAIMS[key] = Query(text(sql))
    return statement
