"""insert_middlewares and the mediator's insert_before/insert_after: the defaults plus a step."""

from __future__ import annotations

from typing import Any

import pytest

from cqrs_ddd_core.adapters.memory import InMemoryUnitOfWork
from cqrs_ddd_core.context import DispatchContext
from cqrs_ddd_core.cqrs import HandlerRegistry, Mediator
from cqrs_ddd_core.exceptions import (
    ConfigurationError,
    PipelineConfigurationError,
    PipelineFrozenError,
)
from cqrs_ddd_core.middleware import ValidationMiddleware
from cqrs_ddd_core.pipeline import CallNext, Placement, insert_middlewares, middleware_name
from tests.core.shop import PlaceOrder


class Step:
    """A named pass-through middleware that records that it ran."""

    def __init__(self, name: str, trace: list[str] | None = None) -> None:
        self.name = name
        self.trace = trace if trace is not None else []

    async def __call__(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        self.trace.append(self.name)
        return await call_next(message, context)


def names(middlewares: list[Any]) -> list[str]:
    return [middleware_name(m) for m in middlewares]


def test_steps_go_right_before_and_after_the_named_ones_in_the_order_given() -> None:
    base = [Step("a"), Step("b"), Step("c")]

    result = insert_middlewares(
        base,
        before={"b": [Step("x1"), Step("x2")]},
        after={"b": Step("y"), "c": (Step("z1"), Step("z2"))},
    )

    assert names(result) == ["a", "x1", "x2", "b", "y", "c", "z1", "z2"]
    assert names(base) == ["a", "b", "c"]  # the list given is not changed


def test_an_unknown_name_is_refused_with_the_order_it_was_looked_for_in() -> None:
    with pytest.raises(PipelineConfigurationError) as caught:
        insert_middlewares([Step("a"), Step("b")], after={"loging": Step("x")})

    assert caught.value.offender == "loging"
    assert caught.value.order == ("a", "b")
    assert "no step of that name" in str(caught.value)
    assert "a -> b -> handler" in str(caught.value)


def test_a_name_listed_twice_is_refused_as_ambiguous() -> None:
    with pytest.raises(PipelineConfigurationError, match="has 2 of them"):
        insert_middlewares([Step("a"), Step("a")], before={"a": Step("x")})


def registry() -> HandlerRegistry:
    found = HandlerRegistry()

    async def place(command: PlaceOrder) -> str:
        return command.order_id

    found.register_command_handler(PlaceOrder, place)
    return found


async def test_the_mediator_puts_a_step_after_logging_in_its_default_pipeline() -> None:
    trace: list[str] = []
    mediator = Mediator(
        registry(), InMemoryUnitOfWork, insert_after={"logging": Step("audit", trace)}
    )

    assert mediator.pipeline.describe() == (
        "tracing -> logging -> audit -> metrics -> validation -> unit_of_work -> handler"
    )
    response = await mediator.send(PlaceOrder(order_id="o-1", amount=1))
    assert response.result == "o-1"
    assert trace == ["audit"]


def test_the_mediator_puts_a_step_before_the_unit_of_work() -> None:
    mediator = Mediator(registry(), InMemoryUnitOfWork, insert_before={"unit_of_work": Step("x")})

    assert mediator.pipeline.describe() == (
        "tracing -> logging -> metrics -> validation -> x -> unit_of_work -> handler"
    )


def test_an_inserted_step_is_still_checked_against_placement_rules() -> None:
    inside_only = Step("needs_uow")
    inside_only.placement = Placement.of(inside=("unit_of_work",))  # type: ignore[attr-defined]

    with pytest.raises(PipelineConfigurationError) as caught:
        Mediator(registry(), InMemoryUnitOfWork, insert_after={"logging": inside_only})

    assert caught.value.offender == "needs_uow"


def test_insert_with_an_explicit_middleware_list_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="list every step in its place"):
        Mediator(
            registry(),
            middlewares=[ValidationMiddleware()],
            insert_after={"validation": Step("x")},
        )


def test_the_pipeline_built_with_inserted_steps_is_frozen() -> None:
    mediator = Mediator(registry(), InMemoryUnitOfWork, insert_after={"logging": Step("x")})

    with pytest.raises(PipelineFrozenError):
        mediator.pipeline.middlewares = (Step("late"),)
