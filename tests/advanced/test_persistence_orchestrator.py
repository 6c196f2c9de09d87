"""The orchestrator: registration, strict and lenient modes, event checks, the seed's methods."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from cqrs_ddd_advanced_core import (
    EventSourcedAggregateRequiredError,
    EventSourcedMediator,
    EventSourcedPersistenceOrchestrator,
    EventSourcingConfigurationError,
    StrictValidationViolationError,
    UnroutableEventError,
)
from cqrs_ddd_core._ids import derived_id
from cqrs_ddd_core.adapters.memory import InMemoryEventStore, InMemoryUnitOfWork
from cqrs_ddd_core.cqrs import CommandResponse, HandlerRegistry
from cqrs_ddd_core.exceptions import UnitOfWorkError
from tests.advanced.domain import (
    ItemAdded,
    Order,
    OrderPlaced,
    PlaceOrder,
    TouchUnregistered,
    UserPreferences,
    World,
)


def mediator_for(
    world: World, orchestrator: EventSourcedPersistenceOrchestrator
) -> EventSourcedMediator:
    return EventSourcedMediator(
        registry=world.registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
    )


def placed(order_id: str = "o-1", version: int = 1) -> OrderPlaced:
    return OrderPlaced(
        customer_id="c",
        total=1,
        aggregate_type="Order",
        aggregate_id=order_id,
        aggregate_version=version,
    )


async def test_strict_mode_refuses_an_unregistered_type_and_persists_nothing(world: World) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type("Order")
    mediator = mediator_for(world, orchestrator)

    with pytest.raises(EventSourcedAggregateRequiredError) as info:
        await mediator.send(TouchUnregistered(aggregate_id="u-1"))

    assert info.value.aggregate_type == "Unregistered"
    assert info.value.aggregate_id == "u-1"
    assert info.value.event_type == "ItemAdded"
    assert isinstance(info.value, StrictValidationViolationError)
    assert await world.events.latest_position() == 0
    assert world.uows[-1].is_open is False


async def test_strict_mode_fails_the_whole_command_even_when_another_stream_was_fine() -> None:
    store = InMemoryEventStore()
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=store)
    orchestrator.register_event_sourced_type(Order)
    stranger = ItemAdded(
        sku="x", quantity=1, aggregate_type="Stranger", aggregate_id="s", aggregate_version=1
    )
    uow = InMemoryUnitOfWork()

    with pytest.raises(EventSourcedAggregateRequiredError):
        await orchestrator.persist([placed(), stranger], uow=uow)

    assert not uow.has_staged  # checked before anything was staged


async def test_lenient_mode_persists_unregistered_types_to_the_default_store_and_warns_once(
    world: World,
) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(
        default_event_store=world.events, strict=False
    )
    mediator = mediator_for(world, orchestrator)

    with capture_logs() as logs:
        await mediator.send(TouchUnregistered(aggregate_id="u-1"))
        await mediator.send(TouchUnregistered(aggregate_id="u-2"))

    assert [e.aggregate_id for e in await world.events.read_all()] == ["u-1", "u-2"]
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["event"] == "unregistered_aggregate_type_persisted"
    assert warnings[0]["aggregate_type"] == "Unregistered"
    assert not orchestrator.is_event_sourced("Unregistered")


async def test_an_event_without_aggregate_type_is_refused_in_both_modes() -> None:
    for strict in (True, False):
        orchestrator = EventSourcedPersistenceOrchestrator(
            default_event_store=InMemoryEventStore(), strict=strict
        )
        orphan = OrderPlaced(customer_id="c", total=1)

        with pytest.raises(UnroutableEventError) as info:
            await orchestrator.persist([orphan], uow=InMemoryUnitOfWork())

        assert info.value.event_type == "OrderPlaced"
        assert info.value.aggregate_type is None


async def test_an_event_without_aggregate_id_is_refused() -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=InMemoryEventStore())
    orchestrator.register_event_sourced_type("Order")
    event = OrderPlaced(customer_id="c", total=1, aggregate_type="Order", aggregate_version=1)

    with pytest.raises(UnroutableEventError) as info:
        await orchestrator.persist([event], uow=InMemoryUnitOfWork())

    assert info.value.aggregate_type == "Order"


async def test_gaps_and_missing_versions_in_a_stream_are_refused() -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=InMemoryEventStore())
    orchestrator.register_event_sourced_type("Order")

    with pytest.raises(StrictValidationViolationError, match="not contiguous") as gap:
        await orchestrator.persist([placed(version=1), placed(version=3)], uow=InMemoryUnitOfWork())
    unversioned = OrderPlaced(customer_id="c", total=1, aggregate_type="Order", aggregate_id="o")
    with pytest.raises(StrictValidationViolationError, match="aggregate_version"):
        await orchestrator.persist([unversioned], uow=InMemoryUnitOfWork())

    assert gap.value.aggregate_id == "o-1"


def test_plan_keeps_the_raised_order_and_continues_versions_across_interleaved_streams() -> None:
    store = InMemoryEventStore()
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=store)
    orchestrator.register_event_sourced_type("Order")
    events = [placed("a", 4), placed("a", 5), placed("b", 1), placed("a", 6)]

    plans = orchestrator.plan(events)

    assert [(p[1], p[2], p[3], len(p[4])) for p in plans] == [
        ("Order", "a", 3, 2),
        ("Order", "b", 0, 1),
        ("Order", "a", 5, 1),
    ]


async def test_each_type_can_have_its_own_event_store(world: World) -> None:
    audit_store = InMemoryEventStore()
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type(Order, event_store=audit_store)
    mediator = mediator_for(world, orchestrator)

    await mediator.send(PlaceOrder(order_id="o-1"))

    assert await world.events.latest_position() == 0
    assert [e.event_type for e in await audit_store.read_all()] == ["OrderPlaced"]


def test_registering_a_type_both_ways_is_refused() -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=InMemoryEventStore())
    orchestrator.register_event_sourced_type("Order")
    orchestrator.register_event_sourced_type("Order")  # idempotent
    orchestrator.register_non_event_sourced_type("Prefs")

    with pytest.raises(EventSourcingConfigurationError):
        orchestrator.register_non_event_sourced_type("Order")
    with pytest.raises(EventSourcingConfigurationError):
        orchestrator.register_event_sourced_type("Prefs")
    assert orchestrator.event_sourced_types == frozenset({"Order"})
    assert orchestrator.non_event_sourced_types == frozenset({"Prefs"})


def test_a_default_store_that_is_not_an_event_store_is_refused() -> None:
    with pytest.raises(EventSourcingConfigurationError, match="default_event_store"):
        EventSourcedPersistenceOrchestrator(default_event_store=object())  # type: ignore[arg-type]


async def test_persist_events_uses_the_running_dispatchs_unit_of_work(world: World) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type("Order")
    # Recorded outside any dispatch: the events carry no correlation or causation
    # id yet, so only persist_events can give them the running command's.
    order = Order.place("o-9", "c", 3)
    [event] = order.collect_events()
    assert (event.correlation_id, event.causation_id) == (None, None)

    async def handler(command: PlaceOrder) -> str:
        # Not returned in the response: persisted by hand, in the same transaction.
        await orchestrator.persist_event(event, CommandResponse(order.id))
        return order.id

    registry = HandlerRegistry()
    registry.register_command_handler(PlaceOrder, handler)
    mediator = EventSourcedMediator(
        registry=registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
    )
    command = PlaceOrder(order_id="o-9", correlation_id="flow-9")

    response = await mediator.send(command)

    assert response.events == ()
    [stored] = await world.events.load_stream("Order", "o-9")
    # Not given an id explicitly: it gets the one derived from the command's
    # message id, so a retried command stages the same id (idempotent commits).
    assert stored.event_id == derived_id(command.message_id, "Order", "o-9", 1)
    assert stored.event_id != event.event_id
    assert (stored.correlation_id, stored.causation_id) == ("flow-9", command.message_id)


async def test_persist_events_numbers_its_ids_after_those_recorded_on_the_stream(
    world: World,
) -> None:
    """persist_events and record_event count ordinals together, per unit of
    work: an event built by hand for a stream the command recorded on, and a
    second persist_events call, do not reuse an id already handed out."""
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type("Order")

    async def handler(command: PlaceOrder) -> str:
        order = Order.place(command.order_id, "c", 3)  # recorded: ordinal 1
        await orchestrator.persist_events(order.collect_events())
        await orchestrator.persist_events(
            [
                ItemAdded(
                    sku="a",
                    quantity=1,
                    aggregate_type="Order",
                    aggregate_id=order.id,
                    aggregate_version=2,
                )
            ]
        )
        await orchestrator.persist_events(
            [
                ItemAdded(
                    sku="b",
                    quantity=1,
                    aggregate_type="Order",
                    aggregate_id=order.id,
                    aggregate_version=3,
                )
            ]
        )
        return order.id

    registry = HandlerRegistry()
    registry.register_command_handler(PlaceOrder, handler)
    mediator = EventSourcedMediator(
        registry=registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
    )
    command = PlaceOrder(order_id="o-7")

    await mediator.send(command)

    stored = await world.events.load_stream("Order", "o-7")
    assert [e.event_id for e in stored] == [
        derived_id(command.message_id, "Order", "o-7", ordinal) for ordinal in (1, 2, 3)
    ]


async def test_persist_events_prefers_the_ids_of_the_response_it_is_given(world: World) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type("Order")
    order = Order.place("o-8", "c", 3)
    [event] = order.collect_events()

    async def handler(command: PlaceOrder) -> str:
        given = CommandResponse(order.id, correlation_id="given-flow", causation_id="given-cause")
        await orchestrator.persist_events([event], given)
        return order.id

    registry = HandlerRegistry()
    registry.register_command_handler(PlaceOrder, handler)
    mediator = EventSourcedMediator(
        registry=registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
    )

    await mediator.send(PlaceOrder(order_id="o-8"))

    [stored] = await world.events.load_stream("Order", "o-8")
    assert (stored.correlation_id, stored.causation_id) == ("given-flow", "given-cause")


async def test_persist_events_outside_a_dispatch_raises_unit_of_work_error() -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=InMemoryEventStore())
    orchestrator.register_event_sourced_type("Order")

    with pytest.raises(UnitOfWorkError, match="running dispatch"):
        await orchestrator.persist_events([placed()], CommandResponse(None))


async def test_a_decorated_class_is_non_event_sourced_without_being_registered(
    world: World,
) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    prefs = UserPreferences(id="u")
    prefs.change("dark")

    staged = await orchestrator.persist(prefs.collect_events(), uow=InMemoryUnitOfWork())

    assert staged == 0
    assert "UserPreferences" in orchestrator.non_event_sourced_types
    assert not orchestrator.is_event_sourced(UserPreferences)
    with pytest.raises(EventSourcingConfigurationError, match="non-event-sourced"):
        orchestrator.register_event_sourced_type(UserPreferences)
    with pytest.raises(EventSourcingConfigurationError, match="non-event-sourced"):
        orchestrator.register_event_sourced_type("UserPreferences")


def test_repr_shows_mode_and_registrations() -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(
        default_event_store=InMemoryEventStore(), strict=False
    )
    orchestrator.register_event_sourced_type("Order")

    assert repr(orchestrator).startswith("EventSourcedPersistenceOrchestrator(lenient, ")
    assert "['Order']" in repr(orchestrator)


# -- found by mutation testing (docs/mutation.md) ------------------------------------


async def test_events_after_a_non_event_sourced_one_are_still_planned_and_counted() -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=InMemoryEventStore())
    orchestrator.register_event_sourced_type("Order")
    orchestrator.register_non_event_sourced_type(UserPreferences)
    skipped = OrderPlaced(
        customer_id="c", total=1, aggregate_type="UserPreferences", aggregate_id="u",
        aggregate_version=1,
    )  # fmt: skip
    events = [placed(version=1), skipped, placed(version=2), placed(version=3)]

    count = await orchestrator.persist(events, uow=InMemoryUnitOfWork())

    assert count == 3  # the skipped one is not counted; those after it are kept
    [(_, _, _, expected, run)] = orchestrator.plan(events)
    assert (expected, [e.aggregate_version for e in run]) == (0, [1, 2, 3])


async def test_persist_counts_the_events_of_every_append() -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=InMemoryEventStore())
    orchestrator.register_event_sourced_type("Order")
    other = OrderPlaced(
        customer_id="c", total=1, aggregate_type="Order", aggregate_id="o-2", aggregate_version=1
    )

    count = await orchestrator.persist(
        [placed(version=1), placed(version=2), other], uow=InMemoryUnitOfWork()
    )

    assert count == 3


async def test_the_persistence_rule_errors_carry_the_offending_event_and_stream() -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=InMemoryEventStore())
    orchestrator.register_event_sourced_type("Order")
    no_id = OrderPlaced(customer_id="c", total=1, aggregate_type="Order", aggregate_version=1)
    no_type = OrderPlaced(customer_id="c", total=1, aggregate_id="o-9", aggregate_version=1)
    unversioned = OrderPlaced(customer_id="c", total=1, aggregate_type="Order", aggregate_id="o")

    with pytest.raises(UnroutableEventError, match="record_event so it names its stream") as a:
        await orchestrator.persist([no_id], uow=InMemoryUnitOfWork())
    with pytest.raises(StrictValidationViolationError) as b:
        await orchestrator.persist([unversioned], uow=InMemoryUnitOfWork())
    with pytest.raises(StrictValidationViolationError) as c:
        await orchestrator.persist([placed(version=1), placed(version=3)], uow=InMemoryUnitOfWork())

    assert (a.value.event_type, a.value.aggregate_type, a.value.aggregate_id) == (
        "OrderPlaced", "Order", None,
    )  # fmt: skip
    with pytest.raises(UnroutableEventError) as d:
        await orchestrator.persist([no_type], uow=InMemoryUnitOfWork())
    assert (d.value.aggregate_type, d.value.aggregate_id) == (None, "o-9")
    assert (b.value.event_type, b.value.aggregate_type, b.value.aggregate_id) == (
        "OrderPlaced", "Order", "o",
    )  # fmt: skip
    assert (c.value.event_type, c.value.aggregate_type) == ("OrderPlaced", "Order")


def test_registration_conflicts_name_the_type() -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=InMemoryEventStore())
    orchestrator.register_event_sourced_type("Order")
    orchestrator.register_non_event_sourced_type("Prefs")

    with pytest.raises(EventSourcingConfigurationError, match="cannot also be non-event") as a:
        orchestrator.register_non_event_sourced_type("Order")
    with pytest.raises(EventSourcingConfigurationError, match="cannot also be registered") as b:
        orchestrator.register_event_sourced_type("Prefs")
    with pytest.raises(EventSourcingConfigurationError, match="non-event-sourced"):
        orchestrator.register_event_sourced_type(UserPreferences)  # decorated

    assert (a.value.aggregate_type, b.value.aggregate_type) == ("Order", "Prefs")


async def test_the_lenient_warning_says_which_event_and_how_to_register() -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(
        default_event_store=InMemoryEventStore(), strict=False
    )
    event = OrderPlaced(
        customer_id="c", total=1, aggregate_type="Stray", aggregate_id="s", aggregate_version=1
    )

    with capture_logs() as logs:
        await orchestrator.persist([event], uow=InMemoryUnitOfWork())

    [warning] = logs
    assert warning["event_type"] == "OrderPlaced"
    assert warning["hint"] == (
        "register it with register_event_sourced_type or register_non_event_sourced_type"
    )


async def test_persist_event_passes_the_response_ids_on(world: World) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type("Order")
    order = Order.place("o-7", "c", 3)
    [event] = order.collect_events()

    async def handler(command: PlaceOrder) -> str:
        given = CommandResponse(order.id, correlation_id="given-flow", causation_id="given-cause")
        await orchestrator.persist_event(event, given)
        return order.id

    registry = HandlerRegistry()
    registry.register_command_handler(PlaceOrder, handler)
    mediator = EventSourcedMediator(
        registry=registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
    )

    await mediator.send(PlaceOrder(order_id="o-7"))

    [stored] = await world.events.load_stream("Order", "o-7")
    assert (stored.correlation_id, stored.causation_id) == ("given-flow", "given-cause")


def test_repr_names_strict_mode() -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=InMemoryEventStore())

    assert repr(orchestrator).startswith("EventSourcedPersistenceOrchestrator(strict, ")


async def test_events_recorded_in_the_dispatch_and_persisted_by_hand_are_appended_once(
    world: World,
) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type("Order")

    async def handler(command: PlaceOrder) -> str:
        order = Order.place(command.order_id, "c", 3)  # recorded in this dispatch
        await orchestrator.persist_events(order.collect_events())
        return order.id  # plain value: the mediator must not add them again

    registry = HandlerRegistry()
    registry.register_command_handler(PlaceOrder, handler)
    mediator = EventSourcedMediator(
        registry=registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
    )

    response = await mediator.send(PlaceOrder(order_id="o-6"))

    assert response.events == ()
    assert len(await world.events.load_stream("Order", "o-6")) == 1


@pytest.mark.parametrize(
    ("event_ids", "response_ids", "expected"),
    [
        # (event's correlation, causation), (response's ...), what is stored
        ((None, None), None, ("flow", "CMD")),
        (("own-flow", None), None, ("own-flow", "CMD")),
        ((None, "own-cause"), None, ("flow", "own-cause")),
        ((None, None), ("given", None), ("given", "CMD")),
        ((None, None), (None, "given-cause"), ("flow", "given-cause")),
    ],
    ids=["none", "own-correlation", "own-causation", "response-correlation", "response-cause"],
)
async def test_persist_events_fills_each_missing_id_on_its_own(
    world: World,
    event_ids: tuple[str | None, str | None],
    response_ids: tuple[str | None, str | None] | None,
    expected: tuple[str, str],
) -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=world.events)
    orchestrator.register_event_sourced_type("Order")
    order = Order.place("o-5", "c", 3)  # outside any dispatch: no ids yet
    [event] = order.collect_events()
    event = event.model_copy(update={"correlation_id": event_ids[0], "causation_id": event_ids[1]})
    command = PlaceOrder(order_id="o-5", correlation_id="flow")

    async def handler(command: PlaceOrder) -> str:
        if response_ids is None:
            await orchestrator.persist_events([event])
        else:
            given = CommandResponse(
                order.id, correlation_id=response_ids[0], causation_id=response_ids[1]
            )
            await orchestrator.persist_events([event], given)
        return order.id

    registry = HandlerRegistry()
    registry.register_command_handler(PlaceOrder, handler)
    mediator = EventSourcedMediator(
        registry=registry,
        uow_factory=world.uow_factory,
        event_persistence_orchestrator=orchestrator,
    )

    await mediator.send(command)

    [stored] = await world.events.load_stream("Order", "o-5")
    wanted = tuple(command.message_id if v == "CMD" else v for v in expected)
    assert (stored.correlation_id, stored.causation_id) == wanted


async def test_persist_events_outside_a_dispatch_says_where_to_call_it() -> None:
    orchestrator = EventSourcedPersistenceOrchestrator(default_event_store=InMemoryEventStore())

    with pytest.raises(UnitOfWorkError) as caught:
        await orchestrator.persist_events([placed()])

    assert str(caught.value) == (
        "persist_events needs the unit of work of a running dispatch: call it from a "
        "handler or middleware running inside UnitOfWorkMiddleware"
    )
