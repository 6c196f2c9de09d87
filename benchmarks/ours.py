"""The core library set up the way its docs show, shared by the dispatch workloads."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cqrs_ddd_core.cqrs import HandlerRegistry, Mediator
from cqrs_ddd_core.domain import Command

__all__ = ["PassThrough", "Ping", "PingHandler", "make_mediator", "sender"]


class Ping(Command[None]):
    """The same two small fields as the python-cqrs request."""

    account: str = "acc-1"
    amount: int = 1


class PingHandler:
    async def handle(self, command: Ping) -> None:
        return None


class PassThrough:
    """A middleware that does nothing but call the rest of the pipeline."""

    async def __call__(self, message: Any, context: Any, call_next: Any) -> Any:
        return await call_next(message, context)


def make_mediator(
    middlewares: Sequence[Any] | None, *, uow_factory: Any = None
) -> tuple[Mediator, PingHandler]:
    registry = HandlerRegistry()
    handler = PingHandler()
    registry.register_command_handler(Ping, handler)
    mediator = Mediator(registry, uow_factory, middlewares=middlewares, query_middlewares=[])
    return mediator, handler


def sender(mediator: Mediator, command: Command[Any]) -> Callable[[int], Awaitable[None]]:
    send = mediator.send

    async def run(n: int) -> None:
        for _ in range(n):
            await send(command)

    return run
