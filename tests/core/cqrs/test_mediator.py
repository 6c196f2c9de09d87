"""The mediator: dispatch, nested commands, missing handlers, in-process events, queries."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from cqrs_ddd_core._ids import derived_id
from cqrs_ddd_core.context import DispatchContext, current_context, current_uow
from cqrs_ddd_core.cqrs import CommandResponse, HandlerRegistry, Mediator
from cqrs_ddd_core.domain import Command, DomainEvent, Query
from cqrs_ddd_core.exceptions import ConcurrencyError, HandlerNotFoundError
from cqrs_ddd_core.middleware import RetryMiddleware, UnitOfWorkMiddleware, ValidationMiddleware
from cqrs_ddd_core.persistence import UnitOfWork
from cqrs_ddd_core.pipeline import CallNext
from tests.core.shop import (
    GetOrder,
    GetOrderHandler,
    Order,
    OrderPaid,
    OrderPlaced,
    PayOrder,
    PlaceOrder,
    PlaceOrderHandler,
    Stores,
    UowFactory,
)


def command_mediator(registry: HandlerRegistry, uow_factory: UowFactory, *extra: Any) -> Mediator:
    """validation -> unit_of_work -> extra..., the shape of the default pipeline."""
    return Mediator(
        registry,
        uow_factory,
        middlewares=[ValidationMiddleware(), UnitOfWorkMiddleware(uow_factory), *extra],
    )


# -- send ---------------------------------------------------------------------


async def test_send_returns_the_handlers_result_events_and_ids(
    registry: HandlerRegistry, uow_factory: UowFactory, stores: Stores
) -> None:
    registry.register_command_handler(PlaceOrder, PlaceOrderHandler(stores))
    mediator = command_mediator(registry, uow_factory)
    command = PlaceOrder(order_id="o-1", amount=10)

    response = await mediator.send(command)

    assert response.result == "o-1"
    assert response.causation_id == command.message_id
    assert response.correlation_id is not None
    [event] = response.events
    assert isinstance(event, OrderPlaced)
    assert (event.aggregate_id, event.aggregate_version, event.amount) == ("o-1", 1, 10)
    # Each event is stamped with the command's correlation id and the command as its cause.
    assert event.correlation_id == response.correlation_id
    assert event.causation_id == command.message_id
    assert [e.version for e in await stores.events.load_stream("Order", "o-1")] == [1]


async def test_events_recorded_while_the_command_runs_are_stamped_once_when_recorded(
    registry: HandlerRegistry,
) -> None:
    recorded: list[OrderPlaced] = []

    async def handler(command: PlaceOrder) -> CommandResponse[str]:
        order = Order(id=command.order_id)
        recorded.append(order.record_event(OrderPlaced(amount=command.amount)))
        return CommandResponse.from_aggregates(order.id, order)

    registry.register_command_handler(PlaceOrder, handler)
    command = PlaceOrder(order_id="o-1", amount=1, correlation_id="flow-1")

    response = await Mediator(registry, middlewares=[]).send(command)

    # The aggregate stamped the ids when it recorded the event, so the
    # mediator hands on the very event it recorded (no second copy).
    assert (recorded[0].correlation_id, recorded[0].causation_id) == ("flow-1", command.message_id)
    assert response.events[0] is recorded[0]


async def test_two_instances_of_one_stream_recording_in_one_command_get_distinct_event_ids(
    registry: HandlerRegistry, uow_factory: UowFactory
) -> None:
    """The ordinal of a derived id counts the command's events on the stream in
    its unit of work, not those of one object: two objects for one stream
    (loaded twice, or built twice) must not give two events the same id."""

    async def handler(command: PlaceOrder) -> CommandResponse[str]:
        first = Order.place(command.order_id, command.amount)
        second = Order(id=command.order_id, version=1)  # the same stream, another object
        second.pay()
        return CommandResponse.from_aggregates(first.id, first, second)

    registry.register_command_handler(PlaceOrder, handler)
    command = PlaceOrder(order_id="o-1", amount=1)

    response = await command_mediator(registry, uow_factory).send(command)

    assert [e.event_id for e in response.events] == [
        derived_id(command.message_id, "Order", "o-1", 1),
        derived_id(command.message_id, "Order", "o-1", 2),
    ]


async def test_a_retried_command_derives_the_same_distinct_ids_on_two_instances_again(
    registry: HandlerRegistry, uow_factory: UowFactory
) -> None:
    """Each attempt runs in a new unit of work and numbers its events from 1
    again: the retry stages the ids of the first attempt (idempotent commits)."""
    attempts: list[list[str]] = []

    async def handler(command: PlaceOrder) -> CommandResponse[str]:
        first = Order.place(command.order_id, command.amount)
        second = Order(id=command.order_id, version=1)
        second.pay()
        attempts.append([e.event_id for e in (*first.pending_events, *second.pending_events)])
        if len(attempts) == 1:
            raise ConcurrencyError("Order:o-1", 1, 2)  # another writer got there first
        return CommandResponse.from_aggregates(first.id, first, second)

    registry.register_command_handler(PlaceOrder, handler)
    mediator = Mediator(
        registry,
        uow_factory,
        middlewares=[RetryMiddleware(initial_delay=0), UnitOfWorkMiddleware(uow_factory)],
    )

    response = await mediator.send(PlaceOrder(order_id="o-1", amount=1))

    first_attempt, retry = attempts
    assert first_attempt == retry == [e.event_id for e in response.events]
    assert len(set(retry)) == 2
    assert len(uow_factory.created) == 2


async def test_a_nested_command_recording_on_its_parents_stream_gets_ids_of_its_own(
    registry: HandlerRegistry, uow_factory: UowFactory
) -> None:
    """A nested command joins its parent's unit of work but has its own
    message id: its events' ids are derived from that, never the parent's."""
    recorded: list[tuple[str, str]] = []  # (command's message id, event id)

    async def place(command: PlaceOrder) -> CommandResponse[str]:
        order = Order.place(command.order_id, command.amount)
        recorded.append((command.message_id, order.pending_events[0].event_id))
        await mediator.send(PayOrder(order_id=command.order_id))
        return CommandResponse.from_aggregates(order.id, order)

    async def pay(command: PayOrder) -> CommandResponse[None]:
        order = Order(id=command.order_id, version=1)
        order.pay()
        recorded.append((command.message_id, order.pending_events[0].event_id))
        return CommandResponse.from_aggregates(None, order)

    registry.register_command_handler(PlaceOrder, place)
    registry.register_command_handler(PayOrder, pay)
    mediator = command_mediator(registry, uow_factory)

    await mediator.send(PlaceOrder(order_id="o-1", amount=1))

    assert len(uow_factory.created) == 1
    assert [event_id for _, event_id in recorded] == [
        derived_id(message_id, "Order", "o-1", 1) for message_id, _ in recorded
    ]
    assert len({event_id for _, event_id in recorded}) == 2


async def test_events_recorded_outside_a_command_are_stamped_by_the_command_returning_them(
    registry: HandlerRegistry,
) -> None:
    order = Order(id="o-1")
    early = order.record_event(OrderPlaced(amount=1))  # no dispatch running
    order.record_event(OrderPaid(correlation_id="own-flow", causation_id="own-cause"))

    async def query_handler(query: GetOrder) -> Order:
        order.record_event(OrderPaid())  # a query's dispatch does not stamp
        return order

    async def handler(command: PlaceOrder) -> CommandResponse[str]:
        await mediator.query(GetOrder(order_id="o-1"))
        return CommandResponse.from_aggregates(order.id, order)

    registry.register_command_handler(PlaceOrder, handler)
    registry.register_query_handler(GetOrder, query_handler)
    mediator = Mediator(registry, middlewares=[], query_middlewares=[])
    command = PlaceOrder(order_id="o-1", amount=1, correlation_id="flow-1")

    assert (early.correlation_id, early.causation_id) == (None, None)
    response = await mediator.send(command)

    first, second, third = response.events
    assert (first.event_id, first.correlation_id, first.causation_id) == (
        early.event_id,
        "flow-1",
        command.message_id,
    )
    assert (second.correlation_id, second.causation_id) == ("own-flow", "own-cause")
    assert (third.correlation_id, third.causation_id) == ("flow-1", command.message_id)


async def test_a_plain_handler_result_is_wrapped_in_a_command_response(
    registry: HandlerRegistry,
) -> None:
    async def handler(command: PlaceOrder) -> str:
        return f"placed {command.order_id}"

    registry.register_command_handler(PlaceOrder, handler)
    command = PlaceOrder(order_id="o-9", amount=1, correlation_id="flow-1")

    response = await Mediator(registry, middlewares=[]).send(command)

    assert response == CommandResponse("placed o-9", (), "flow-1", command.message_id)


async def test_metadata_given_to_send_reaches_every_middleware_and_nested_commands(
    registry: HandlerRegistry,
) -> None:
    seen: list[dict[str, Any]] = []

    async def outer(command: PlaceOrder) -> str:
        await mediator.send(PayOrder(order_id=command.order_id), metadata={"step": "pay"})
        return "ok"

    async def inner(command: PayOrder) -> None:
        context = current_context()
        assert context is not None
        seen.append(context.metadata)

    registry.register_command_handler(PlaceOrder, outer)
    registry.register_command_handler(PayOrder, inner)
    mediator = Mediator(registry, middlewares=[])

    await mediator.send(PlaceOrder(order_id="o-1", amount=1), metadata={"actor": "alice"})

    assert seen == [{"actor": "alice", "step": "pay"}]


# -- missing handler ------------------------------------------------------------


async def test_a_command_without_a_handler_raises_handler_not_found_naming_its_type(
    registry: HandlerRegistry, uow_factory: UowFactory
) -> None:
    mediator = command_mediator(registry, uow_factory)

    with pytest.raises(HandlerNotFoundError) as raised:
        await mediator.send(PlaceOrder(order_id="o-1", amount=1))

    assert raised.value.message_type is PlaceOrder
    assert str(raised.value) == "No command handler is registered for PlaceOrder"
    assert not uow_factory.created[0].is_open  # the transaction it opened was rolled back


async def test_a_query_without_a_handler_raises_handler_not_found_naming_its_type(
    registry: HandlerRegistry,
) -> None:
    with pytest.raises(HandlerNotFoundError, match="No query handler is registered for GetOrder"):
        await Mediator(registry).query(GetOrder(order_id="o-1"))


# -- nested commands --------------------------------------------------------------


async def test_a_nested_command_joins_the_outer_unit_of_work_and_inherits_its_ids(
    registry: HandlerRegistry, uow_factory: UowFactory, stores: Stores
) -> None:
    seen: dict[str, DispatchContext] = {}
    uows: dict[str, UnitOfWork | None] = {}

    class PlaceAndPay:
        async def handle(self, command: PlaceOrder) -> CommandResponse[str]:
            context = current_context()
            assert context is not None
            seen["outer"] = context
            uows["outer"] = current_uow()
            response = await PlaceOrderHandler(stores).handle(command)
            await mediator.send(PayOrder(order_id=command.order_id))
            return response

    async def pay(command: PayOrder) -> CommandResponse[None]:
        context = current_context()
        assert context is not None
        seen["inner"] = context
        uows["inner"] = current_uow()
        order = Order(id=command.order_id, version=1)  # as the outer handler left it
        order.pay()
        await stores.events.append("Order", order.id, order.pending_events, expected_version=1)
        return CommandResponse.from_aggregates(None, order)

    registry.register_command_handler(PlaceOrder, PlaceAndPay())
    registry.register_command_handler(PayOrder, pay)
    mediator = command_mediator(registry, uow_factory)
    command = PlaceOrder(order_id="o-1", amount=10)

    response = await mediator.send(command)

    outer, inner = seen["outer"], seen["inner"]
    assert len(uow_factory.created) == 1
    assert uows["inner"] is uows["outer"] is uow_factory.created[0]
    assert inner.is_nested
    assert inner.parent is outer
    assert inner.correlation_id == outer.correlation_id == response.correlation_id
    assert inner.causation_id == command.message_id
    # Both commands' events were committed together, the parent's first.
    stream = await stores.events.load_stream("Order", "o-1")
    assert [(e.version, e.event_type) for e in stream] == [(1, "OrderPlaced"), (2, "OrderPaid")]


async def test_when_the_outer_command_fails_after_a_nested_one_nothing_of_either_is_kept(
    registry: HandlerRegistry, uow_factory: UowFactory, stores: Stores
) -> None:
    async def outer(command: PlaceOrder) -> str:
        await mediator.send(PayOrder(order_id=command.order_id))
        raise RuntimeError("outer fails after the nested command succeeded")

    async def nested(command: PayOrder) -> None:
        order = Order.place(command.order_id, 5)
        await stores.events.append("Order", order.id, order.pending_events, expected_version=0)
        stores.orders.save(order)

    registry.register_command_handler(PlaceOrder, outer)
    registry.register_command_handler(PayOrder, nested)
    mediator = command_mediator(registry, uow_factory)

    with pytest.raises(RuntimeError, match="outer fails"):
        await mediator.send(PlaceOrder(order_id="o-1", amount=10))

    assert len(uow_factory.created) == 1
    assert await stores.are_empty()


# -- in-process event handlers -----------------------------------------------------


async def test_event_handlers_run_after_the_command_has_committed(
    registry: HandlerRegistry, uow_factory: UowFactory, stores: Stores
) -> None:
    trace: list[str] = []
    seen_by_event_handler: list[tuple[bool, int]] = []

    class Handler(PlaceOrderHandler):
        async def handle(self, command: PlaceOrder) -> CommandResponse[str]:
            uow = current_uow()
            assert uow is not None

            async def committed() -> None:
                trace.append("committed")

            uow.after_commit(committed)
            trace.append("handler")
            return await super().handle(command)

    async def on_placed(event: OrderPlaced) -> None:
        trace.append("event handler")
        seen_by_event_handler.append(
            (uow_factory.created[0].is_open, await stores.events.latest_position())
        )

    registry.register_command_handler(PlaceOrder, Handler(stores))
    registry.register_event_handler(OrderPlaced, on_placed)

    await command_mediator(registry, uow_factory).send(PlaceOrder(order_id="o-1", amount=3))

    assert trace == ["handler", "committed", "event handler"]
    assert seen_by_event_handler == [(False, 1)]  # closed transaction, event already stored


async def test_event_handlers_do_not_run_when_the_transaction_rolls_back(
    registry: HandlerRegistry, uow_factory: UowFactory, stores: Stores
) -> None:
    called: list[str] = []

    async def on_placed(event: OrderPlaced) -> None:
        called.append(event.event_id)

    async def fail_after_handler(message: Any, context: DispatchContext, nxt: CallNext) -> Any:
        await nxt(message, context)
        raise RuntimeError("a step after the handler fails")

    registry.register_command_handler(PlaceOrder, PlaceOrderHandler(stores))
    registry.register_event_handler(OrderPlaced, on_placed)
    mediator = command_mediator(registry, uow_factory, fail_after_handler)

    with pytest.raises(RuntimeError):
        await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    assert called == []
    assert await stores.are_empty()


async def test_event_handlers_do_not_run_when_the_commit_fails(
    registry: HandlerRegistry, uow_factory: UowFactory, stores: Stores
) -> None:
    called: list[str] = []

    async def on_placed(event: OrderPlaced) -> None:
        called.append(event.event_id)

    registry.register_command_handler(PlaceOrder, PlaceOrderHandler(stores))
    registry.register_event_handler(OrderPlaced, on_placed)
    mediator = command_mediator(registry, uow_factory)
    await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    # Placing the same order again conflicts on the stream's version at commit.
    with pytest.raises(ConcurrencyError):
        await mediator.send(PlaceOrder(order_id="o-1", amount=4))

    assert len(called) == 1
    assert await stores.events.latest_position() == 1


async def test_a_failing_event_handler_is_logged_and_does_not_fail_the_command(
    registry: HandlerRegistry, uow_factory: UowFactory, stores: Stores
) -> None:
    called: list[str] = []

    async def broken(event: OrderPlaced) -> None:
        raise ValueError("mail server down")

    async def working(event: OrderPlaced) -> None:
        called.append("working")

    registry.register_command_handler(PlaceOrder, PlaceOrderHandler(stores))
    registry.register_event_handler(OrderPlaced, broken)
    registry.register_event_handler(OrderPlaced, working)

    with capture_logs() as logs:
        response = await command_mediator(registry, uow_factory).send(
            PlaceOrder(order_id="o-1", amount=3)
        )

    assert response.result == "o-1"
    assert called == ["working"]
    [entry] = [e for e in logs if e["event"] == "event_handler_failed"]
    assert entry["log_level"] == "error"
    assert entry["error_type"] == "ValueError"
    assert entry["event_type"] == "OrderPlaced"
    assert entry["event_id"] == response.events[0].event_id
    assert await stores.events.latest_position() == 1  # the command's work is kept


async def test_events_of_nested_commands_reach_event_handlers_after_their_parents(
    registry: HandlerRegistry, uow_factory: UowFactory, stores: Stores
) -> None:
    published: list[str] = []

    async def place_then_pay(command: PlaceOrder) -> CommandResponse[str]:
        order = Order.place(command.order_id, command.amount)
        # The nested command finishes first, yet its events are published after ours.
        await mediator.send(PayOrder(order_id=command.order_id))
        return CommandResponse.from_aggregates(order.id, order)

    async def pay(command: PayOrder) -> CommandResponse[None]:
        order = Order(id=command.order_id, version=1)
        order.pay()
        return CommandResponse.from_aggregates(None, order)

    async def record(event: OrderPlaced | OrderPaid) -> None:
        published.append(event.type_name())

    registry.register_command_handler(PlaceOrder, place_then_pay)
    registry.register_command_handler(PayOrder, pay)
    registry.register_event_handler(OrderPlaced, record)
    registry.register_event_handler(OrderPaid, record)
    mediator = command_mediator(registry, uow_factory)

    await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    assert published == ["OrderPlaced", "OrderPaid"]


async def test_a_command_sent_by_an_event_handler_gets_the_events_correlation_and_cause(
    registry: HandlerRegistry, uow_factory: UowFactory, stores: Stores
) -> None:
    seen: list[DispatchContext] = []

    async def on_placed(event: OrderPlaced) -> None:
        assert event.aggregate_id is not None
        await mediator.send(PayOrder(order_id=event.aggregate_id))

    async def pay(command: PayOrder) -> None:
        context = current_context()
        assert context is not None
        seen.append(context)

    registry.register_command_handler(PlaceOrder, PlaceOrderHandler(stores))
    registry.register_command_handler(PayOrder, pay)
    registry.register_event_handler(OrderPlaced, on_placed)
    mediator = command_mediator(registry, uow_factory)

    response = await mediator.send(PlaceOrder(order_id="o-1", amount=3))

    [context] = seen
    assert not context.is_nested  # the first transaction is over: it runs in its own
    assert len(uow_factory.created) == 2
    assert context.correlation_id == response.correlation_id
    assert context.causation_id == response.events[0].event_id


async def test_an_event_handler_runs_under_the_events_correlation_id_not_the_commands(
    registry: HandlerRegistry, uow_factory: UowFactory, stores: Stores
) -> None:
    seen: list[DispatchContext] = []

    async def place(command: PlaceOrder) -> CommandResponse[str]:
        order = Order(id=command.order_id)
        order.record_event(OrderPlaced(amount=command.amount, correlation_id="event-flow"))
        return CommandResponse.from_aggregates(order.id, order)

    async def on_placed(event: OrderPlaced) -> None:
        await mediator.send(PayOrder(order_id="o-1"))

    async def pay(command: PayOrder) -> None:
        context = current_context()
        assert context is not None
        seen.append(context)

    registry.register_command_handler(PlaceOrder, place)
    registry.register_command_handler(PayOrder, pay)
    registry.register_event_handler(OrderPlaced, on_placed)
    mediator = command_mediator(registry, uow_factory)

    response = await mediator.send(PlaceOrder(order_id="o-1", amount=3, correlation_id="cmd"))

    assert response.correlation_id == "cmd"
    [context] = seen
    assert context.correlation_id == "event-flow"
    assert context.causation_id == response.events[0].event_id


# -- queries ------------------------------------------------------------------------


async def test_queries_go_through_their_own_pipeline(
    registry: HandlerRegistry, uow_factory: UowFactory, stores: Stores
) -> None:
    trace: list[str] = []

    async def command_step(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        trace.append(f"command step saw {context.kind}")
        return await call_next(message, context)

    async def query_step(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        trace.append(f"query step saw {context.kind}")
        return await call_next(message, context)

    registry.register_command_handler(PlaceOrder, PlaceOrderHandler(stores))
    registry.register_query_handler(GetOrder, GetOrderHandler(stores))
    mediator = Mediator(
        registry,
        uow_factory,
        middlewares=[command_step, UnitOfWorkMiddleware(uow_factory)],
        query_middlewares=[query_step],
    )

    await mediator.send(PlaceOrder(order_id="o-1", amount=7))
    found = await mediator.query(GetOrder(order_id="o-1"))

    assert isinstance(found, Order)
    assert found.amount == 7
    assert trace == ["command step saw command", "query step saw query"]
    assert mediator.query_pipeline.describe() == "query_step -> handler"


async def test_the_default_query_pipeline_opens_no_unit_of_work(
    registry: HandlerRegistry, uow_factory: UowFactory
) -> None:
    uows: list[UnitOfWork | None] = []

    class Ping(Query[str]):
        pass

    async def ping(query: Ping) -> str:
        uows.append(current_uow())
        return "pong"

    registry.register_query_handler(Ping, ping)
    mediator = Mediator(registry, uow_factory)

    assert await mediator.query(Ping()) == "pong"
    assert uows == [None]
    assert uow_factory.created == []
    assert "unit_of_work" not in mediator.query_pipeline.order
    assert "validation" in mediator.query_pipeline.order


def test_the_default_command_pipeline_validates_outside_the_unit_of_work(
    registry: HandlerRegistry, uow_factory: UowFactory
) -> None:
    order = Mediator(registry, uow_factory).pipeline.order

    assert order.index("validation") < order.index("unit_of_work") < order.index("handler")
    assert "unit_of_work" not in Mediator(registry).pipeline.order  # no factory, no UoW


async def test_handlers_registered_after_the_mediator_was_built_are_found(
    registry: HandlerRegistry,
) -> None:
    class Late(Command[int]):
        pass

    mediator = Mediator(registry, middlewares=[])

    async def late(command: Late) -> int:
        return 42

    registry.register_command_handler(Late, late)

    assert (await mediator.send(Late())).result == 42


def test_the_mediators_plain_response_equals_the_constructors() -> None:
    from cqrs_ddd_core.cqrs.response import _response

    fast = _response(42, "flow", "cause")
    assert type(fast) is CommandResponse
    assert fast == CommandResponse(42, (), "flow", "cause")


class _Step(Command[None]):
    name: str
    then: tuple[tuple[str, tuple[str, ...]], ...] = ()  # nested steps: (name, their nested names)
    quiet: bool = False  # raises no event


class _Stepped(DomainEvent):
    name: str


async def test_event_handlers_see_parents_first_depth_first_and_no_slot_for_silent_commands() -> (
    None
):
    registry = HandlerRegistry()
    mediator = Mediator(registry, middlewares=[])
    published: list[str] = []

    async def step(command: _Step) -> CommandResponse[None]:
        for name, grandchildren in command.then:
            await mediator.send(
                _Step(name=name, then=tuple((g, ()) for g in grandchildren), quiet=name == "quiet")
            )
        events = () if command.quiet else (_Stepped(name=command.name),)
        return CommandResponse(None, events)

    async def record(event: _Stepped) -> None:
        published.append(event.name)

    registry.register_command_handler(_Step, step)
    registry.register_event_handler(_Stepped, record)

    await mediator.send(
        _Step(name="root", then=(("a", ("a1", "a2")), ("quiet", ("q1",)), ("b", ())))
    )

    # Each command's events before those of the commands it sent, siblings in
    # the order sent; a command raising none takes no place.
    assert published == ["root", "a", "a1", "a2", "q1", "b"]


async def test_without_a_unit_of_work_each_aggregate_counts_its_derived_ids_per_command(
    registry: HandlerRegistry,
) -> None:
    """No unit of work to count in: the aggregate counts the events it recorded
    under the running command (1, 2, ...), and from 1 again under the next."""
    order = Order(id="o-1")

    async def handler(command: PlaceOrder) -> CommandResponse[str]:
        order.record_event(OrderPlaced(amount=command.amount))
        order.pay()
        return CommandResponse.from_aggregates(order.id, order)

    registry.register_command_handler(PlaceOrder, handler)
    mediator = Mediator(registry, middlewares=[])
    first, second = PlaceOrder(order_id="o-1", amount=1), PlaceOrder(order_id="o-1", amount=2)

    one = await mediator.send(first)
    two = await mediator.send(second)

    assert [e.event_id for e in one.events] == [
        derived_id(first.message_id, "Order", "o-1", 1),
        derived_id(first.message_id, "Order", "o-1", 2),
    ]
    assert [e.event_id for e in two.events] == [
        derived_id(second.message_id, "Order", "o-1", 1),
        derived_id(second.message_id, "Order", "o-1", 2),
    ]
