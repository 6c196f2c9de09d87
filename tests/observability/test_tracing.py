"""TracingMiddleware: the span tree of a dispatch, its attributes and its failures."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from cqrs_ddd_core.adapters.memory import InMemoryUnitOfWork
from cqrs_ddd_core.context import DispatchContext
from cqrs_ddd_core.exceptions import ConcurrencyError, MessageValidationError
from cqrs_ddd_core.middleware import TracingMiddleware
from cqrs_ddd_core.persistence import StepTiming
from cqrs_ddd_core.persistence.unit_of_work import BaseUnitOfWork, StagedGroup
from cqrs_ddd_core.pipeline import CallNext
from cqrs_ddd_core.telemetry import SCOPE_NAME
from cqrs_ddd_core.testing import SpanCapture
from cqrs_ddd_core.version import __version__
from tests.observability.app import (
    Boom,
    Explode,
    GetOrder,
    PlaceOrder,
    Shop,
    build_mediator,
)


class RecordingUowFactory:
    def __init__(self) -> None:
        self.created: list[InMemoryUnitOfWork] = []

    def __call__(self) -> InMemoryUnitOfWork:
        uow = InMemoryUnitOfWork()
        self.created.append(uow)
        return uow


async def test_a_command_gets_one_internal_span_named_after_it_with_its_ids(
    shop: Shop, span_capture: SpanCapture
) -> None:
    mediator = build_mediator(shop, tracer_provider=span_capture.tracer_provider)
    command = PlaceOrder(order_id="o-1", amount=3)

    response = await mediator.send(command)

    span = span_capture.named("command PlaceOrder")
    assert span.kind is SpanKind.INTERNAL
    assert span.parent is None
    assert span.attributes == {
        "cqrs.message.kind": "command",
        "cqrs.message.type": "PlaceOrder",
        "cqrs.message.id": command.message_id,
        "cqrs.correlation_id": response.correlation_id,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == SCOPE_NAME == "cqrs_ddd"
    assert span.instrumentation_scope.version == __version__


async def test_persistence_steps_are_client_child_spans_with_db_attributes_and_real_times(
    shop: Shop, span_capture: SpanCapture
) -> None:
    uows = RecordingUowFactory()
    mediator = build_mediator(shop, tracer_provider=span_capture.tracer_provider, uow_factory=uows)

    await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    command = span_capture.named("command PlaceOrder")
    children = span_capture.children(command)
    assert [c.name for c in children] == ["INSERT events", "INSERT outbox", "COMMIT"]
    assert all(c.kind is SpanKind.CLIENT for c in children)
    assert all(c.context.trace_id == command.context.trace_id for c in children)
    insert_events, insert_outbox, commit = children
    assert insert_events.attributes == {
        "db.system.name": "memory",
        "db.operation.name": "INSERT",
        "db.collection.name": "events",
        "db.query.summary": "INSERT events",
        "cqrs.db.rows": 1,
    }
    assert insert_outbox.attributes is not None
    assert insert_outbox.attributes["db.collection.name"] == "outbox"
    assert commit.attributes == {"db.system.name": "memory", "db.operation.name": "COMMIT"}
    # The spans carry the times the unit of work measured, inside the command's span.
    (uow,) = uows.created
    for child, step in zip(children, uow.timings, strict=True):
        assert (child.start_time, child.end_time) == (step.start_ns, step.end_ns)
        assert child.status.status_code is StatusCode.UNSET
    assert command.start_time is not None
    assert command.end_time is not None
    assert command.start_time <= children[0].start_time <= children[-1].end_time  # type: ignore[operator]
    assert children[-1].end_time <= command.end_time  # type: ignore[operator]


async def test_a_nested_command_is_a_child_span_and_the_steps_are_reported_once_by_the_root(
    shop: Shop, span_capture: SpanCapture
) -> None:
    mediator = build_mediator(shop, tracer_provider=span_capture.tracer_provider)

    response = await mediator.send(PlaceOrder(order_id="o-1", amount=3, sku="sku-1"))

    root = span_capture.named("command PlaceOrder")
    nested = span_capture.named("command ReserveStock")
    assert nested.parent is not None
    assert nested.parent.span_id == root.context.span_id
    assert nested.attributes is not None
    assert nested.attributes["cqrs.causation_id"] == root.attributes["cqrs.message.id"]  # type: ignore[index]
    assert nested.attributes["cqrs.correlation_id"] == response.correlation_id
    assert span_capture.children(nested) == []
    assert [c.name for c in span_capture.children(root)] == [
        "command ReserveStock",
        "INSERT events",
        "INSERT outbox",
        "COMMIT",
    ]
    insert_events = span_capture.named("INSERT events")
    assert insert_events.attributes is not None
    assert insert_events.attributes["cqrs.db.rows"] == 2  # both commands' events, one statement


async def test_the_command_span_is_current_while_the_handler_runs(
    shop: Shop, span_capture: SpanCapture
) -> None:
    mediator = build_mediator(shop, tracer_provider=span_capture.tracer_provider)

    await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    span = span_capture.named("command PlaceOrder")
    ctx = span.context
    assert ctx is not None
    (carrier,) = shop.trace_contexts
    _version, trace_id, span_id, flags = carrier["traceparent"].split("-")
    assert (trace_id, span_id) == (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}")
    assert int(flags, 16) & 0x01  # sampled
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached afterwards


async def test_a_query_gets_a_query_span_without_persistence_children(
    shop: Shop, span_capture: SpanCapture
) -> None:
    mediator = build_mediator(shop, tracer_provider=span_capture.tracer_provider)
    query = GetOrder(order_id="o-1")

    assert await mediator.query(query) == 0

    span = span_capture.named("query GetOrder")
    assert span.kind is SpanKind.INTERNAL
    assert span.attributes is not None
    assert span.attributes["cqrs.message.kind"] == "query"
    assert span.attributes["cqrs.message.id"] == query.message_id
    assert span_capture.children(span) == []


async def test_a_handler_error_sets_status_error_error_type_and_records_the_exception(
    shop: Shop, span_capture: SpanCapture
) -> None:
    mediator = build_mediator(shop, tracer_provider=span_capture.tracer_provider)

    with pytest.raises(Boom):
        await mediator.send(Explode())

    span = span_capture.named("command Explode")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "the handler failed"
    assert span.attributes is not None
    assert span.attributes["error.type"] == "tests.observability.app.Boom"
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert str(event.attributes["exception.type"]).endswith("Boom")
    assert event.attributes["exception.message"] == "the handler failed"
    assert span_capture.children(span) == []  # rolled back: nothing was written


async def test_a_validation_error_is_a_refusal_with_no_error_status_and_no_transaction(
    shop: Shop, span_capture: SpanCapture
) -> None:
    uows = RecordingUowFactory()
    mediator = build_mediator(shop, tracer_provider=span_capture.tracer_provider, uow_factory=uows)
    invalid = PlaceOrder.model_construct(order_id="o-1", amount=0, message_id="m-1")

    with pytest.raises(MessageValidationError):
        await mediator.send(invalid)

    span = span_capture.named("command PlaceOrder")
    assert span.status.status_code is StatusCode.UNSET  # a result, not an error
    assert span.attributes is not None
    assert span.attributes["cqrs.outcome"] == "refused"
    assert span.attributes["cqrs.refusal.type"] == (
        "cqrs_ddd_core.exceptions.MessageValidationError"
    )
    assert "error.type" not in span.attributes
    assert span.events == ()  # no exception event, no stack trace
    assert uows.created == []
    assert span_capture.children(span) == []


async def test_a_concurrency_error_at_commit_fails_the_step_rolls_back_and_refuses_the_command(
    shop: Shop, span_capture: SpanCapture
) -> None:
    mediator = build_mediator(shop, tracer_provider=span_capture.tracer_provider)
    await mediator.send(PlaceOrder(order_id="o-1", amount=3))
    span_capture.clear()

    with pytest.raises(ConcurrencyError):
        await mediator.send(PlaceOrder(order_id="o-1", amount=4))

    command = span_capture.named("command PlaceOrder")
    assert command.status.status_code is StatusCode.UNSET
    assert command.attributes is not None
    assert command.attributes["cqrs.outcome"] == "refused"
    assert command.attributes["cqrs.refusal.type"] == "cqrs_ddd_core.exceptions.ConcurrencyError"
    step, rollback = span_capture.children(command)  # the failed check ended the commit
    assert step.name == "INSERT events"
    assert step.status.status_code is StatusCode.ERROR
    assert step.attributes is not None
    # One form everywhere: the qualified name, as on the metrics and in the logs.
    assert step.attributes["error.type"] == "cqrs_ddd_core.exceptions.ConcurrencyError"
    assert step.attributes["cqrs.db.rows"] == 0  # nothing it wrote was kept
    assert rollback.name == "ROLLBACK"
    assert rollback.kind is SpanKind.CLIENT
    assert rollback.status.status_code is StatusCode.UNSET
    assert rollback.start_time >= step.end_time


async def test_a_span_that_is_not_sampled_is_current_but_not_exported(shop: Shop) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    mediator = build_mediator(shop, tracer_provider=provider)

    await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    assert exporter.get_finished_spans() == ()
    (carrier,) = shop.trace_contexts
    flags = carrier["traceparent"].rsplit("-", 1)[1]
    assert not int(flags, 16) & 0x01  # "not sampled" reaches the outbox


async def test_without_an_sdk_the_middleware_passes_through_and_sets_no_span(
    shop: Shop,
) -> None:
    seen: list[Any] = []

    async def look(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        seen.append(trace.get_current_span())
        return await call_next(message, context)

    mediator = build_mediator(shop, tracer_provider=trace.NoOpTracerProvider(), extra=(look,))

    response = await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    assert response.result == "o-1"
    assert seen == [trace.INVALID_SPAN]
    assert shop.trace_contexts == [{}]


def test_a_provider_installed_after_the_mediator_was_built_gets_the_spans() -> None:
    # The global provider can be set once per process: run in a fresh one.
    script = textwrap.dedent(
        """
        import asyncio
        from opentelemetry import trace
        from cqrs_ddd_core.testing import SpanCapture
        from tests.observability.app import PlaceOrder, Shop, build_mediator

        shop = Shop()
        mediator = build_mediator(shop)  # global provider: the API's proxy
        capture = SpanCapture()
        asyncio.run(mediator.send(PlaceOrder(order_id="o-0", amount=3)))  # nothing to trace yet
        trace.set_tracer_provider(capture.tracer_provider)
        asyncio.run(mediator.send(PlaceOrder(order_id="o-1", amount=3)))
        print(capture.names)
        """
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert (
        done.stdout.strip().splitlines()[-1]
        == "['INSERT events', 'INSERT outbox', 'COMMIT', 'command PlaceOrder']"
    )


def test_the_middleware_is_named_placed_outside_the_unit_of_work_and_printable() -> None:
    middleware = TracingMiddleware(tracer_provider=trace.NoOpTracerProvider())

    assert middleware.name == "tracing"
    assert "unit_of_work" in middleware.placement.outside
    assert repr(middleware).startswith("TracingMiddleware(")


class SQLiteLikeUnitOfWork(BaseUnitOfWork):
    """Reports the steps the SQLite flush measures: BEGIN, two inserts, COMMIT."""

    system = "sqlite"
    START_NS = 1_700_000_000_000_000_000
    error_at: str | None = None

    async def _write_and_commit(self, groups: list[StagedGroup]) -> None:
        start = self.START_NS
        steps = [
            ("BEGIN", None, 1),
            ("INSERT", "events", 1),
            ("INSERT", "outbox", 1),
            ("COMMIT", None, 0),
        ]
        at = start
        for operation, collection, rows in steps:
            failed = self.error_at == (collection or operation)
            self.timings.append(
                StepTiming(
                    operation,
                    collection,
                    "sqlite",
                    at,
                    at + 1_000_000,
                    rows if collection else 0,
                    "ConcurrencyError" if failed else None,
                )
            )
            at += 1_000_000
            if failed:
                raise ConcurrencyError("Order:o-1", 0, 1)

    async def _discard(self) -> None:
        return None


def _tracing_mediator(
    shop: Shop, capture: SpanCapture, uow_factory: Any, persistence_spans: Any
) -> Any:
    mediator = build_mediator(shop, uow_factory=uow_factory)
    middlewares = list(mediator.pipeline.middlewares)
    middlewares[0] = TracingMiddleware(
        tracer_provider=capture.tracer_provider, persistence_spans=persistence_spans
    )
    shop.mediator = type(mediator)(
        mediator.registry, uow_factory, middlewares=middlewares, query_middlewares=[]
    )
    return shop.mediator


async def test_a_begin_step_is_folded_into_the_step_after_it(
    shop: Shop, span_capture: SpanCapture
) -> None:
    mediator = _tracing_mediator(shop, span_capture, SQLiteLikeUnitOfWork, "steps")

    await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    command = span_capture.named("command PlaceOrder")
    children = span_capture.children(command)
    assert [c.name for c in children] == ["INSERT events", "INSERT outbox", "COMMIT"]
    insert_events = children[0]
    start = SQLiteLikeUnitOfWork.START_NS
    # It starts when BEGIN started, so the trace has no unexplained gap.
    assert (insert_events.start_time, insert_events.end_time) == (start, start + 2_000_000)
    assert insert_events.attributes == {
        "db.system.name": "sqlite",
        "db.operation.name": "INSERT",
        "db.collection.name": "events",
        "db.query.summary": "INSERT events",
        "cqrs.db.rows": 1,
        "cqrs.db.begin_ms": 1.0,
    }
    assert children[1].attributes is not None
    assert "cqrs.db.begin_ms" not in children[1].attributes
    assert (children[2].start_time, children[2].end_time) == (
        start + 3_000_000,
        start + 4_000_000,
    )


async def test_a_failed_begin_is_a_span_of_its_own(shop: Shop, span_capture: SpanCapture) -> None:
    class FailingBegin(SQLiteLikeUnitOfWork):
        error_at = "BEGIN"

    mediator = _tracing_mediator(shop, span_capture, FailingBegin, "steps")

    with pytest.raises(ConcurrencyError):
        await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    step, rollback = span_capture.children(span_capture.named("command PlaceOrder"))
    assert step.name == "BEGIN"
    assert step.status.status_code is StatusCode.ERROR
    assert rollback.name == "ROLLBACK"


async def test_persistence_spans_commit_reports_one_span_with_the_step_durations(
    shop: Shop, span_capture: SpanCapture
) -> None:
    mediator = _tracing_mediator(shop, span_capture, SQLiteLikeUnitOfWork, "commit")

    await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    command = span_capture.named("command PlaceOrder")
    (commit,) = span_capture.children(command)
    start = SQLiteLikeUnitOfWork.START_NS
    assert commit.name == "COMMIT"
    assert commit.kind is SpanKind.CLIENT
    assert (commit.start_time, commit.end_time) == (start, start + 4_000_000)
    assert commit.attributes == {
        "db.system.name": "sqlite",
        "db.operation.name": "COMMIT",
        "cqrs.db.step.begin_ms": 1.0,
        "cqrs.db.step.insert_events_ms": 1.0,
        "cqrs.db.step.insert_outbox_ms": 1.0,
        "cqrs.db.step.commit_ms": 1.0,
        "cqrs.db.rows": 2,
    }
    assert commit.status.status_code is StatusCode.UNSET


async def test_persistence_spans_commit_marks_a_failed_commit(
    shop: Shop, span_capture: SpanCapture
) -> None:
    class FailingOutbox(SQLiteLikeUnitOfWork):
        error_at = "outbox"

    mediator = _tracing_mediator(shop, span_capture, FailingOutbox, "commit")

    with pytest.raises(ConcurrencyError):
        await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    (commit,) = span_capture.children(span_capture.named("command PlaceOrder"))
    assert commit.status.status_code is StatusCode.ERROR
    assert commit.attributes is not None
    assert commit.attributes["error.type"] == "cqrs_ddd_core.exceptions.ConcurrencyError"
    assert commit.attributes["cqrs.db.failed_step"] == "INSERT outbox"
    assert commit.attributes["cqrs.db.rows"] == 0  # rolled back: no row was kept
    assert "cqrs.db.step.rollback_ms" in commit.attributes
    assert "cqrs.db.step.commit_ms" not in commit.attributes  # it never got there


async def test_persistence_spans_none_reports_only_the_dispatch_spans(
    shop: Shop, span_capture: SpanCapture
) -> None:
    mediator = _tracing_mediator(shop, span_capture, InMemoryUnitOfWork, "none")

    await mediator.send(PlaceOrder(order_id="o-1", amount=3, sku="sku-1"))

    assert span_capture.names == ["command ReserveStock", "command PlaceOrder"]


def test_persistence_spans_must_be_a_known_mode() -> None:
    with pytest.raises(ValueError, match="persistence_spans"):
        TracingMiddleware(persistence_spans="all")  # type: ignore[arg-type]
    assert TracingMiddleware().persistence_spans == "steps"
    assert "persistence_spans='commit'" in repr(TracingMiddleware(persistence_spans="commit"))


async def test_without_an_sdk_the_middleware_adds_no_coroutine_of_its_own() -> None:
    middleware = TracingMiddleware(tracer_provider=trace.NoOpTracerProvider())
    context = DispatchContext(GetOrder(order_id="o-1"), "query")

    async def rest(message: Any, context: DispatchContext) -> str:
        return "done"

    step = rest(None, context)

    def call_next(message: Any, context: DispatchContext) -> Any:
        return step

    assert middleware(None, context, call_next) is step  # handed straight through
    assert await step == "done"
