"""Database client spans of the demo's commands and queries on a real SQLite file and PostgreSQL.

Loading an aggregate and a query handler's reads are ``SELECT <table>`` client
spans; a failed commit shows the step that failed (no rows kept, the qualified
``error.type``) and a ``ROLLBACK``; every database span names its database
(``db.namespace``; ``server.address``/``server.port`` for PostgreSQL); and for a
committed command the step spans cover most of the command's span.
"""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy.ext.asyncio import AsyncEngine

from cqrs_ddd_advanced_core.cqrs import EventSourcedMediator
from cqrs_ddd_advanced_core.demo.app import Shop
from cqrs_ddd_advanced_core.demo.domain import OrderClosedError, OrderLine, UserPreferences
from cqrs_ddd_advanced_core.demo.messages import (
    CancelOrder,
    ConfirmOrder,
    GetOrderSummary,
    GetPreferences,
    PlaceOrder,
    UpdatePreferences,
)
from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyOutboxStore,
    SQLAlchemyStateRepository,
    SQLAlchemyUnitOfWork,
    create_engine,
    create_tables,
)
from cqrs_ddd_core.exceptions import ConcurrencyError
from cqrs_ddd_core.testing import SpanCapture
from tests.support.postgres import empty_pg_engine, postgres_database_url

__all__ = ["postgres_database_url"]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability.md"
LINE = OrderLine(sku="pen", quantity=1, unit_price_cents=199)


@dataclass
class Traced:
    shop: Shop
    spans: SpanCapture
    engine: AsyncEngine


def _traced(engine: AsyncEngine, spans: SpanCapture) -> Shop:
    uow_factory = SQLAlchemyUnitOfWork.factory(engine)
    outbox = SQLAlchemyOutboxStore(engine)
    shop = Shop(
        uow_factory=uow_factory,
        event_store=SQLAlchemyEventStore(engine),
        outbox_store=outbox,
        preferences=SQLAlchemyStateRepository(UserPreferences, engine),
    )
    # The same handlers behind a mediator whose pipelines trace into the capture.
    shop.mediator = EventSourcedMediator(
        shop.registry,
        uow_factory,
        shop.mediator.event_persistence_orchestrator,
        outbox_store=outbox,
        tracer_provider=spans.tracer_provider,
    )
    return shop


@pytest.fixture
def spans() -> Iterator[SpanCapture]:
    capture = SpanCapture()
    yield capture
    capture.shutdown()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def traced(
    request: pytest.FixtureRequest, tmp_path: Path, spans: SpanCapture
) -> AsyncIterator[Traced]:
    """The demo's shop on a SQLite file, then on PostgreSQL, traced into ``spans``."""
    if request.param == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}")
        await create_tables(engine)
        yield Traced(_traced(engine, spans), spans, engine)
        await engine.dispose()
        return
    async with empty_pg_engine(request.getfixturevalue("postgres_database_url")) as engine:
        yield Traced(_traced(engine, spans), spans, engine)


def _attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def _identity(traced: Traced) -> dict[str, Any]:
    url = traced.engine.url
    if url.get_backend_name() == "sqlite":
        return {"db.system.name": "sqlite", "db.namespace": url.database}
    return {
        "db.system.name": "postgresql",
        "db.namespace": url.database,
        "server.address": url.host,
        "server.port": url.port or 5432,
    }


async def _check_reads_rollback_and_identity(traced: Traced) -> None:
    shop, spans = traced.shop, traced.spans
    identity = _identity(traced)
    await shop.mediator.send(PlaceOrder(order_id="o-1", customer_id="c-1", lines=[LINE]))
    await shop.mediator.send(ConfirmOrder(order_id="o-1"))
    await shop.mediator.query(GetOrderSummary(order_id="o-1"))
    await shop.mediator.send(
        UpdatePreferences(user_id="u-1", language="en", currency="EUR", newsletter=False)
    )
    await shop.mediator.query(GetPreferences(user_id="u-1"))
    await shop.mediator.send(
        UpdatePreferences(user_id="u-1", language="fr", currency="EUR", newsletter=True)
    )

    # docs/observability.md names the steps the adapters emit.
    documented = DOCS.read_text()
    client_names = {s.name for s in spans.spans if s.kind is SpanKind.CLIENT}
    assert {"INSERT aggregate_state", "UPDATE aggregate_state", "SELECT events"} <= client_names
    for name in client_names:
        assert f"`{name}`" in documented, name

    confirm = spans.named("command ConfirmOrder")
    children = [c for c in spans.children(confirm) if c.kind is SpanKind.CLIENT]
    names = [c.name for c in children]
    assert names[0] == "SELECT events"  # the order loaded before anything is written
    assert "COMMIT" in names
    load = children[0]
    assert load.kind is SpanKind.CLIENT
    assert _attrs(load) == {
        **identity,
        "db.operation.name": "SELECT",
        "db.collection.name": "events",
        "db.query.summary": "SELECT events",
        "db.response.returned_rows": 1,  # OrderPlaced
    }
    assert confirm.start_time <= load.start_time <= load.end_time <= confirm.end_time
    for child in children:
        for key, value in identity.items():
            assert _attrs(child)[key] == value, (child.name, key)

    (read,) = spans.children(spans.named("query GetOrderSummary"))
    assert read.name == "SELECT events"
    assert _attrs(read)["db.response.returned_rows"] == 2
    (state_read,) = spans.children(spans.named("query GetPreferences"))
    assert state_read.name == "SELECT aggregate_state"
    assert _attrs(state_read)["db.response.returned_rows"] == 1

    # A refusal by the domain: a result; the order was loaded, nothing was written.
    spans.clear()
    with pytest.raises(OrderClosedError):
        await shop.mediator.send(CancelOrder(order_id="o-1", reason="too slow"))
    refused = spans.named("command CancelOrder")
    assert refused.status.status_code is StatusCode.UNSET
    assert _attrs(refused)["cqrs.outcome"] == "refused"
    assert [c.name for c in spans.children(refused)] == ["SELECT events"]


