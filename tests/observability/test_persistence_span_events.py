"""``persistence_spans="events"``: one ``COMMIT`` span, one span event per step; reads as events.

The cheaper middle between ``"steps"`` (a span per step) and ``"commit"``
(durations only): the commit keeps its timeline (each step at its real
start) for the price of span events; the span keeps the "commit" mode's
attributes (durations, rows, the failed step).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from cqrs_ddd_advanced_core.cqrs import EventSourcedMediator
from cqrs_ddd_advanced_core.demo.app import Shop as DemoShop
from cqrs_ddd_advanced_core.demo.domain import OrderLine, UserPreferences
from cqrs_ddd_advanced_core.demo.messages import ConfirmOrder
from cqrs_ddd_advanced_core.demo.messages import PlaceOrder as DemoPlaceOrder
from cqrs_ddd_core.adapters.sqlalchemy import (
    SQLAlchemyEventStore,
    SQLAlchemyOutboxStore,
    SQLAlchemyStateRepository,
    SQLAlchemyUnitOfWork,
    create_engine,
    create_tables,
)
from cqrs_ddd_core.exceptions import ConcurrencyError
from cqrs_ddd_core.middleware import TracingMiddleware
from cqrs_ddd_core.persistence import StepTiming
from cqrs_ddd_core.persistence.unit_of_work import BaseUnitOfWork, StagedGroup
from cqrs_ddd_core.testing import SpanCapture
from tests.observability.app import PlaceOrder, Shop, build_mediator

START_NS = 1_700_000_000_000_000_000
MS = 1_000_000


class SQLiteLikeUnitOfWork(BaseUnitOfWork):
    """Reports what the SQLite flush measures (BEGIN, two inserts, COMMIT), 1 ms each."""

    system = "sqlite"
    error_at: str | None = None

    async def _write_and_commit(self, groups: list[StagedGroup]) -> None:
        at = START_NS
        for operation, collection in (
            ("BEGIN", None),
            ("INSERT", "events"),
            ("INSERT", "outbox"),
            ("COMMIT", None),
        ):
            failed = self.error_at == (collection or operation)
            rows = 1 if collection and not failed else 0
            error = "cqrs_ddd_core.exceptions.ConcurrencyError" if failed else None
            self.timings.append(
                StepTiming(operation, collection, "sqlite", at, at + MS, rows, error)
            )
            at += MS
            if failed:
                raise ConcurrencyError("Order:o-1", 0, 1)

    async def _discard(self) -> None:
        return None


def _mediator(shop: Shop, capture: SpanCapture, uow_factory: Any) -> Any:
    mediator = build_mediator(shop, uow_factory=uow_factory)
    middlewares = list(mediator.pipeline.middlewares)
    middlewares[0] = TracingMiddleware(
        tracer_provider=capture.tracer_provider, persistence_spans="events"
    )
    shop.mediator = type(mediator)(
        mediator.registry, uow_factory, middlewares=middlewares, query_middlewares=[]
    )
    return shop.mediator


def _events(span: Any) -> list[tuple[str, int, dict[str, Any]]]:
    return [(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events]


async def test_a_commit_is_one_commit_span_with_an_event_per_step_at_its_start(
    shop: Shop, span_capture: SpanCapture
) -> None:
    mediator = _mediator(shop, span_capture, SQLiteLikeUnitOfWork)

    await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    (commit,) = span_capture.children(span_capture.named("command PlaceOrder"))
    assert commit.name == "COMMIT"
    assert commit.kind is SpanKind.CLIENT
    assert (commit.start_time, commit.end_time) == (START_NS, START_NS + 4 * MS)
    # The span is the "commit" mode's, attribute for attribute.
    assert commit.attributes == {
        "db.system.name": "sqlite",
        "db.operation.name": "COMMIT",
        "cqrs.db.step.begin_ms": 1.0,
        "cqrs.db.step.insert_events_ms": 1.0,
        "cqrs.db.step.insert_outbox_ms": 1.0,
        "cqrs.db.step.commit_ms": 1.0,
        "cqrs.db.rows": 2,
    }
    # Bare events at each step's start: the span holds the durations and rows.
    assert _events(commit) == [
        ("BEGIN", START_NS, {}),
        ("INSERT events", START_NS + MS, {}),
        ("INSERT outbox", START_NS + 2 * MS, {}),
        ("COMMIT", START_NS + 3 * MS, {}),
    ]
    assert commit.status.status_code is StatusCode.UNSET


async def test_a_failed_step_is_an_event_with_its_error_and_the_commit_span_is_an_error(
    shop: Shop, span_capture: SpanCapture
) -> None:
    class FailingOutbox(SQLiteLikeUnitOfWork):
        error_at = "outbox"

    mediator = _mediator(shop, span_capture, FailingOutbox)

    with pytest.raises(ConcurrencyError):
        await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    (commit,) = span_capture.children(span_capture.named("command PlaceOrder"))
    assert commit.status.status_code is StatusCode.ERROR
    assert commit.attributes is not None
    assert commit.attributes["cqrs.db.failed_step"] == "INSERT outbox"
    assert commit.attributes["error.type"] == "cqrs_ddd_core.exceptions.ConcurrencyError"
    names = [name for name, _, _ in _events(commit)]
    assert names == ["BEGIN", "INSERT events", "INSERT outbox", "ROLLBACK"]
    assert _events(commit)[3][1] == START_NS + 3 * MS  # the rollback, after the failed step


async def test_the_in_memory_unit_of_work_reports_its_steps_as_events_too(
    shop: Shop, span_capture: SpanCapture
) -> None:
    from cqrs_ddd_core.adapters.memory import InMemoryUnitOfWork

    mediator = _mediator(shop, span_capture, InMemoryUnitOfWork)

    await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    command = span_capture.named("command PlaceOrder")
    (commit,) = [c for c in span_capture.children(command) if c.kind is SpanKind.CLIENT]
    names = [name for name, _, _ in _events(commit)]
    assert names[:2] == ["INSERT events", "INSERT outbox"]
    assert names[-1] == "COMMIT"
    start, end = commit.start_time or 0, commit.end_time or 0
    assert all(start <= event.timestamp <= end for event in commit.events)


@pytest.fixture
async def sqlite_shop(tmp_path: Path, span_capture: SpanCapture) -> AsyncIterator[DemoShop]:
    """The demo's shop on a SQLite file, its command pipeline tracing in ``"events"`` mode."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}")
    await create_tables(engine)
    uow_factory = SQLAlchemyUnitOfWork.factory(engine)
    outbox = SQLAlchemyOutboxStore(engine)
    shop = DemoShop(
        uow_factory=uow_factory,
        event_store=SQLAlchemyEventStore(engine),
        outbox_store=outbox,
        preferences=SQLAlchemyStateRepository(UserPreferences, engine),
    )
    orchestrator = shop.mediator.event_persistence_orchestrator
    listed = EventSourcedMediator(
        shop.registry, uow_factory, orchestrator, outbox_store=outbox
    ).pipeline.middlewares
    middlewares = [
        TracingMiddleware(tracer_provider=span_capture.tracer_provider, persistence_spans="events")
        if isinstance(m, TracingMiddleware)
        else m
        for m in listed
    ]
    shop.mediator = EventSourcedMediator(
        shop.registry, uow_factory, orchestrator, outbox_store=outbox, middlewares=middlewares
    )
    yield shop
    await engine.dispose()


