"""The dispatch context and the ambient correlation id."""

from __future__ import annotations

import uuid

from cqrs_ddd_core.context import (
    DispatchContext,
    ambient_correlation_id,
    correlation_scope,
    current_context,
    current_uow,
)
from cqrs_ddd_core.cqrs import HandlerRegistry, Mediator
from tests.core.shop import PlaceOrder


def mediator_recording(seen: list[DispatchContext]) -> Mediator:
    registry = HandlerRegistry()

    async def handler(command: PlaceOrder) -> str:
        context = current_context()
        assert context is not None
        seen.append(context)
        return "ok"

    registry.register_command_handler(PlaceOrder, handler)
    return Mediator(registry, middlewares=[])


def order(**ids: str) -> PlaceOrder:
    return PlaceOrder(order_id="o-1", amount=1, **ids)


async def test_a_command_takes_the_ambient_correlation_id_of_its_scope() -> None:
    seen: list[DispatchContext] = []
    mediator = mediator_recording(seen)

    with correlation_scope("request-42", causation_id="http-7") as scoped:
        response = await mediator.send(order())

    assert scoped == "request-42"
    assert response.correlation_id == "request-42"
    assert seen[0].causation_id == "http-7"


async def test_a_correlation_id_set_on_the_command_wins_over_the_ambient_one() -> None:
    seen: list[DispatchContext] = []
    mediator = mediator_recording(seen)

    with correlation_scope("request-42"):
        response = await mediator.send(order(correlation_id="explicit"))

    assert response.correlation_id == "explicit"


async def test_without_a_scope_a_command_starts_a_flow_named_by_its_own_id() -> None:
    seen: list[DispatchContext] = []
    mediator = mediator_recording(seen)
    first, second = order(), order()

    first_response = await mediator.send(first)
    second_response = await mediator.send(second)

    assert first_response.correlation_id == first.message_id
    assert second_response.correlation_id == second.message_id
    assert first.message_id != second.message_id
    assert uuid.UUID(first.message_id).version == 4
    assert seen[0].causation_id is None


def test_scopes_nest_and_restore_the_previous_id_on_exit() -> None:
    assert ambient_correlation_id() is None
    with correlation_scope("outer"):
        with correlation_scope("inner"):
            assert ambient_correlation_id() == "inner"
        assert ambient_correlation_id() == "outer"
    assert ambient_correlation_id() is None


async def test_the_context_is_published_only_while_the_dispatch_runs() -> None:
    seen: list[DispatchContext] = []
    mediator = mediator_recording(seen)
    command = order()

    assert current_context() is None
    await mediator.send(command)

    assert current_context() is None
    assert current_uow() is None
    [context] = seen
    assert (context.kind, context.message_type, context.message_id) == (
        "command",
        "PlaceOrder",
        command.message_id,
    )
    assert context.message is command
    assert not context.is_nested
    assert "PlaceOrder" in repr(context)


def test_a_nested_context_inherits_from_its_parent_unless_the_message_says_otherwise() -> None:
    parent = DispatchContext(order(correlation_id="flow"), "command", metadata={"actor": "bob"})
    child = DispatchContext(order(), "command", parent=parent, metadata={"step": 2})
    own = DispatchContext(order(correlation_id="other-flow"), "command", parent=parent)

    assert child.correlation_id == "flow"
    assert child.causation_id == parent.message_id
    assert child.metadata == {"actor": "bob", "step": 2}
    assert child.published is parent.published
    assert own.correlation_id == "other-flow"


def _fields(context: DispatchContext) -> dict[str, object]:
    return {name: getattr(context, name) for name in DispatchContext.__slots__}


def test_the_mediators_root_context_is_the_constructors_slot_for_slot() -> None:
    from cqrs_ddd_core.context import _root_context

    command = order()
    for kind in ("command", "query"):
        for metadata in (None, {}, {"actor": "ann"}):
            built = DispatchContext(command, kind, metadata=metadata)  # type: ignore[arg-type]
            fast = _root_context(command, kind, metadata)  # type: ignore[arg-type]
            assert _fields(fast) == _fields(built)
            assert fast.metadata is not metadata
            assert fast.published is not built.published
    with correlation_scope("flow-1", "cause-1"):
        assert _fields(_root_context(command, "command", None)) == _fields(
            DispatchContext(command, "command")
        )
        assert _root_context(command, "command", None).causation_id == "cause-1"
    with correlation_scope("flow-2"):
        own = order(correlation_id="mine")
        assert _root_context(own, "command", None).correlation_id == "mine"
        assert _root_context(command, "command", None).causation_id is None