async def _check_failed_commit(traced: Traced) -> None:
    shop, spans = traced.shop, traced.spans
    await shop.mediator.send(PlaceOrder(order_id="o-2", customer_id="c-1", lines=[LINE]))
    spans.clear()
    # A second PlaceOrder of the same order: its stream exists, so the commit fails.
    with pytest.raises(ConcurrencyError):
        await shop.mediator.send(PlaceOrder(order_id="o-2", customer_id="c-1", lines=[LINE]))
    command = spans.named("command PlaceOrder")
    assert command.status.status_code is StatusCode.UNSET  # a conflict is a refusal
    children = [c for c in spans.children(command) if c.kind is SpanKind.CLIENT]
    failed = [c for c in children if c.status.status_code is StatusCode.ERROR]
    assert failed, [c.name for c in children]
    for step in failed:
        assert _attrs(step)["error.type"] == "cqrs_ddd_core.exceptions.ConcurrencyError"
        assert _attrs(step).get("cqrs.db.rows", 0) == 0
    assert children[-1].name == "ROLLBACK"
    assert "COMMIT" not in [c.name for c in children]
    assert children[-1].start_time >= max(c.end_time for c in failed)
    for key, value in _identity(traced).items():
        assert _attrs(children[-1])[key] == value


def _descendants(spans: SpanCapture, span: Any) -> list[Any]:
    found = []
    for child in spans.children(span):
        found.append(child)
        found.extend(_descendants(spans, child))
    return found


def _coverage(command: Any, children: list[Any]) -> float:
    """The share of ``command``'s time covered by the union of its children's spans."""
    covered, cursor = 0, command.start_time
    for child in sorted(children, key=lambda c: c.start_time):
        start, end = max(child.start_time, cursor), min(child.end_time, command.end_time)
        if end > start:
            covered += end - start
            cursor = end
    return covered / (command.end_time - command.start_time)


async def _coverage_of_committed_commands(traced: Traced) -> tuple[float, float]:
    """Median share of a committed ``ConfirmOrder`` (it loads the order, sends
    ``IssueInvoice`` and commits both) covered by database spans: as they were
    before (the commit's steps as the database side measured them, no reads) and
    as they are (reads, and the commit's spans over the time the caller waited)."""
    shop, spans = traced.shop, traced.spans
    for i in range(30):
        order_id = f"c-{i}"
        await shop.mediator.send(PlaceOrder(order_id=order_id, customer_id="c", lines=[LINE]))
        await shop.mediator.send(ConfirmOrder(order_id=order_id))
    before, after = [], []
    for command in (s for s in spans.spans if s.name == "command ConfirmOrder"):
        children = [c for c in _descendants(spans, command) if c.kind is SpanKind.CLIENT]
        writes = [_as_measured(c) for c in children if not c.name.startswith("SELECT")]
        before.append(_coverage(command, writes))
        after.append(_coverage(command, children))
    return statistics.median(before), statistics.median(after)


@dataclass
class _Interval:
    start_time: int
    end_time: int


def _as_measured(span: Any) -> _Interval:
    """The step as the database side measured it (without the wait and the return)."""
    attributes = _attrs(span)
    wait = int(attributes.get("cqrs.db.wait_ms", 0) * 1e6)
    back = int(attributes.get("cqrs.db.return_ms", 0) * 1e6)
    return _Interval(span.start_time + wait, span.end_time - back)


async def test_reads_are_spans_a_failed_commit_rolls_back_and_spans_name_the_database(
    traced: Traced,
) -> None:
    await _check_reads_rollback_and_identity(traced)
    await _check_failed_commit(traced)


async def test_database_spans_cover_more_of_a_command_than_its_commit_steps_alone(
    traced: Traced,
) -> None:
    before, after = await _coverage_of_committed_commands(traced)
    name = traced.engine.url.get_backend_name()
    print(f"{name}: step spans cover {before:.0%} of ConfirmOrder before, {after:.0%} after")
    assert after > before
    # The commit's first span starts when the commit was asked for, its last ends
    # when the caller got the outcome, and they say how long that took.
    for command in (s for s in traced.spans.spans if s.name == "command ConfirmOrder"):
        steps = [
            c
            for c in traced.spans.children(command)
            if c.kind is SpanKind.CLIENT and not c.name.startswith("SELECT")
        ]
        assert "cqrs.db.wait_ms" in _attrs(steps[0])
        assert steps[-1].name == "COMMIT"
        assert _attrs(steps[-1])["cqrs.db.return_ms"] >= 0
