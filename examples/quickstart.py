"""Quick start: a command pipeline over the in-memory adapters, step by step.

Run it with ``bash scripts/demo.sh`` (which sets everything up) or, in an
installed environment, ``python examples/quickstart.py [--orders N]``.

It shows the four things the library is about:

1. a pipeline is a list of middlewares, first listed = outermost, and
   ``describe()`` prints the resolved order;
2. event persistence is one of those middlewares, placed inside the unit of
   work, so events and state commit together or not at all;
3. a failure anywhere rolls everything back;
4. invalid commands are refused before any transaction opens.

The event persistence step here is a few lines for the sake of the example;
``cqrs_ddd_advanced_core`` ships the full one (orchestrator, outbox, audit).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from pydantic import Field

from cqrs_ddd_core import (
    AggregateRoot,
    CallNext,
    Command,
    CommandResponse,
    DispatchContext,
    DomainEvent,
    HandlerRegistry,
    Mediator,
    MessageValidationError,
    PipelineConfigurationError,
    Query,
    UnitOfWorkMiddleware,
    ValidationMiddleware,
    placement,
)
from cqrs_ddd_core.adapters.memory import (
    InMemoryEventStore,
    InMemoryStateRepository,
    InMemoryUnitOfWork,
)

# -- the domain ------------------------------------------------------------------


class OrderPlaced(DomainEvent):
    amount: int


class Order(AggregateRoot):
    amount: int = 0

    @classmethod
    def place(cls, order_id: str, amount: int) -> Order:
        order = cls(id=order_id, amount=amount)
        order.record_event(OrderPlaced(amount=amount))
        return order


class PlaceOrder(Command[str]):
    order_id: str
    amount: int = Field(gt=0)


class GetOrder(Query[Order | None]):
    order_id: str


# -- storage (in memory, transactional) ---------------------------------------------

events = InMemoryEventStore()
orders: InMemoryStateRepository[Order] = InMemoryStateRepository(Order)


# -- handlers ------------------------------------------------------------------------


async def place_order(command: PlaceOrder) -> CommandResponse[str]:
    if command.order_id.startswith("fail-"):
        order = Order.place(command.order_id, command.amount)
        orders.save(order)  # staged in the unit of work...
        raise RuntimeError("the payment service is down")  # ...and rolled back
    order = Order.place(command.order_id, command.amount)
    orders.save(order)
    return CommandResponse.from_aggregates(order.id, order)


async def get_order(query: GetOrder) -> Order | None:
    return await orders.find(query.order_id)


# -- middlewares -----------------------------------------------------------------------


async def timing(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
    """Outermost: measures everything, the commit included."""
    start = time.perf_counter()
    outcome = "error"
    try:
        result = await call_next(message, context)
        outcome = "ok"
        return result
    finally:
        elapsed_us = (time.perf_counter() - start) * 1e6
        print(f"  {context.message_type:<10} {outcome:<5} {elapsed_us:8.0f} µs")


@placement(name="event_persistence", inside={"unit_of_work"})
async def persist_events(message: Any, context: DispatchContext, call_next: CallNext) -> Any:
    """Appends the events the handler returned, in the handler's transaction."""
    response: CommandResponse[Any] = await call_next(message, context)
    for event in response.events:
        if not (event.aggregate_type and event.aggregate_id and event.aggregate_version):
            raise ValueError(f"{event.type_name()} was not recorded by an aggregate")
        await events.append(
            event.aggregate_type,
            event.aggregate_id,
            [event],
            expected_version=event.aggregate_version - 1,
        )
    return response


def build_mediator() -> Mediator:
    registry = HandlerRegistry()
    registry.register_command_handler(PlaceOrder, place_order)
    registry.register_query_handler(GetOrder, get_order)
    return Mediator(
        registry,
        middlewares=[
            timing,
            ValidationMiddleware(),
            UnitOfWorkMiddleware(InMemoryUnitOfWork),
            persist_events,
        ],
        query_middlewares=[timing, ValidationMiddleware()],
    )


async def main(order_count: int) -> None:
    print("1. The pipelines, outermost first:")
    mediator = build_mediator()
    print("  " + mediator.describe().replace("\n", "\n  "))

    print("\n2. Commands and a query:")
    for number in range(1, order_count + 1):
        await mediator.send(PlaceOrder(order_id=f"o-{number}", amount=10 * number))
    found = await mediator.query(GetOrder(order_id="o-1"))
    print(f"  o-1 -> {found!r}")

    print("\n3. A failing handler: nothing it staged is kept")
    try:
        await mediator.send(PlaceOrder(order_id="fail-1", amount=5))
    except RuntimeError as error:
        print(f"  refused: {error}; stored: {await orders.find('fail-1')!r}")

    print("\n4. An invalid command never opens a transaction:")
    try:
        await mediator.send(PlaceOrder.model_construct(order_id="o-x", amount=-1))
    except MessageValidationError as error:
        print(f"  refused: {error}")

    print("\n5. A pipeline in the wrong order is refused when it is built:")
    try:
        Mediator(
            HandlerRegistry(),
            middlewares=[persist_events, UnitOfWorkMiddleware(InMemoryUnitOfWork)],
        )
    except PipelineConfigurationError as error:
        print(f"  {error}")

    stored = await events.read_all()
    print(f"\n{len(stored)} events stored, positions 1..{await events.latest_position()}:")
    for event in stored:
        print(f"  #{event.position} {event.stream} v{event.version} {event.event_type}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--orders", type=int, default=3, help="how many orders to place")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args().orders))
