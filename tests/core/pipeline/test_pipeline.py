"""The pipeline: list order, built once and frozen, same task, short-circuits, placement."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import cqrs_ddd_core.pipeline.pipeline as pipeline_module
from cqrs_ddd_core.context import DispatchContext
from cqrs_ddd_core.cqrs import CommandResponse, HandlerRegistry, Mediator
from cqrs_ddd_core.exceptions import (
    DispatchError,
    PipelineConfigurationError,
    PipelineFrozenError,
)
from cqrs_ddd_core.middleware import UnitOfWorkMiddleware, ValidationMiddleware
from cqrs_ddd_core.persistence.records import AuditRecord
from cqrs_ddd_core.pipeline import CallNext, Middleware, Pipeline, Placement, placement
from tests.core.shop import PlaceOrder, Stores, UowFactory


class Traced:
    """A class middleware that records when it is entered and left."""

    def __init__(self, name: str, trace: list[str]) -> None:
        self.name = name
        self.trace = trace

    async def __call__(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        self.trace.append(f"{self.name}.before")
        try:
            return await call_next(message, context)
        finally:
            self.trace.append(f"{self.name}.after")


def traced_function(name: str, trace: list[str]) -> Middleware:
    """A plain-function middleware whose third parameter is *not* called call_next."""

    async def middleware(message: Any, context: DispatchContext, nxt: CallNext) -> Any:
        trace.append(f"{name}.before")
        try:
            return await nxt(message, context)
        finally:
            trace.append(f"{name}.after")

    middleware.name = name  # type: ignore[attr-defined]
    return middleware


def mediator_with(
    middlewares: list[Middleware],
    handler: Callable[[PlaceOrder], Any] | None = None,
    registry: HandlerRegistry | None = None,
) -> Mediator:
    registry = registry or HandlerRegistry()

    async def default_handler(command: PlaceOrder) -> str:
        return command.order_id

    registry.register_command_handler(PlaceOrder, handler or default_handler)
    return Mediator(registry, middlewares=middlewares, query_middlewares=[])


def order() -> PlaceOrder:
    return PlaceOrder(order_id="o-1", amount=10)


# -- order ------------------------------------------------------------------


async def test_middlewares_run_in_list_order_with_the_first_listed_outermost() -> None:
    trace: list[str] = []

    async def handler(command: PlaceOrder) -> str:
        trace.append("handler")
        return "done"

    mediator = mediator_with(
        [Traced("tracing", trace), traced_function("logging", trace), Traced("metrics", trace)],
        handler,
    )

    response = await mediator.send(order())

    # The call/return trace, as the docs draw it:
    #   tracing.before -> logging.before -> metrics.before -> handler
    #   tracing.after  <- logging.after  <- metrics.after  <-
    print("\n".join(trace))
    assert trace == [
        "tracing.before",
        "logging.before",
        "metrics.before",
        "handler",
        "metrics.after",
        "logging.after",
        "tracing.after",
    ]
    assert response.result == "done"


def test_describe_shows_the_resolved_order_ending_with_the_handler() -> None:
    trace: list[str] = []
    mediator = mediator_with([Traced("tracing", trace), traced_function("logging", trace)])

    assert mediator.pipeline.order == ("tracing", "logging", "handler")
    assert mediator.pipeline.describe() == "tracing -> logging -> handler"
    assert mediator.describe() == "commands: tracing -> logging -> handler\nqueries:  handler"
    assert repr(mediator.pipeline) == "Pipeline(command: tracing -> logging -> handler)"


def test_a_middleware_without_a_name_is_shown_by_its_function_or_class_name() -> None:
    async def audit_step(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        return await call_next(message, context)

    class Anonymous:
        async def __call__(
            self, message: Any, context: DispatchContext, call_next: CallNext
        ) -> Any:
            return await call_next(message, context)

    mediator = mediator_with([audit_step, Anonymous()])

    assert mediator.pipeline.describe() == "audit_step -> Anonymous -> handler"


async def test_the_chain_is_built_once_when_the_mediator_is_created_not_per_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    links: list[str] = []
    real_link = pipeline_module._link

    def counting_link(mw: Middleware, call_next: CallNext) -> CallNext:
        links.append(pipeline_module.middleware_name(mw))
        return real_link(mw, call_next)

    monkeypatch.setattr(pipeline_module, "_link", counting_link)
    trace: list[str] = []
    mediator = mediator_with([Traced("a", trace), traced_function("b", trace), Traced("c", trace)])
    chain = mediator.pipeline._call

    assert links == ["c", "b", "a"]  # linked innermost first, once each
    for _ in range(5):
        await mediator.send(order())

    assert links == ["c", "b", "a"]
    assert mediator.pipeline._call is chain
    assert trace.count("a.before") == 5


# -- frozen -----------------------------------------------------------------


def test_changing_a_built_pipeline_raises_pipeline_frozen_error() -> None:
    trace: list[str] = []
    mediator = mediator_with([Traced("tracing", trace)])

    with pytest.raises(PipelineFrozenError, match="built and frozen"):
        mediator.pipeline.middlewares = ()
    with pytest.raises(PipelineFrozenError):
        del mediator.pipeline.middlewares
    with pytest.raises(PipelineFrozenError):
        mediator.query_pipeline.kind = "command"

    assert mediator.pipeline.order == ("tracing", "handler")
    assert isinstance(mediator.pipeline.middlewares, tuple)  # no append either


# -- context variables and tasks ----------------------------------------------

request_user: ContextVar[str | None] = ContextVar("request_user", default=None)
set_by_handler: ContextVar[str | None] = ContextVar("set_by_handler", default=None)


async def test_a_context_variable_set_by_an_outer_middleware_is_visible_in_the_handler() -> None:
    seen: list[str | None] = []
    after_call_next: list[str | None] = []

    async def authenticate(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        token = request_user.set("alice")
        try:
            result = await call_next(message, context)
            # A value the handler set is visible here too: nothing copied the context.
            after_call_next.append(set_by_handler.get())
            return result
        finally:
            request_user.reset(token)

    async def handler(command: PlaceOrder) -> str:
        seen.append(request_user.get())
        set_by_handler.set("from-handler")
        return "ok"

    trace: list[str] = []
    mediator = mediator_with([authenticate, Traced("inner", trace)], handler)

    await mediator.send(order())

    assert seen == ["alice"]
    assert after_call_next == ["from-handler"]
    assert request_user.get() is None  # restored in the middleware's finally


async def test_nothing_runs_call_next_in_another_task() -> None:
    tasks: list[asyncio.Task[Any] | None] = []

    async def record_task(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        tasks.append(asyncio.current_task())
        return await call_next(message, context)

    class RecordTask:
        async def __call__(self, message: Any, context: DispatchContext, nxt: CallNext) -> Any:
            tasks.append(asyncio.current_task())
            return await nxt(message, context)

    async def handler(command: PlaceOrder) -> str:
        tasks.append(asyncio.current_task())
        return "ok"

    mediator = mediator_with(
        [record_task, ValidationMiddleware(), UnitOfWorkMiddleware(UowFactory()), RecordTask()],
        handler,
    )

    await mediator.send(order())

    assert len(tasks) == 3
    assert all(task is asyncio.current_task() for task in tasks)


# -- short-circuit --------------------------------------------------------------


async def test_a_middleware_short_circuits_by_returning_without_calling_call_next() -> None:
    trace: list[str] = []
    factory = UowFactory()

    async def cache(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        trace.append("cache.hit")
        return CommandResponse("cached")

    async def handler(command: PlaceOrder) -> str:
        trace.append("handler")
        return "fresh"

    mediator = mediator_with(
        [Traced("outer", trace), cache, UnitOfWorkMiddleware(factory), Traced("inner", trace)],
        handler,
    )

    response = await mediator.send(order())

    assert response.result == "cached"
    assert trace == ["outer.before", "cache.hit", "outer.after"]
    assert factory.created == []  # no transaction was even opened


class Forbidden(DispatchError):
    """The sender may not send this command."""


async def test_a_middleware_short_circuits_by_raising_a_typed_error_and_nothing_is_kept() -> None:
    trace: list[str] = []
    stores = Stores()
    factory = UowFactory()
    error = Forbidden("alice may not place orders")

    async def guard(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        # Something was already staged in this transaction before the guard refused.
        await stores.audit.stage(_audit_record(context), context.uow)  # type: ignore[arg-type]
        raise error

    async def handler(command: PlaceOrder) -> str:
        trace.append("handler")
        return "never"

    mediator = mediator_with(
        [Traced("outer", trace), UnitOfWorkMiddleware(factory), guard], handler
    )

    with pytest.raises(Forbidden) as raised:
        await mediator.send(order())

    assert raised.value is error  # propagated unchanged
    assert trace == ["outer.before", "outer.after"]
    assert not factory.created[0].is_open
    assert await stores.audit.list_records() == []


def _audit_record(context: DispatchContext) -> AuditRecord:
    from cqrs_ddd_core.domain import new_id, utc_now

    return AuditRecord(
        audit_id=new_id(),
        message_id=context.message_id,
        message_type=context.message_type,
        correlation_id=context.correlation_id,
        causation_id=context.causation_id,
        actor=None,
        outcome="error",
        error_type="Forbidden",
        started_at=utc_now(),
        duration_ms=0.0,
    )


# -- placement ----------------------------------------------------------------


def test_validation_listed_inside_the_unit_of_work_is_refused_naming_the_order() -> None:
    with pytest.raises(PipelineConfigurationError) as raised:
        mediator_with([UnitOfWorkMiddleware(UowFactory()), ValidationMiddleware()])

    message = str(raised.value)
    assert "validation must run outside 'unit_of_work'" in message
    assert "The command pipeline's order is: unit_of_work -> validation -> handler" in message
    assert raised.value.order == ("unit_of_work", "validation")
    assert raised.value.offender == "validation"


def test_a_middleware_that_must_run_inside_a_unit_of_work_is_refused_without_one() -> None:
    @placement(name="event_persistence", inside={"unit_of_work"})
    async def persist(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        return await call_next(message, context)

    with pytest.raises(PipelineConfigurationError) as raised:
        mediator_with([ValidationMiddleware(), persist])

    assert str(raised.value) == (
        "event_persistence must run inside 'unit_of_work': list a middleware that provides "
        "it before event_persistence. The command pipeline's order is: "
        "validation -> event_persistence -> handler"
    )
    # Listed after the unit of work it is accepted.
    mediator = mediator_with([ValidationMiddleware(), UnitOfWorkMiddleware(UowFactory()), persist])
    assert mediator.pipeline.describe() == (
        "validation -> unit_of_work -> event_persistence -> handler"
    )


def test_a_query_pipeline_violation_names_the_query_pipeline() -> None:
    with pytest.raises(PipelineConfigurationError, match="The query pipeline's order is"):
        Mediator(
            HandlerRegistry(),
            middlewares=[],
            query_middlewares=[UnitOfWorkMiddleware(UowFactory()), ValidationMiddleware()],
        )


def test_something_that_is_not_callable_is_not_a_middleware() -> None:
    with pytest.raises(PipelineConfigurationError, match="is not callable") as raised:
        mediator_with(["logging"])  # type: ignore[list-item]

    assert raised.value.offender == "str"


_CAPABILITIES = ("unit_of_work", "tracing")


@st.composite
def placed_middlewares(draw: st.DrawFn) -> list[Middleware]:
    """Function middlewares with random names and placements over two capabilities."""
    count = draw(st.integers(min_value=0, max_value=6))
    middlewares: list[Middleware] = []
    for index in range(count):
        subset = st.frozensets(st.sampled_from(_CAPABILITIES))

        @placement(
            name=f"m{index}", provides=draw(subset), inside=draw(subset), outside=draw(subset)
        )
        async def middleware(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
            return await call_next(message, context)

        middlewares.append(middleware)
    return middlewares


def _violates(middlewares: list[Middleware]) -> bool:
    rules: list[Placement] = [mw.placement for mw in middlewares]  # type: ignore[attr-defined]
    for index, rule in enumerate(rules):
        before = set().union(*(r.provides for r in rules[:index]))
        if not rule.inside <= before or rule.outside & before:
            return True
    return False


@given(placed_middlewares())
def test_a_pipeline_builds_exactly_when_every_placement_holds(
    middlewares: list[Middleware],
) -> None:
    async def terminal(message: Any, context: DispatchContext) -> Any:
        return None

    names = [f"m{i}" for i in range(len(middlewares))]
    if _violates(middlewares):
        with pytest.raises(PipelineConfigurationError) as raised:
            Pipeline(middlewares, terminal, kind="command")
        assert raised.value.order == tuple(names)
        assert raised.value.offender in names
    else:
        built = Pipeline(middlewares, terminal, kind="command")
        assert built.order == (*names, "handler")


# -- found by mutation testing (docs/mutation.md) ------------------------------------


async def _echo(message: Any, context: DispatchContext) -> Any:
    return ("handled", message)


def _context() -> DispatchContext:
    return DispatchContext(PlaceOrder(order_id="o-1", amount=1), "command")


async def test_a_middleware_taking_call_next_by_keyword_gets_the_next_step() -> None:
    trace: list[str] = []

    async def keyword_only(message: Any, context: DispatchContext, *, call_next: CallNext) -> Any:
        trace.append("before")
        result = await call_next(message, context)
        trace.append("after")
        return result

    class Positional:
        async def __call__(self, message: Any, context: Any, call_next: CallNext) -> Any:
            trace.append("positional")
            return await call_next(message, context)

    pipeline = Pipeline([keyword_only, Positional()], _echo, kind="command")

    assert await pipeline("m", _context()) == ("handled", "m")
    assert trace == ["before", "positional", "after"]


def test_a_function_middlewares_outside_constraint_is_checked() -> None:
    @placement(name="early", outside=("unit_of_work",))
    async def early(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        return await call_next(message, context)

    with pytest.raises(PipelineConfigurationError, match="early must run outside") as caught:
        Pipeline([UnitOfWorkMiddleware(UowFactory()), early], _echo, kind="command")

    assert caught.value.order == ("unit_of_work", "early")
    assert Placement.of(outside=["x"]).outside == frozenset({"x"})


def test_a_name_that_is_not_a_non_empty_string_is_not_used() -> None:
    class Named:
        name = 7

        async def __call__(self, message: Any, context: Any, call_next: CallNext) -> Any:
            return await call_next(message, context)

    assert pipeline_module.middleware_name(Named()) == "Named"


def test_a_non_callable_middleware_is_refused_with_the_listed_order() -> None:
    @placement(name="fine")
    async def fine(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        return await call_next(message, context)

    with pytest.raises(PipelineConfigurationError, match="not callable") as caught:
        Pipeline([fine, "oops"], _echo, kind="command")  # type: ignore[list-item]

    assert caught.value.order == ("fine", "str")


def test_deleting_from_a_built_pipeline_says_how_to_do_it_instead() -> None:
    pipeline = Pipeline([], _echo, kind="command")

    with pytest.raises(PipelineFrozenError, match="list every middleware when creating"):
        del pipeline.kind


# -- every shape of middleware is linked and behaves as written ----------------


class _Base:
    async def __call__(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        return await call_next(message, context)


class _UsesSuper(_Base):
    """Its ``__call__`` has a closure (``super()``'s ``__class__`` cell)."""

    def __init__(self, trace: list[str]) -> None:
        self.trace = trace

    async def __call__(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        self.trace.append("super")
        return await super().__call__(message, context, call_next)


class _PlainCall:
    """``__call__`` is a plain function returning the next step's awaitable."""

    def __init__(self, trace: list[str]) -> None:
        self.trace = trace

    def __call__(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        self.trace.append("plain")
        return call_next(message, context)


_STATIC_CALLS: list[str] = []


class _Static:
    """``__call__`` is a static method: nothing is bound to it."""

    @staticmethod
    async def __call__(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        _STATIC_CALLS.append(context.message_type)
        return await call_next(message, context)


class _Variadic:
    def __init__(self, trace: list[str]) -> None:
        self.trace = trace

    async def __call__(self, *args: Any) -> Any:
        message, context, call_next = args
        self.trace.append("variadic")
        return await call_next(message, context)


class _Bound:
    def __init__(self, trace: list[str]) -> None:
        self.trace = trace

    async def step(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        self.trace.append("bound")
        return await call_next(message, context)


async def test_every_shape_of_middleware_runs_once_in_order_and_is_left_unchanged() -> None:
    import functools

    trace: list[str] = []

    async def with_default(
        message: Any, context: DispatchContext, call_next: CallNext | None = None
    ) -> Any:
        trace.append("default")
        assert call_next is not None
        return await call_next(message, context)

    async def partial_target(
        label: str, message: Any, context: DispatchContext, call_next: CallNext
    ) -> Any:
        trace.append(label)
        return await call_next(message, context)

    @functools.wraps(with_default)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        trace.append("wrapped")
        return await with_default(*args, **kwargs)

    function = traced_function("function", trace)
    bound = _Bound(trace).step
    middlewares: list[Middleware] = [
        Traced("class", trace),
        function,
        _UsesSuper(trace),
        _PlainCall(trace),
        _Static(),
        _Variadic(trace),
        bound,
        with_default,
        functools.partial(partial_target, "partial"),
        wrapped,
    ]
    mediator = mediator_with(middlewares)

    _STATIC_CALLS.clear()
    response = await mediator.send(order())
    assert response.result == "o-1"
    assert _STATIC_CALLS == ["PlaceOrder"]
    assert trace == [
        "class.before",
        "function.before",
        "super",
        "plain",
        "variadic",
        "bound",
        "default",
        "partial",
        "wrapped",
        "default",
        "function.after",
        "class.after",
    ]
    # The middlewares themselves are untouched: linking copies, it does not edit.
    assert function.__defaults__ is None
    assert with_default.__defaults__ == (None,)
    assert mediator.pipeline.order[:2] == ("class", "function")
