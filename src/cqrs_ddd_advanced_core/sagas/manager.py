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
recorded with its effects, so each runs once.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import trace

from cqrs_ddd_advanced_core.domain.exceptions import SagaDefinitionError, SagaNotFoundError
from cqrs_ddd_advanced_core.sagas import commands as c
from cqrs_ddd_advanced_core.sagas import telemetry as t
from cqrs_ddd_advanced_core.sagas.state import OPEN_STATUSES, SagaState, SagaStatus, saga_id_for
from cqrs_ddd_core.context import current_context, current_uow
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.exceptions import CommitOutcomeUnknownError, ConcurrencyError
from cqrs_ddd_core.telemetry.api import error_type

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
        registry = mediator.registry
        registry.register_command_handler(c.StartSaga, self._on_start)
        registry.register_command_handler(c.AdvanceSaga, self._on_advance)
        registry.register_command_handler(c.DeliverSagaEvent, self._on_deliver)
        registry.register_command_handler(c.FireSagaTimeout, self._on_timeout)
        registry.register_command_handler(c.ResumeSaga, self._on_resume)
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

    # -- transition handlers (run inside the dispatch's unit of work) -------

    def _definition(self, state: SagaState) -> SagaDefinition[Any]:
        definition = self._definitions.get(state.saga_type)
        if definition is None:
            raise SagaDefinitionError(state.saga_type, "no definition of this saga is registered")
        return definition

    async def _load(self, saga_id: str) -> SagaState:
        state = await self.store.find(saga_id)
        if state is None:
            raise SagaNotFoundError(saga_id)
        return state

    def _save(self, old: SagaState | None, new: SagaState) -> None:
        expected = 0 if old is None else old.version
        new.version = expected + 1
        new.updated_at = self.clock()
        self.store.save(new, expected_version=expected)
        if old is not None and old.status == new.status:
            return
        counter = {
            SagaStatus.RUNNING: self.telemetry.started,
            SagaStatus.COMPLETED: self.telemetry.completed,
            SagaStatus.COMPENSATED: self.telemetry.compensated,
            SagaStatus.FAILED: self.telemetry.failed,
        }.get(new.status)
        uow = current_uow()
        if counter is not None and uow is not None and (old is None or new.status != "running"):
            attributes = {t.ATTR_SAGA_TYPE: new.saga_type}

            async def count() -> None:
                counter.add(1, attributes)

            uow.after_commit(count)

    async def _on_start(self, command: c.StartSaga) -> bool:
        definition = self._definitions.get(command.saga_type)
        if definition is None:
            raise SagaDefinitionError(command.saga_type, "no definition of this saga is registered")
        event = command.event
        key = definition.start_key(event)
        saga_id = saga_id_for(definition.name, key)
        if await self.store.find(saga_id) is not None:
            return False  # started already (a redelivery, or a second start)
        with self._span(saga_id, definition.name, "start", "start"):
            data = definition.start_data(event)
            state = SagaState(
                saga_id=saga_id,
                saga_type=definition.name,
                key=key,
                data=data.model_dump(mode="json"),
                processed_event_ids=[event.event_id],
                correlation_id=event.correlation_id,
                created_at=self.clock(),
            )
            self._save(None, state)
        return True

    async def _on_advance(self, command: c.AdvanceSaga) -> bool:
        old = await self._load(command.saga_id)
        if old.status == SagaStatus.RUNNING and not old.waiting:
            return await self._run_step(old)
        if old.status == SagaStatus.COMPENSATING:
            return await self._compensate_one(old)
        return False

    async def _run_step(self, old: SagaState) -> bool:
        definition = self._definition(old)
        step = definition.steps[old.step]
        new = old.model_copy(deep=True)
        with self._span(old.saga_id, old.saga_type, step.name, "run") as span:
            data = definition.load_data(old.data)
            try:
                response = await self.mediator.send(step.send(data))
            except Exception as exc:  # the step is refused: its writes were rolled back
                span.set_attribute("error.type", error_type(exc))
                new.status = SagaStatus.COMPENSATING
                new.error = f"step {step.name!r} refused: {type(exc).__name__}: {exc}"
                self._save(old, new)
                return True
            if step.on_result is not None:
                data = step.on_result(data, response.result)
            new.data = data.model_dump(mode="json")
            new.started_steps.append(step.name)
            if step.awaits:
                new.waiting = True
                if step.timeout is not None:
                    new.deadline_at = self.clock() + step.timeout
            else:
                self._complete_step(new, step.name, len(definition.steps))
            self._save(old, new)
        return new.status == SagaStatus.RUNNING and not new.waiting

    @staticmethod
    def _complete_step(new: SagaState, name: str, steps: int) -> None:
        new.completed_steps.append(name)
        new.step += 1
        new.waiting = False
        new.deadline_at = None
        if new.step >= steps:
            new.status = SagaStatus.COMPLETED

    async def _compensate_one(self, old: SagaState) -> bool:
        definition = self._definition(old)
        pending = [
            name
            for name in reversed(old.started_steps)
            if name not in old.compensated_steps
            and definition.step_named(name).compensate is not None
        ]
        new = old.model_copy(deep=True)
        new.waiting, new.deadline_at = False, None
        if not pending:
            new.status = SagaStatus.COMPENSATED
            self._save(old, new)
            return False
        step = definition.step_named(pending[0])
        compensate = step.compensate
        if compensate is None:  # pragma: no cover - filtered above
            return False
        with self._span(old.saga_id, old.saga_type, step.name, "compensate") as span:
            try:
                await self.mediator.send(compensate(definition.load_data(old.data)))
            except Exception as exc:
                span.set_attribute("error.type", error_type(exc))
                new.status = SagaStatus.FAILED
                new.error = f"compensation of {step.name!r} failed: {type(exc).__name__}: {exc}"
                self._save(old, new)
                return False
            new.compensated_steps.append(step.name)
            self._save(old, new)
        return True

    async def _on_deliver(self, command: c.DeliverSagaEvent) -> bool:
        old = await self.store.find(command.saga_id)
        event = command.event
        if old is None or old.has_processed(event.event_id):
            return False  # no such saga (yet), or a redelivery: nothing changes
        if old.status != SagaStatus.RUNNING or not old.waiting:
            return False  # not awaited now (late or early): nothing changes
        definition = self._definition(old)
        step = definition.steps[old.step]
        new = old.model_copy(deep=True)
        with self._span(old.saga_id, old.saga_type, step.name, "event"):
            if type(event) in step.wait_for:
                if step.on_event is not None:
                    data = step.on_event(definition.load_data(old.data), event)
                    new.data = data.model_dump(mode="json")
                self._complete_step(new, step.name, len(definition.steps))
            elif type(event) in step.fail_on:
                new.status = SagaStatus.COMPENSATING
                new.waiting, new.deadline_at = False, None
                new.error = f"step {step.name!r} failed: {type(event).__name__}"
            else:
                return False
            new.processed_event_ids.append(event.event_id)
            self._save(old, new)
        return True

    async def _on_timeout(self, command: c.FireSagaTimeout) -> bool:
        old = await self.store.find(command.saga_id)
        if (
            old is None
            or old.status != SagaStatus.RUNNING
            or not old.waiting
            or old.deadline_at != command.deadline_at
            or command.deadline_at > self.clock()
        ):
            return False  # the step moved on meanwhile, or it is not due
        step = self._definition(old).steps[old.step]
        new = old.model_copy(deep=True)
        with self._span(old.saga_id, old.saga_type, step.name, "timeout"):
            new.status = SagaStatus.COMPENSATING
            new.waiting, new.deadline_at = False, None
            new.error = f"step {step.name!r} timed out at {command.deadline_at.isoformat()}"
            self._save(old, new)
        return True

    async def _on_resume(self, command: c.ResumeSaga) -> bool:
        old = await self._load(command.saga_id)
        if old.status != SagaStatus.FAILED:
            return False
        new = old.model_copy(deep=True)
        new.status = SagaStatus.COMPENSATING
        with self._span(old.saga_id, old.saga_type, "-", "resume"):
            self._save(old, new)
        return True

    # -- telemetry ------------------------------------------------------------

    def _span(self, saga_id: str, saga_type: str, step: str, action: str) -> _StepSpan:
        return _StepSpan(self.telemetry, saga_id, saga_type, step, action)


