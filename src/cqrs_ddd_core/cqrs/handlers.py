"""Handler base classes. Any ``async def handle(message)`` works; these add typing."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Generic, TypeVar

from cqrs_ddd_core.cqrs.response import CommandResponse
from cqrs_ddd_core.domain.messages import Command, DomainEvent, Query

__all__ = ["CommandHandler", "EventHandler", "QueryHandler"]

TCommand = TypeVar("TCommand", bound=Command)  # type: ignore[type-arg]
TQuery = TypeVar("TQuery", bound=Query)  # type: ignore[type-arg]
TEvent = TypeVar("TEvent", bound=DomainEvent)
TResult = TypeVar("TResult")


class CommandHandler(ABC, Generic[TCommand, TResult]):
    """Handles one command type. Return a :class:`CommandResponse` to report events."""

    @abstractmethod
    async def handle(self, command: TCommand) -> CommandResponse[TResult] | TResult:
        """Carry out ``command``; return its result, or a response with its events."""


class QueryHandler(ABC, Generic[TQuery, TResult]):
    """Handles one query type and returns its result."""

    @abstractmethod
    async def handle(self, query: TQuery) -> TResult:
        """Answer ``query`` (queries change nothing)."""


class EventHandler(ABC, Generic[TEvent]):
    """Reacts to one event type, in process, after the command's transaction commits."""

    @abstractmethod
    async def handle(self, event: TEvent) -> None:
        """React to ``event``; a failure is logged and does not fail the command."""
