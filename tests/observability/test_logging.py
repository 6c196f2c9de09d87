"""LoggingMiddleware: bound ids, start/end events, failures logged once, redaction, cost."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import structlog
from structlog.typing import EventDict

from cqrs_ddd_core.adapters.memory import InMemoryUnitOfWork
from cqrs_ddd_core.context import DispatchContext
from cqrs_ddd_core.cqrs import Mediator
from cqrs_ddd_core.exceptions import ConcurrencyError, MessageValidationError
from cqrs_ddd_core.middleware import LoggingMiddleware, UnitOfWorkMiddleware
from cqrs_ddd_core.pipeline import CallNext
from cqrs_ddd_core.telemetry import add_trace_context
from cqrs_ddd_core.testing import SpanCapture, capture_log_events
from tests.observability.app import (
    Boom,
    Explode,
    GetOrder,
    PlaceOrder,
    ReserveStock,
    Shop,
    build_mediator,
)


def events_named(events: list[EventDict], name: str) -> list[EventDict]:
    return [e for e in events if e["event"] == name]


async def test_a_command_logs_a_debug_start_and_an_info_end_with_outcome_duration_and_events(
    shop: Shop, log_events: list[EventDict]
) -> None:
    mediator = build_mediator(shop)
    command = PlaceOrder(order_id="o-1", amount=3)

    response = await mediator.send(command)

    started, succeeded = (e for e in log_events if e["message_id"] == command.message_id)
    ids = {
        "message_type": "PlaceOrder",
        "message_id": command.message_id,
        "correlation_id": response.correlation_id,
    }
    assert started == {
        **ids,
        "event": "command_started",
        "log_level": "debug",
        "causation_id": None,
    }
    assert succeeded["event"] == "command_succeeded"
    assert succeeded["log_level"] == "info"
    assert succeeded["outcome"] == "success"
    assert succeeded["events_raised"] == 1
    assert isinstance(succeeded["duration_ms"], float)
    assert succeeded["duration_ms"] >= 0
    assert "payload" not in started
    assert "amount" not in str(started)


async def test_a_query_logs_its_end_at_debug(shop: Shop, log_events: list[EventDict]) -> None:
    mediator = build_mediator(shop)

    await mediator.query(GetOrder(order_id="o-1"))

    assert [(e["event"], e["log_level"]) for e in log_events] == [
        ("query_started", "debug"),
        ("query_succeeded", "debug"),
    ]
    assert "events_raised" not in log_events[1]


async def test_the_ids_are_bound_for_the_handler_and_restored_around_nested_dispatches(
    shop: Shop, log_events: list[EventDict]
) -> None:
    seen: list[dict[str, Any]] = []

    async def look(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        seen.append(structlog.contextvars.get_contextvars())
        result = await call_next(message, context)
        seen.append(structlog.contextvars.get_contextvars())
        return result

    structlog.contextvars.bind_contextvars(request_id="r-1")
    mediator = build_mediator(shop, extra=(look,))
    command = PlaceOrder(order_id="o-1", amount=3, sku="sku-1")

    response = await mediator.send(command)

    outer = {
        "request_id": "r-1",
        "correlation_id": response.correlation_id,
        "message_type": "PlaceOrder",
        "message_id": command.message_id,
    }
    before_outer, before_inner, after_inner, after_outer = seen
    assert before_outer == outer
    assert before_inner["message_type"] == "ReserveStock"
    assert before_inner["correlation_id"] == response.correlation_id
    assert after_inner["message_type"] == "ReserveStock"
    assert after_outer == outer  # the nested dispatch gave the parent's bindings back
    assert structlog.contextvars.get_contextvars() == {"request_id": "r-1"}
    assert [e["event"] for e in log_events if e["message_type"] == "ReserveStock"] == [
        "command_started",
        "command_succeeded",
    ]


async def test_an_unexpected_error_is_logged_once_at_error_with_its_traceback(
    shop: Shop, log_events: list[EventDict]
) -> None:
    mediator = build_mediator(shop)

    with pytest.raises(Boom):
        await mediator.send(Explode())

    (failed,) = events_named(log_events, "command_failed")
    assert failed["log_level"] == "error"
    assert failed["outcome"] == "error"
    assert failed["error_type"] == "tests.observability.app.Boom"
    assert isinstance(failed["exc_info"], Boom)
    assert "error" not in failed  # the message travels with the traceback only


async def test_a_refusal_is_logged_as_refused_at_the_success_level_without_traceback(
    shop: Shop, log_events: list[EventDict]
) -> None:
    mediator = build_mediator(shop)
    await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    with pytest.raises(ConcurrencyError):
        await mediator.send(PlaceOrder(order_id="o-1", amount=3))
    with pytest.raises(MessageValidationError):
        await mediator.send(PlaceOrder.model_construct(order_id="o-2", amount=-1, message_id="m"))

    assert events_named(log_events, "command_failed") == []
    conflict, invalid = events_named(log_events, "command_refused")
    assert conflict["log_level"] == invalid["log_level"] == "info"
    assert conflict["outcome"] == invalid["outcome"] == "refused"
    assert conflict["refusal_type"] == "cqrs_ddd_core.exceptions.ConcurrencyError"
    assert "expected version 0, found 1" in conflict["reason"]
    assert invalid["refusal_type"] == "cqrs_ddd_core.exceptions.MessageValidationError"
    assert "exc_info" not in conflict
    assert "exc_info" not in invalid


async def test_a_cancellation_is_an_expected_failure_logged_at_warning_without_traceback(
    shop: Shop, log_events: list[EventDict]
) -> None:
    async def cancelled(command: ReserveStock) -> None:
        raise asyncio.CancelledError

    shop.registry._commands[ReserveStock] = cancelled
    mediator = build_mediator(shop)

    with pytest.raises(asyncio.CancelledError):
        await mediator.send(ReserveStock(sku="sku-1"))

    (failed,) = events_named(log_events, "command_failed")
    assert failed["log_level"] == "warning"
    assert failed["outcome"] == "error"
    assert failed["error_type"] == "asyncio.exceptions.CancelledError"
    assert "exc_info" not in failed


async def test_a_failure_in_a_nested_command_is_logged_once_and_the_parent_ends_propagated(
    shop: Shop, log_events: list[EventDict]
) -> None:
    async def reserve_fails(command: ReserveStock) -> None:
        raise Boom("no stock")

    shop.registry._commands[ReserveStock] = reserve_fails
    mediator = build_mediator(shop)

    with pytest.raises(Boom):
        await mediator.send(PlaceOrder(order_id="o-1", amount=3, sku="sku-1"))

    inner, outer = events_named(log_events, "command_failed")
    assert (inner["message_type"], inner["log_level"]) == ("ReserveStock", "error")
    assert "propagated" not in inner
    assert (outer["message_type"], outer["log_level"]) == ("PlaceOrder", "info")
    assert outer["propagated"] is True
    assert outer["error_type"] == inner["error_type"] == "tests.observability.app.Boom"
    assert "exc_info" not in outer
    assert [e["log_level"] for e in log_events].count("error") == 1


async def test_log_events_carry_the_trace_and_span_ids_of_the_dispatch_span(
    shop: Shop, span_capture: SpanCapture, log_events: list[EventDict]
) -> None:
    mediator = build_mediator(shop, tracer_provider=span_capture.tracer_provider)

    await mediator.send(PlaceOrder(order_id="o-1", amount=3, sku="sku-1"))

    for name in ("PlaceOrder", "ReserveStock"):
        span = span_capture.named(f"command {name}")
        ctx = span.context
        assert ctx is not None
        logged = [e for e in log_events if e["message_type"] == name]
        assert len(logged) == 2
        for event in logged:
            assert event["trace_id"] == f"{ctx.trace_id:032x}"
            assert event["span_id"] == f"{ctx.span_id:016x}"


def test_add_trace_context_adds_nothing_outside_a_span() -> None:
    assert add_trace_context(None, "info", {"event": "x"}) == {"event": "x"}


async def test_log_payload_logs_the_fields_with_secrets_redacted_recursively(
    shop: Shop, log_events: list[EventDict]
) -> None:
    mediator = Mediator(
        shop.registry,
        middlewares=[
            LoggingMiddleware(log_payload=True, secret_markers=("cvv",)),
            UnitOfWorkMiddleware(InMemoryUnitOfWork),
        ],
    )
    command = PlaceOrder(
        order_id="o-1",
        amount=3,
        password="hunter2",
        card={
            "number": "4111",
            "CVV": "123",
            "owner": {"name": "Ada", "api_key": "k", "tokens": ["t1", "t2"]},
            "history": [{"Authorization": "Bearer x", "author": "Ada"}],
        },
    )

    await mediator.send(command)

    (started,) = events_named(log_events, "command_started")
    assert started["payload"] == {
        "order_id": "o-1",
        "amount": 3,
        "sku": None,
        "password": "[REDACTED]",
        "card": {
            "number": "4111",
            "CVV": "[REDACTED]",
            "owner": {"name": "Ada", "api_key": "[REDACTED]", "tokens": "[REDACTED]"},
            "history": [{"Authorization": "[REDACTED]", "author": "Ada"}],
        },
    }
    assert "hunter2" not in repr(log_events)


async def test_a_filtered_out_level_builds_no_event(
    shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    dumped: list[Any] = []
    original = PlaceOrder.model_dump

    def counting_dump(self: PlaceOrder, **kwargs: Any) -> dict[str, Any]:
        dumped.append(kwargs)
        return original(self, **kwargs)

    monkeypatch.setattr(PlaceOrder, "model_dump", counting_dump)
    mediator = Mediator(
        shop.registry,
        middlewares=[LoggingMiddleware(log_payload=True), UnitOfWorkMiddleware(InMemoryUnitOfWork)],
    )

    with capture_log_events() as events:
        await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    assert events == []
    assert dumped == []  # the payload was never built


async def test_stdlib_logger_levels_are_honoured(shop: Shop) -> None:
    structlog.configure(
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    logging.getLogger("cqrs_ddd_core.dispatch").setLevel(logging.INFO)
    try:
        mediator = build_mediator(shop)
        with capture_log_events() as events:
            await mediator.send(PlaceOrder(order_id="o-1", amount=3))
    finally:
        logging.getLogger("cqrs_ddd_core.dispatch").setLevel(logging.NOTSET)

    assert [e["event"] for e in events] == ["command_succeeded"]


async def test_a_stdlib_level_changed_between_dispatches_is_honoured(shop: Shop) -> None:
    # The levels of a filtering logger are fixed per configuration and kept;
    # a stdlib logger's level can change at any time, so it is asked each time.
    structlog.configure(
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    stdlib_logger = logging.getLogger("cqrs_ddd_core.dispatch")
    mediator = build_mediator(shop)
    try:
        stdlib_logger.setLevel(logging.WARNING)
        with capture_log_events() as quiet:
            await mediator.send(PlaceOrder(order_id="o-1", amount=3))
        stdlib_logger.setLevel(logging.INFO)
        with capture_log_events() as loud:
            await mediator.send(PlaceOrder(order_id="o-2", amount=3))
    finally:
        stdlib_logger.setLevel(logging.NOTSET)

    assert quiet == []
    assert [e["event"] for e in loud] == ["command_succeeded"]


def test_levels_are_validated_and_the_middleware_is_printable() -> None:
    with pytest.raises(ValueError, match="level must be one of"):
        LoggingMiddleware(command_level=5)
    middleware = LoggingMiddleware()
    assert middleware.name == "logging"
    assert "unit_of_work" in middleware.placement.outside
    assert "ConcurrencyError" in repr(middleware)


async def test_a_configuration_change_after_the_first_dispatch_is_honoured(shop: Shop) -> None:
    mediator = build_mediator(shop)
    with capture_log_events() as before:
        await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with capture_log_events() as after:
        await mediator.send(PlaceOrder(order_id="o-2", amount=3))

    assert [e["event"] for e in before] == ["command_started", "command_succeeded"]
    assert after == []


async def test_a_broken_logging_setup_does_not_fail_a_command_that_committed(
    shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(logger: object, method_name: str, event_dict: EventDict) -> EventDict:
        raise RuntimeError("bad processor")

    structlog.configure(processors=[broken])
    mediator = build_mediator(shop)

    response = await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    assert response.result == "o-1"
    assert await shop.events.latest_position() == 1
    assert "logging 'command_succeeded' failed: RuntimeError: bad processor" in (
        capsys.readouterr().err
    )


async def test_the_same_exception_object_raised_by_two_dispatches_is_logged_by_each(
    shop: Shop, log_events: list[EventDict]
) -> None:
    shared = Boom("raised from a module-level instance")

    async def explode(command: Explode) -> None:
        raise shared

    shop.registry._commands[Explode] = explode
    mediator = build_mediator(shop)

    for _ in range(2):
        with pytest.raises(Boom):
            await mediator.send(Explode())

    failed = events_named(log_events, "command_failed")
    assert [e["log_level"] for e in failed] == ["error", "error"]
    assert not any("propagated" in e for e in failed)


def test_no_module_of_the_library_uses_a_private_structlog_api() -> None:
    # A private module or attribute (structlog._config, structlog._native) is a
    # release away from breaking every dispatch.
    import re
    from pathlib import Path

    import cqrs_ddd_advanced_core
    import cqrs_ddd_core

    private = re.compile(r"structlog\s*\.\s*_|from\s+structlog(\.\w+)*\s+import\s+_|structlog\._")
    offenders = [
        str(path)
        for package in (cqrs_ddd_core, cqrs_ddd_advanced_core)
        for path in Path(package.__file__).parent.rglob("*.py")
        if private.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