class _StepSpan:
    """The ``saga.step`` span and the step-duration sample of one transition."""

    __slots__ = ("_attributes", "_cm", "_span", "_start", "_telemetry")

    def __init__(
        self, telemetry: t.SagaTelemetry, saga_id: str, saga_type: str, step: str, action: str
    ) -> None:
        self._telemetry = telemetry
        self._attributes = {t.ATTR_SAGA_TYPE: saga_type, t.ATTR_SAGA_STEP: step}
        trigger = t.current_trigger.get()
        attributes: dict[str, str] = {
            **self._attributes,
            t.ATTR_SAGA_ID: saga_id,
            t.ATTR_SAGA_ACTION: action,
        }
        links = []
        if trigger is not None:
            if trigger.event_id is not None:
                attributes[t.ATTR_SAGA_TRIGGER_EVENT_ID] = trigger.event_id
            if trigger.link is not None:
                links.append(trigger.link)
        self._cm = telemetry.tracer.start_as_current_span(
            t.SPAN_SAGA_STEP, kind=trace.SpanKind.INTERNAL, attributes=attributes, links=links
        )
        self._start = 0

    def __enter__(self) -> trace.Span:
        self._start = time.perf_counter_ns()
        self._span = self._cm.__enter__()
        return self._span

    def __exit__(self, *exc_info: Any) -> None:
        outcome = "error" if exc_info[0] is not None else "success"
        self._telemetry.step_duration.record(
            (time.perf_counter_ns() - self._start) / 1e9,
            {**self._attributes, "cqrs.outcome": outcome},
        )
        self._cm.__exit__(*exc_info)
