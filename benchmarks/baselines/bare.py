"""The floor: awaiting the handler directly, no mediator at all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["bare_handler"]


def bare_handler(handler: Any, command: Any) -> Callable[[int], Awaitable[None]]:
    handle = handler.handle

    async def run(n: int) -> None:
        for _ in range(n):
            await handle(command)

    return run
