"""python-cqrs set up as its README says: ``bootstrap`` + ``RequestMap.bind``.

Its ``bootstrap`` appends a ``LoggingMiddleware`` unless one is listed; that
middleware builds ``request.to_dict()`` and two ``logger.debug`` records per
request, and python-cqrs sets its ``"cqrs"`` logger to DEBUG when imported.
Each request resolves its handler through the ``di`` container.

Variants:
    * ``default``: what a user gets (its logging middleware, its logger at DEBUG).
    * ``silenced``: the same with the ``"cqrs"`` logger set to WARNING, the way
      a user silences it (the middleware still runs, its records are filtered).
    * ``nolog``: its logging middleware replaced by a pass-through subclass, so
      no logging work at all (the most favourable set-up for python-cqrs).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import cqrs
import di
from cqrs.bootstrap import requests as cqrs_bootstrap
from cqrs.middlewares.logging import LoggingMiddleware

__all__ = ["PingRequest", "make_sender"]

_LOGGER = logging.getLogger("cqrs")


class PingRequest(cqrs.Request[None]):
    """A request with two small fields, like the core workload's command."""

    account: str = "acc-1"
    amount: int = 1


class PingHandler(cqrs.RequestHandler[PingRequest, None]):
    async def handle(self, request: PingRequest) -> None:
        return None


class PassThrough:
    async def __call__(self, request: Any, handle: Any) -> Any:
        return await handle(request)


class _NoLogging(LoggingMiddleware):
    """Counts as python-cqrs's logging middleware, so bootstrap adds none; passes through."""

    async def __call__(self, request: Any, handle: Any) -> Any:
        return await handle(request)


def make_sender(middlewares: int, logging_mode: str) -> Callable[[int], Awaitable[None]]:
    """``run(n)`` sending one request ``n`` times through a bootstrapped mediator.

    Args:
        middlewares: Pass-through middlewares listed (0 = python-cqrs defaults).
        logging_mode: ``default``, ``silenced`` or ``nolog`` (see module doc).
    """
    listed: list[Any] = [PassThrough() for _ in range(middlewares)]
    if logging_mode == "nolog":
        if listed:
            listed[-1] = _NoLogging()
        else:
            listed.append(_NoLogging())
    mediator = cqrs_bootstrap.bootstrap(
        di_container=di.Container(),
        commands_mapper=lambda m: m.bind(PingRequest, PingHandler),
        middlewares=listed,
    )
    level = logging.WARNING if logging_mode == "silenced" else logging.DEBUG
    request = PingRequest()
    send = mediator.send

    async def run(n: int) -> None:
        # The "cqrs" logger is process-wide: set the level this variant needs.
        previous = _LOGGER.level
        _LOGGER.setLevel(level)
        try:
            for _ in range(n):
                await send(request)
        finally:
            _LOGGER.setLevel(previous)

    return run
