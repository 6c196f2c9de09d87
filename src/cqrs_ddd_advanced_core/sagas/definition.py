"""Saga definitions: what starts a saga, how events find it, the steps it runs.

A definition is built once with :class:`SagaBuilder` and checked when it is
built: a saga that nothing starts, whose awaited events cannot be correlated,
that has no steps, or whose steps clash raises :class:`SagaDefinitionError`
there, not halfway through a business process.

A step sends one command (through the mediator, so it joins the unit of work
of the dispatch that runs the step). It either succeeds when the command
succeeds or, with ``wait_for``, when an outcome event arrives (a command to
another service, whose answer comes back as an event). Its ``compensate``
command undoes it when a later step fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from cqrs_ddd_advanced_core.domain.exceptions import SagaDefinitionError
from cqrs_ddd_core.domain.messages import Command, DomainEvent

__all__ = ["SagaBuilder", "SagaDefinition", "SagaStep"]

TData = TypeVar("TData", bound=BaseModel)
TEvent = TypeVar("TEvent", bound=DomainEvent)

CommandFactory = Callable[[TData], Command[Any]]
KeyOf = Callable[[Any], str]


@dataclass(frozen=True, slots=True)
class SagaStep(Generic[TData]):
    """One step of a saga.

    Attributes:
        name: Unique within the saga; stored in the saga's state.
        send: Makes the step's command from the saga's data.
        compensate: Makes the command that undoes the step, if it needs undoing.
        wait_for: Events that complete the step (after its command committed).
        fail_on: Events that fail the step (the saga then compensates).
        timeout: How long to wait for ``wait_for`` before failing the step.
        on_result: Folds the command's result into the data (returns new data).
        on_event: Folds the completing event into the data (returns new data).
    """

    name: str
    send: Callable[[TData], Command[Any]]
    compensate: Callable[[TData], Command[Any]] | None = None
    wait_for: tuple[type[DomainEvent], ...] = ()
    fail_on: tuple[type[DomainEvent], ...] = ()
    timeout: timedelta | None = None
    on_result: Callable[[TData, Any], TData] | None = None
    on_event: Callable[[TData, Any], TData] | None = None

    @property
    def awaits(self) -> bool:
        """True when the step completes on an event rather than on its command."""
        return bool(self.wait_for)


@dataclass(frozen=True, slots=True)
class SagaDefinition(Generic[TData]):
    """A checked, immutable saga definition (build it with :class:`SagaBuilder`).

    Attributes:
        name: The saga type's name (stored; part of every saga id).
        data_type: The pydantic model of the saga's data.
        start_event: The event that starts a saga.
        start_key: The correlation key of a starting event.
        start_data: The initial data made from the starting event.
        steps: In the order they run.
        correlations: Event type → key function, for every event the saga awaits.
    """

    name: str
    data_type: type[TData]
    start_event: type[DomainEvent]
    start_key: KeyOf
    start_data: Callable[[Any], TData]
    steps: tuple[SagaStep[TData], ...]
    correlations: dict[type[DomainEvent], KeyOf] = field(default_factory=dict)

    def step_named(self, name: str) -> SagaStep[TData]:
        """The step called ``name``.

        Raises:
            KeyError: the saga has no such step.
        """
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def event_types(self) -> tuple[type[DomainEvent], ...]:
        """Every event type the saga reacts to (the start event first)."""
        return (self.start_event, *self.correlations)

    def load_data(self, raw: dict[str, Any]) -> TData:
        """The stored data as the definition's model."""
        return self.data_type.model_validate(raw)