async def test_on_sqlite_a_load_is_an_event_of_the_command_span_and_the_commit_one_span(
    sqlite_shop: DemoShop, span_capture: SpanCapture
) -> None:
    line = OrderLine(sku="pen", quantity=1, unit_price_cents=199)
    await sqlite_shop.mediator.send(DemoPlaceOrder(order_id="o-1", customer_id="c-1", lines=[line]))
    await sqlite_shop.mediator.send(ConfirmOrder(order_id="o-1"))

    confirm = span_capture.named("command ConfirmOrder")
    children = span_capture.children(confirm)
    assert [c.name for c in children if c.kind is SpanKind.CLIENT] == ["COMMIT"]
    (commit,) = [c for c in children if c.kind is SpanKind.CLIENT]
    reads = [(name, attributes) for name, _, attributes in _events(confirm)]
    assert reads
    assert reads[0][0] == "SELECT events"  # the order, loaded before any write
    assert reads[0][1]["db.response.returned_rows"] >= 1
    assert "cqrs.db.duration_ms" in reads[0][1]
    assert confirm.events[0].timestamp >= (confirm.start_time or 0)
    steps = [name for name, _, _ in _events(commit)]
    assert "INSERT events" in steps
    assert steps[-1] == "COMMIT"
    assert commit.attributes is not None
    assert str(commit.attributes["db.namespace"]).endswith("shop.db")
