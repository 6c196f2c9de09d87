"""The outbox middleware: one message per event, with ids and the command's trace context."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cqrs_ddd_advanced_core import OutboxMiddleware
from cqrs_ddd_core.cqrs import Mediator
from cqrs_ddd_core.exceptions import PipelineConfigurationError, UnitOfWorkError
from cqrs_ddd_core.middleware import UnitOfWorkMiddleware
from cqrs_ddd_core.persistence import OutboxStatus
from cqrs_ddd_core.pipeline import placement
from tests.advanced.domain import ChangePreferences, PlaceOrder, World


def mediator(world: World, **options: Any) -> Mediator:
    world.mediator = Mediator(
        world.registry,
        world.uow_factory,
        middlewares=[
            UnitOfWorkMiddleware(world.uow_factory),
            OutboxMiddleware(outbox_store=world.outbox, **options),
        ],
    )
    return world.mediator


async def test_each_event_becomes_one_outbox_message_with_its_ids_and_payload(
    world: World,
) -> None:
    m = mediator(world)

    response = await m.send(PlaceOrder(order_id="o-1", customer_id="c-7", total=42))

    [event] = response.events
    message = await world.outbox.get(event.event_id)
    assert message is not None
    assert message.message_id == event.event_id
    assert message.message_type == "OrderPlaced"
    assert message.payload == {"customer_id": "c-7", "total": 42}
    assert message.schema_version == event.schema_version == 1  # the relay upcasts from it
    assert (message.aggregate_type, message.aggregate_id) == ("Order", "o-1")
    assert message.correlation_id == response.correlation_id
    assert message.causation_id == response.causation_id
    assert message.status is OutboxStatus.PENDING
    assert message.attempts == 0
    assert message.trace_context == {}  # no span was recording


async def test_the_message_carries_the_w3c_trace_context_of_the_commands_span(
    world: World,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    m = mediator(world)

    with tracer.start_as_current_span("send PlaceOrder"):
        response = await m.send(PlaceOrder(order_id="o-1"))

    [span] = exporter.get_finished_spans()
    context = span.get_span_context()
    assert context is not None
    message = await world.outbox.get(response.events[0].event_id)
    assert message is not None
    assert message.trace_context["traceparent"] == (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
    )
    provider.shutdown()


async def test_non_event_sourced_events_go_to_the_outbox_too(world: World) -> None:
    m = mediator(world)

    response = await m.send(ChangePreferences(user_id="u-1", theme="dark"))

    message = await world.outbox.get(response.events[0].event_id)
    assert message is not None
    assert message.message_type == "PreferencesChanged"


async def test_a_predicate_chooses_which_events_are_published(world: World) -> None:
    m = mediator(world, predicate=lambda event: event.aggregate_type == "Order")

    placed = await m.send(PlaceOrder(order_id="o-1"))
    changed = await m.send(ChangePreferences(user_id="u-1", theme="dark"))

    assert len(world.outbox) == 1
    assert await world.outbox.get(placed.events[0].event_id) is not None
    assert await world.outbox.get(changed.events[0].event_id) is None


def test_the_outbox_must_run_inside_the_unit_of_work(world: World) -> None:
    with pytest.raises(PipelineConfigurationError) as info:
        Mediator(
            world.registry,
            world.uow_factory,
            middlewares=[
                OutboxMiddleware(outbox_store=world.outbox),
                UnitOfWorkMiddleware(world.uow_factory),
            ],
        )

    assert info.value.offender == "outbox"


async def test_a_unit_of_work_step_that_opened_nothing_is_reported(world: World) -> None:
    @placement(name="fake_uow", provides=("unit_of_work",))
    async def fake_uow(message: Any, context: Any, call_next: Any) -> Any:
        return await call_next(message, context)

    m = Mediator(
        world.registry,
        world.uow_factory,
        middlewares=[fake_uow, OutboxMiddleware(outbox_store=world.outbox)],
    )

    with pytest.raises(UnitOfWorkError, match="outbox found no unit of work"):
        await m.send(PlaceOrder(order_id="o-1"))


def test_outbox_config_is_validated_and_shown(world: World) -> None:
    with pytest.raises(TypeError):
        OutboxMiddleware(outbox_store=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        OutboxMiddleware(outbox_store=world.outbox, predicate=3)  # type: ignore[arg-type]
    assert "OutboxMiddleware(outbox_store=" in repr(OutboxMiddleware(outbox_store=world.outbox))


async def test_an_event_whose_payload_has_no_json_form_raises_a_serialization_error_and_writes_nothing(  # noqa: E501
    world: World,
) -> None:
    from cqrs_ddd_core.cqrs import CommandResponse
    from cqrs_ddd_core.domain import Command, DomainEvent
    from cqrs_ddd_core.exceptions import SerializationError
    from tests.advanced.domain import Order

    class Opaque:
        """Has no JSON form."""

    class OddThingHappened(DomainEvent):
        model_config = {"arbitrary_types_allowed": True}
        thing: Opaque

    class DoOddThing(Command[None]):
        order_id: str

    async def do_odd_thing(command: DoOddThing) -> CommandResponse[None]:
        order = Order.blank(command.order_id)
        order.record_event(OddThingHappened(thing=Opaque()))
        return CommandResponse.from_aggregates(None, order)

    world.registry.register_command_handler(DoOddThing, do_odd_thing)
    m = mediator(world)
    await m.send(PlaceOrder(order_id="o-1"))

    with pytest.raises(SerializationError) as info:
        await m.send(DoOddThing(order_id="o-2"))

    assert info.value.type_name == "OddThingHappened"
    assert len(world.outbox) == 1  # only the first command's message