class SagaBuilder(Generic[TData]):
    """Builds a :class:`SagaDefinition`, checking it as it goes.

    Example::

        saga = (
            SagaBuilder("order", OrderData)
            .started_by(OrderPlaced, key=lambda e: e.order_id, data=OrderData.from_event)
            .correlate(PaymentTaken, key=lambda e: e.order_id)
            .step("reserve", send=reserve, compensate=release)
            .step("pay", send=pay, wait_for=PaymentTaken, timeout=timedelta(seconds=30))
            .step("ship", send=ship)
            .build()
        )

    Args:
        name: The saga type's name: letters, digits, ``_``, ``-``, ``.``.
        data_type: The pydantic model holding the saga's data.
    """

    def __init__(self, name: str, data_type: type[TData]) -> None:
        if not name or not all(c.isalnum() or c in "_-." for c in name):
            raise SagaDefinitionError(
                name or "<empty>", "a name needs letters, digits, '_', '-' or '.' only"
            )
        if not (isinstance(data_type, type) and issubclass(data_type, BaseModel)):
            raise SagaDefinitionError(name, f"data_type {data_type!r} is not a pydantic model")
        self._name = name
        self._data_type = data_type
        self._start: tuple[type[DomainEvent], KeyOf, Callable[[Any], TData]] | None = None
        self._steps: list[SagaStep[TData]] = []
        self._correlations: dict[type[DomainEvent], KeyOf] = {}
        self._built = False

    def _check_open(self) -> None:
        if self._built:
            raise SagaDefinitionError(self._name, "the builder was built already")

    def started_by(
        self,
        event_type: type[TEvent],
        *,
        key: Callable[[TEvent], str],
        data: Callable[[TEvent], TData],
    ) -> SagaBuilder[TData]:
        """The event that starts a saga, its correlation key and the initial data."""
        self._check_open()
        _check_event_type(self._name, event_type)
        if self._start is not None:
            raise SagaDefinitionError(self._name, "it is started by one event type only")
        if not callable(key) or not callable(data):
            raise SagaDefinitionError(self._name, "started_by needs callable key and data")
        self._start = (event_type, key, data)
        return self

    def correlate(
        self, event_type: type[TEvent], *, key: Callable[[TEvent], str]
    ) -> SagaBuilder[TData]:
        """How an awaited event names its saga: the key it carries."""
        self._check_open()
        _check_event_type(self._name, event_type)
        if not callable(key):
            raise SagaDefinitionError(
                self._name, f"the key of {event_type.__name__} is not callable"
            )
        self._correlations[event_type] = key
        return self

    def step(
        self,
        name: str,
        *,
        send: Callable[[TData], Command[Any]],
        compensate: Callable[[TData], Command[Any]] | None = None,
        wait_for: type[DomainEvent] | Sequence[type[DomainEvent]] = (),
        fail_on: type[DomainEvent] | Sequence[type[DomainEvent]] = (),
        timeout: timedelta | None = None,
        on_result: Callable[[TData, Any], TData] | None = None,
        on_event: Callable[[TData, Any], TData] | None = None,
    ) -> SagaBuilder[TData]:
        """Add a step (see :class:`SagaStep` for the arguments)."""
        self._check_open()
        if not name or any(s.name == name for s in self._steps):
            raise SagaDefinitionError(self._name, f"step name {name!r} is empty or used twice")
        if not callable(send) or (compensate is not None and not callable(compensate)):
            raise SagaDefinitionError(self._name, f"step {name!r}: send/compensate not callable")
        waits = _as_tuple(wait_for)
        fails = _as_tuple(fail_on)
        for event_type in (*waits, *fails):
            _check_event_type(self._name, event_type)
        if fails and not waits:
            raise SagaDefinitionError(self._name, f"step {name!r}: fail_on needs wait_for")
        if timeout is not None:
            if not waits:
                raise SagaDefinitionError(self._name, f"step {name!r}: a timeout needs wait_for")
            if timeout <= timedelta(0):
                raise SagaDefinitionError(self._name, f"step {name!r}: timeout must be positive")
        self._steps.append(
            SagaStep(name, send, compensate, waits, fails, timeout, on_result, on_event)
        )
        return self

    def build(self) -> SagaDefinition[TData]:
        """The checked definition.

        Raises:
            SagaDefinitionError: nothing starts the saga, it has no steps, an
                awaited event has no correlation key, or one event type is
                awaited by two steps.
        """
        self._check_open()
        if self._start is None:
            raise SagaDefinitionError(self._name, "no started_by(...): nothing can start it")
        if not self._steps:
            raise SagaDefinitionError(self._name, "no steps: it could never complete")
        seen: dict[type[DomainEvent], str] = {}
        for step in self._steps:
            for event_type in (*step.wait_for, *step.fail_on):
                if event_type not in self._correlations:
                    raise SagaDefinitionError(
                        self._name,
                        f"step {step.name!r} awaits {event_type.__name__}, which has no "
                        "correlate(...) key: it could never find its saga",
                    )
                if event_type in seen and seen[event_type] != step.name:
                    raise SagaDefinitionError(
                        self._name,
                        f"{event_type.__name__} is awaited by steps {seen[event_type]!r} "
                        f"and {step.name!r}",
                    )
                seen[event_type] = step.name
        start_event, start_key, start_data = self._start
        if start_event in seen:
            raise SagaDefinitionError(
                self._name, f"{start_event.__name__} both starts the saga and completes a step"
            )
        self._built = True
        return SagaDefinition(
            self._name,
            self._data_type,
            start_event,
            start_key,
            start_data,
            tuple(self._steps),
            dict(self._correlations),
        )


def _as_tuple(
    value: type[DomainEvent] | Sequence[type[DomainEvent]],
) -> tuple[type[DomainEvent], ...]:
    if isinstance(value, type):
        return (value,)
    return tuple(value)


def _check_event_type(saga: str, event_type: object) -> None:
    if not (isinstance(event_type, type) and issubclass(event_type, DomainEvent)):
        raise SagaDefinitionError(saga, f"{event_type!r} is not a DomainEvent subclass")
