"""The saga manager: sagas as event handlers with state, run through the mediator.

Every transition of a saga (start, run a step, take an awaited event, fire
a timeout, compensate one step) is one dispatch of an internal command
(:mod:`.commands`) through the application's own mediator and pipeline. Its
handler loads the saga, sends the step's command with ``mediator.send`` (a
nested dispatch, so it joins the transition's unit of work) and stages the
saga's new state on that same unit of work. The state, the step's effects,
their events and outbox rows, and the id of the event handled commit
together or not at all; the state's version is checked at commit, so two
workers racing on one saga cannot both apply a step.

A step's command refused (its handler raised) is rolled back to before it
and the saga turns to compensating in the same commit; the compensations of
the started steps then run in reverse order, one per transition, each
recorded with its effects, so each runs once. The handlers are in
:mod:`.transitions`; this module decides which transitions to dispatch.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog

from cqrs_ddd_advanced_core.domain.exceptions import SagaDefinitionError, SagaNotFoundError
from cqrs_ddd_advanced_core.sagas import commands as c
from cqrs_ddd_advanced_core.sagas import telemetry as t
from cqrs_ddd_advanced_core.sagas.state import OPEN_STATUSES, SagaState, saga_id_for
from cqrs_ddd_advanced_core.sagas.transitions import SagaTransitions
from cqrs_ddd_core.context import current_context, current_uow
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.exceptions import CommitOutcomeUnknownError, ConcurrencyError

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from cqrs_ddd_advanced_core.sagas.definition import SagaDefinition
    from cqrs_ddd_advanced_core.sagas.ports import SagaStore
    from cqrs_ddd_core.cqrs.mediator import Mediator
    from cqrs_ddd_core.domain.messages import Command, DomainEvent

__all__ = ["SagaManager"]

_log = structlog.get_logger("cqrs_ddd_advanced_core.sagas")


class SagaManager:
    """Runs the sagas of ``definitions`` on ``mediator``, storing them in ``store``.

    Creating the manager registers, on the mediator's registry, the handlers
    of its internal commands and an event handler for every event a saga
    reacts to: the mediator then delivers them after each commit. One
    manager per registry (a second one's registration is refused with
    ``HandlerRegistrationError``): give it every definition at once.

    Args:
        mediator: The application's mediator (any pipeline with a unit of work).
        store: Where saga states live; the same database as the unit of work.
        definitions: The sagas to run (names must differ).
        clock: The current time (tests move it to fire timeouts).
        conflict_retries: How often a transition that lost a race (a version
            conflict, or a commit of unknown outcome) is retried.
        tracer_provider: Instead of the global provider.
        meter_provider: Instead of the global provider.

    Raises:
        SagaDefinitionError: two definitions share a name.
    """

    def __init__(
        self,
        mediator: Mediator,
        store: SagaStore,
        definitions: Sequence[SagaDefinition[Any]],
        *,
        clock: Callable[[], datetime] = utc_now,
        conflict_retries: int = 8,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.mediator = mediator
        self.store = store
        self.clock = clock
        self._retries = max(1, conflict_retries)
        self._definitions: dict[str, SagaDefinition[Any]] = {}
        for definition in definitions:
            if definition.name in self._definitions:
                raise SagaDefinitionError(definition.name, "two definitions have this name")
            self._definitions[definition.name] = definition
        self.telemetry = t.SagaTelemetry(
            tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        self._tasks: set[asyncio.Task[None]] = set()
        transitions = SagaTransitions(mediator, store, self._definitions, clock, self.telemetry)
        registry = mediator.registry
        registry.register_command_handler(c.StartSaga, transitions.start)
        registry.register_command_handler(c.AdvanceSaga, transitions.advance)
        registry.register_command_handler(c.DeliverSagaEvent, transitions.deliver)
        registry.register_command_handler(c.FireSagaTimeout, transitions.timeout)
        registry.register_command_handler(c.ResumeSaga, transitions.resume)
        for event_type in {e for d in definitions for e in d.event_types}:
            registry.register_event_handler(event_type, self.handle)

    @property
    def definitions(self) -> dict[str, SagaDefinition[Any]]:
        """The definitions by name."""
        return dict(self._definitions)

    # -- entry points -------------------------------------------------------

    async def handle(self, event: DomainEvent) -> list[str]:
        """Start or continue every saga ``event`` concerns; return their ids.

        Registered as the event handler of every event a saga reacts to.
        Handling an event twice changes nothing the second time.
        """
        token = t.current_trigger.set(t.Trigger.of(event))
        touched: list[str] = []
        try:
            for definition in self._definitions.values():
                saga_id: str | None = None
                if type(event) is definition.start_event:
                    saga_id = saga_id_for(definition.name, definition.start_key(event))
                    await self._send(partial(c.StartSaga, saga_type=definition.name, event=event))
                else:
                    key_of = definition.correlations.get(type(event))
                    if key_of is None:
                        continue
                    saga_id = saga_id_for(definition.name, key_of(event))
                    await self._send(partial(c.DeliverSagaEvent, saga_id=saga_id, event=event))
                await self.run(saga_id)
                touched.append(saga_id)
        finally:
            t.current_trigger.reset(token)
        return touched

    async def start(self, event: DomainEvent) -> str:
        """Start the saga ``event`` starts, now; return its id.

        Called inside a command's handler, the saga's creation joins that
        command's unit of work (the order and its saga commit together) and
        its steps run in a task of their own once it has committed (await
        :meth:`drain` to wait for them). Called outside a dispatch, it
        creates the saga and runs it before returning.

        Raises:
            SagaDefinitionError: no saga is started by ``type(event)``.
        """
        definition = next(
            (d for d in self._definitions.values() if type(event) is d.start_event), None
        )
        if definition is None:
            raise SagaDefinitionError(type(event).__name__, "no saga is started by this event")
        saga_id = saga_id_for(definition.name, definition.start_key(event))
        uow = current_uow()
        if current_context() is not None and uow is not None:
            await self.mediator.send(c.StartSaga(saga_type=definition.name, event=event))
            trigger = t.Trigger.of(event)

            async def run_later() -> None:
                self._spawn(self._run_with(trigger, saga_id))

            uow.after_commit(run_later)
            return saga_id
        token = t.current_trigger.set(t.Trigger.of(event))
        try:
            await self._send(lambda: c.StartSaga(saga_type=definition.name, event=event))
            await self.run(saga_id)
        finally:
            t.current_trigger.reset(token)
        return saga_id

    async def run(self, saga_id: str) -> SagaState | None:
        """Run the saga's ready steps (or compensations) until it waits or ends.

        Each step is one transition, committed on its own: a crash between two
        leaves the saga where the last commit put it, and :meth:`recover`
        carries on from there.
        """
        state = await self.store.find(saga_id)
        if state is None or state.saga_type not in self._definitions:
            return state  # not (yet) started, or not one of ours: nothing to run
        definition_steps = len(self._definitions[state.saga_type].steps)
        # Each transition moves the saga on; more than this means a bug, not work.
        for _ in range(2 * definition_steps + 4):
            if not await self._send(lambda: c.AdvanceSaga(saga_id=saga_id)):
                break
        return await self.store.find(saga_id)

    async def fire_due(self, now: datetime | None = None, *, limit: int = 100) -> int:
        """Fail the awaited steps whose deadline has passed, and compensate; return how many."""
        now = self.clock() if now is None else now
        fired = 0
        for state in await self.store.due(now, limit=limit):
            deadline = state.deadline_at
            if deadline is None:
                continue
            sid = state.saga_id
            if await self._send(partial(c.FireSagaTimeout, saga_id=sid, deadline_at=deadline)):
                fired += 1
            await self.run(sid)
        return fired

    async def recover(self, *, stale_after: timedelta | None = None, limit: int = 1000) -> int:
        """Carry on every open saga not waiting for an event (left mid-way by a crash).

        Args:
            stale_after: Only sagas not stored for this long (a periodic worker
                leaves the sagas being run right now alone); None: all of them
                (at start-up, when nothing else runs them).
            limit: At most this many sagas.

        Returns how many sagas were run.
        """
        count = 0
        cutoff = None if stale_after is None else self.clock() - stale_after
        for state in await self.store.list_sagas(statuses=OPEN_STATUSES, limit=limit):
            if state.waiting or state.saga_type not in self._definitions:
                continue
            if cutoff is not None and state.updated_at > cutoff:
                continue
            await self.run(state.saga_id)
            count += 1
        return count

    async def resume(self, saga_id: str) -> SagaState:
        """Run a saga again: a failed one retries its compensation.

        Raises:
            SagaNotFoundError: no saga has this id.
        """
        await self._send(lambda: c.ResumeSaga(saga_id=saga_id))
        state = await self.run(saga_id)
        if state is None:
            raise SagaNotFoundError(saga_id)
        return state

    async def count_open(self) -> dict[str, int]:
        """Open sagas by type (also reported by the ``cqrs.saga.open`` gauge)."""
        counts = dict.fromkeys(self._definitions, 0)
        for state in await self.store.list_sagas(statuses=OPEN_STATUSES, limit=1_000_000):
            counts[state.saga_type] = counts.get(state.saga_type, 0) + 1
        self.telemetry.set_open(counts)
        return counts

    async def drain(self) -> None:
        """Wait for the saga runs started after a commit (see :meth:`start`)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- dispatching transitions --------------------------------------------

    async def _send(self, make: Callable[[], Command[bool]]) -> bool:
        """Dispatch a transition; retry it when it lost a race or its commit is in doubt.

        A retry is safe: the handler reloads the saga, and the version check
        refuses a transition that was already applied.
        """
        for attempt in range(1, self._retries + 1):
            try:
                return bool((await self.mediator.send(make())).result)
            except (ConcurrencyError, CommitOutcomeUnknownError) as exc:
                if attempt == self._retries:
                    raise
                _log.info("saga_transition_retried", error_type=type(exc).__name__)
        return False  # pragma: no cover - the loop returns or raises

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        # A fresh context: the run is a dispatch of its own, not nested in the committed one.
        task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_with(self, trigger: t.Trigger, saga_id: str) -> None:
        token = t.current_trigger.set(trigger)
        try:
            await self.run(saga_id)
        except Exception as exc:  # recovery carries on; say why it must
            _log.error("saga_run_failed", saga_id=saga_id, error_type=type(exc).__name__)
        finally:
            t.current_trigger.reset(token)
