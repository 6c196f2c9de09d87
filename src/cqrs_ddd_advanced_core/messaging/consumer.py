"""Consumers: each delivery goes through a pipeline, like a command.

::

    delivery -> tracing (CONSUMER span) -> logging -> metrics -> [upcasting]
             -> inbox (one transaction: inbox row + handler's effects) -> handler
    <- outcome (handled / duplicate / ignored); the subscriber acks after it

The pipeline is built once, first listed = outermost, like the command
pipeline: a middleware is ``async def mw(message, context, call_next)`` with
``await call_next(message, context)`` inside. The inbox step is the unit of
work: it opens the transaction, records the message id (a redelivered message
stops there as ``DUPLICATE``, no second effect), runs the handler with the
transaction, and commits. The subscriber acknowledges only once
:meth:`MessageConsumer.process` returned, i.e. after the commit.

**Batches** (:meth:`MessageConsumer.process_batch`, what the RabbitMQ
subscriber uses for the deliveries a queue has ready): one transaction for
several deliveries of one queue, in their order. Each delivery still goes
through the whole pipeline (its own span, log and metrics); their inbox rows
go in with one statement, the handlers run one after the other in the shared
transaction, and one commit ends it, after which each delivery's pipeline
returns. If a delivery fails, the transaction is rolled back and the
deliveries before it run again in a new one (their handlers run a second
time; nothing of the first try was kept), which commits; the failed one and
those after it are left to the caller. So the others commit once, and a
delivery's failure never lets a later one of its queue commit before it.

With ``upcaster=`` (for example :func:`upcast_with` of an
``UpcasterRegistry``) a delivery written at an older schema version reaches
the handler at its type's current one; one that cannot be upcast fails like
a failing handler (retried, then dead-lettered), before anything is written.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from cqrs_ddd_advanced_core.messaging.ports import IncomingMessage, MessageHandler, Outcome
from cqrs_ddd_advanced_core.messaging.telemetry import (
    ATTR_CONSUMER_GROUP,
    ATTR_CONVERSATION_ID,
    ATTR_DESTINATION,
    ATTR_MESSAGE_ID,
    ATTR_OPERATION_NAME,
    ATTR_OPERATION_TYPE,
    ATTR_SYSTEM,
    LazyTracer,
    MessagingInstruments,
)
from cqrs_ddd_core.context import correlation_scope
from cqrs_ddd_core.exceptions import ConfigurationError
from cqrs_ddd_core.telemetry.api import error_type, get_meter
from cqrs_ddd_core.telemetry.names import ATTR_ERROR_TYPE, ATTR_MESSAGE_TYPE, ATTR_OUTCOME

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from cqrs_ddd_core.persistence.ports import InboxStore, InboxTransaction

__all__ = [
    "ConsumeContext",
    "ConsumerMiddleware",
    "IncomingUpcaster",
    "MessageConsumer",
    "PayloadUpcaster",
    "upcast_with",
]

_log = structlog.get_logger("cqrs_ddd_advanced_core.messaging")

ConsumeNext = Callable[[IncomingMessage, "ConsumeContext"], Awaitable[Outcome]]
ConsumerMiddleware = Callable[[IncomingMessage, "ConsumeContext", ConsumeNext], Awaitable[Outcome]]
"""``async def mw(message, context, call_next) -> Outcome``."""

IncomingUpcaster = Callable[[IncomingMessage], IncomingMessage]
"""Brings a delivery's payload to its type's current schema (a copy when it changes)."""


class PayloadUpcaster(Protocol):
    """What :func:`upcast_with` needs: ``UpcasterRegistry.upcast_payload``."""

    def upcast_payload(
        self,
        event_type: str,
        payload: dict[str, Any],
        schema_version: int,
        *,
        event_id: str | None = None,
    ) -> tuple[dict[str, Any], int]:
        """``payload`` at the current version, and that version."""
        ...


def upcast_with(registry: PayloadUpcaster) -> IncomingUpcaster:
    """A consumer's upcaster from an ``UpcasterRegistry`` (the producer's schema history).

    A delivery without a ``schema_version`` header, or of a type the registry
    does not know, is handed on as it is.

    Raises (from the returned function):
        EventSchemaVersionError: no chain of steps reaches the current version
            (for instance a message newer than this consumer's code).
    """

    def upcast(message: IncomingMessage) -> IncomingMessage:
        version = message.schema_version
        if version is None:
            return message
        payload, upcast_to = registry.upcast_payload(
            message.message_type, message.payload, version, event_id=message.message_id
        )
        if upcast_to == version:
            return message
        return dataclasses.replace(message, payload=payload, schema_version=upcast_to)

    return upcast


@dataclass(slots=True)
class ConsumeContext:
    """What travels with one delivery through the consumer pipeline.

    Attributes:
        consumer: The consumer's name (its inbox key, its queue group).
        transaction: The inbox transaction, once the inbox step opened it.
        metadata: Free-form values the middlewares and the handler share.
    """

    consumer: str
    transaction: InboxTransaction | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class MessageConsumer:
    """Dispatches deliveries to the handlers subscribed to their type, through a pipeline.

    Args:
        name: The consuming service's name (inbox key and consumer group).
        inbox: Where handled message ids are recorded, with the effects.
        middlewares: Extra steps, placed between metrics and the inbox (listed
            order, first = outermost).
        upcaster: Applied to each delivery before the inbox step (after the
            extra middlewares): see :func:`upcast_with`. If it raises, the
            delivery fails and nothing is written.
        system: ``messaging.system`` on spans (the broker adapter's name).
        tracer_provider: Spans go there (default: the global provider).
        meter_provider: Metrics go there (default: the global provider).
    """

    def __init__(
        self,
        name: str,
        inbox: InboxStore,
        *,
        middlewares: Sequence[ConsumerMiddleware] = (),
        upcaster: IncomingUpcaster | None = None,
        system: str = "rabbitmq",
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if not name:
            raise ConfigurationError("A consumer needs a name (its inbox key)")
        self.name = name
        self._inbox = inbox
        self._handlers: dict[str, list[MessageHandler]] = {}
        self._system = system
        self._tracer = LazyTracer(tracer_provider)
        self._instruments = MessagingInstruments(get_meter(meter_provider))
        # Metric attributes per message type, and per (type, outcome): built once.
        self._attributes: dict[str, dict[str, str]] = {}
        self._outcome_attributes: dict[tuple[str, str], dict[str, str]] = {}
        steps: list[ConsumerMiddleware] = [self._trace, self._logging, self._metrics]
        steps.extend(middlewares)
        self._upcaster = upcaster
        if upcaster is not None:
            steps.append(self._upcasting)
        steps.append(self._unit_of_work)
        self._steps = tuple(steps)
        self._chain = self._build(self._steps)
        self._frozen = False

    @property
    def instruments(self) -> MessagingInstruments:
        """The consumer's metric instruments."""
        return self._instruments

    def subscribe(self, message_type: str, handler: MessageHandler) -> None:
        """Run ``handler`` for every delivery of ``message_type`` (before the first delivery).

        Raises:
            ConfigurationError: the consumer has processed a delivery already.
        """
        if self._frozen:
            raise ConfigurationError(f"{self!r} is running: subscribe before it starts")
        self._handlers.setdefault(message_type, []).append(handler)

    @property
    def message_types(self) -> tuple[str, ...]:
        """The types with a handler."""
        return tuple(self._handlers)

    def describe(self) -> str:
        """The pipeline's order, outermost first."""
        names = [getattr(s, "__name__", type(s).__name__).lstrip("_") for s in self._steps]
        return " -> ".join([*names, "handler"])

    async def process_batch(
        self, messages: Sequence[IncomingMessage]
    ) -> list[Outcome | Exception | None]:
        """Process deliveries of one queue in one transaction, in order.

        Returns, per delivery, its outcome (committed, or skipped), the exception
        it failed with, or None when it was not tried. Whatever follows the
        first entry that is not an outcome was not committed: the caller retries
        the failed delivery, then the rest, in order. A delivery's pipeline
        returns (its span ends, its outcome is counted) once the transaction
        committed; if the commit fails, every delivery in it fails with the error.
        The batch's inbox rows go in before the pipelines run: a delivery that a
        middleware answers without calling the next step has its row committed
        with the others (a redelivery of it is a duplicate), unlike in
        :meth:`process`.
        """
        self._frozen = True
        results: list[Outcome | Exception | None] = [None] * len(messages)
        if len(messages) <= 1:
            for i, message in enumerate(messages):
                try:
                    results[i] = await self.process(message)
                except Exception as exc:
                    results[i] = exc
            return results
        batch = _Batch(self, messages)
        try:
            await batch.run()
        except BaseException:
            await batch.abandon()
            raise
        for i, task in enumerate(batch.tasks):
            if task is not None and task.done() and not task.cancelled():
                error = task.exception()
                if error is None:
                    results[i] = task.result()
                elif isinstance(error, Exception):
                    results[i] = error
                else:
                    raise error
        return results

    async def process(self, message: IncomingMessage) -> Outcome:
        """Process one delivery; returns once its effects committed (or it was skipped).

        Raises:
            Exception: whatever the handler or the commit raised (nothing was kept).
        """
        self._frozen = True
        return await self._chain(message, ConsumeContext(self.name))

    def _build(self, steps: Sequence[ConsumerMiddleware]) -> ConsumeNext:
        async def terminal(message: IncomingMessage, context: ConsumeContext) -> Outcome:
            return await self._handle(message, context)

        chain: ConsumeNext = terminal
        for step in reversed(steps):
            chain = _link(step, chain)
        return chain

    async def _trace(
        self, message: IncomingMessage, context: ConsumeContext, call_next: ConsumeNext
    ) -> Outcome:
        if not self._tracer.recording():
            return await _in_producer_context(message, context, call_next)
        parent = propagate.extract(message.trace_context)
        attributes = {
            ATTR_SYSTEM: self._system,
            ATTR_OPERATION_NAME: "process",
            ATTR_OPERATION_TYPE: "process",
            ATTR_DESTINATION: message.destination,
            ATTR_MESSAGE_ID: message.message_id,
            ATTR_CONSUMER_GROUP: self.name,
            ATTR_MESSAGE_TYPE: message.message_type,
        }
        if message.correlation_id:
            attributes[ATTR_CONVERSATION_ID] = message.correlation_id
        with self._tracer.tracer.start_as_current_span(
            f"process {message.destination}".rstrip(),
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                outcome = await call_next(message, context)
            except Exception as exc:
                span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                span.set_attribute(ATTR_ERROR_TYPE, error_type(exc))
                raise
            span.set_attribute(ATTR_OUTCOME, outcome.value)
            return outcome

    async def _logging(
        self, message: IncomingMessage, context: ConsumeContext, call_next: ConsumeNext
    ) -> Outcome:
        # No logger bound per delivery (structlog's lazy proxy builds one per call):
        # fields are passed with the event, and a success is logged only at DEBUG.
        try:
            outcome = await call_next(message, context)
        except Exception as exc:
            _log.warning(
                "message_processing_failed",
                consumer=self.name,
                message_id=message.message_id,
                message_type=message.message_type,
                attempt=message.attempt,
                error_type=type(exc).__name__,
            )
            raise
        if _debug_enabled():
            _log.debug(
                "message_processed",
                consumer=self.name,
                message_id=message.message_id,
                message_type=message.message_type,
                attempt=message.attempt,
                outcome=outcome.value,
            )
        return outcome

    async def _metrics(
        self, message: IncomingMessage, context: ConsumeContext, call_next: ConsumeNext
    ) -> Outcome:
        start = time.perf_counter()
        message_type = message.message_type
        attributes = self._attributes.get(message_type)
        if attributes is None:
            attributes = self._type_attributes(message_type)
        try:
            outcome = await call_next(message, context)
        except Exception as exc:
            self._instruments.consumed.add(1, {**attributes, ATTR_OUTCOME: "error"})
            self._instruments.process_duration.record(
                time.perf_counter() - start, {**attributes, ATTR_ERROR_TYPE: error_type(exc)}
            )
            raise
        by_outcome = self._outcome_attributes.get((message_type, outcome))
        if by_outcome is None:
            by_outcome = {**attributes, ATTR_OUTCOME: outcome.value}
            if message_type in self._attributes:  # subscribed types only, as above
                self._outcome_attributes[(message_type, outcome)] = by_outcome
        self._instruments.consumed.add(1, by_outcome)
        self._instruments.process_duration.record(time.perf_counter() - start, attributes)
        return outcome

    def _type_attributes(self, message_type: str) -> dict[str, str]:
        attributes = {ATTR_CONSUMER_GROUP: self.name, ATTR_MESSAGE_TYPE: message_type}
        if message_type in self._handlers:  # kept for subscribed types only (bounded)
            self._attributes[message_type] = attributes
        return attributes

    async def _upcasting(
        self, message: IncomingMessage, context: ConsumeContext, call_next: ConsumeNext
    ) -> Outcome:
        upcaster = self._upcaster
        if upcaster is None or message.message_type not in self._handlers:
            return await call_next(message, context)
        return await call_next(upcaster(message), context)

    async def _unit_of_work(
        self, message: IncomingMessage, context: ConsumeContext, call_next: ConsumeNext
    ) -> Outcome:
        if message.message_type not in self._handlers:
            return Outcome.IGNORED
        turn = _TURN.get()
        if turn is not None and turn.batch.consumer is self:
            _TURN.set(None)  # what the handler runs (another consumer's process) is not batched
            return await turn.take(message, context, call_next)
        tx = await self._inbox.begin()
        context.transaction = tx
        try:
            if not await tx.record(self.name, message.message_id, message.message_type):
                await tx.rollback()
                return Outcome.DUPLICATE
            with correlation_scope(
                message.correlation_id or message.message_id, message.message_id
            ):
                outcome = await call_next(message, context)
        except BaseException:
            await tx.rollback()
            raise
        await tx.commit()
        return outcome

    async def _handle(self, message: IncomingMessage, context: ConsumeContext) -> Outcome:
        tx = context.transaction
        if tx is None:
            raise ConfigurationError("The consumer pipeline lost its inbox transaction")
        for handler in self._handlers[message.message_type]:
            await handler(message, tx)
        return Outcome.HANDLED

    def __repr__(self) -> str:
        return f"MessageConsumer({self.name!r}, types={sorted(self._handlers)})"


_ENDED = object()  # a delivery's pipeline returned or raised without waiting for the commit
_REPLAY = object()  # the transaction was rolled back: run the handler again in the next one


class _Turn:
    """One delivery's place in a batch: where its pipeline (in a task of its own) and
    the batch meet. The pipeline's inbox step runs the handler when the batch gives
    it the transaction, reports that it ran (``ran``), and waits for the verdict:
    committed (it returns its outcome), rolled back to be run again, or failed."""

    __slots__ = ("batch", "fresh", "go", "index", "ran", "transaction", "verdict")

    def __init__(self, batch: _Batch, index: int) -> None:
        loop = asyncio.get_running_loop()
        self.batch = batch
        self.index = index
        self.transaction: InboxTransaction | None = None
        self.fresh = False  # its inbox row went in with this transaction
        self.ran: asyncio.Future[object] = loop.create_future()
        self.verdict: asyncio.Future[object] = loop.create_future()
        self.go: asyncio.Future[None] | None = None

    def ended(self) -> None:
        if not self.ran.done():
            self.ran.set_result(_ENDED)

    async def take(
        self, message: IncomingMessage, context: ConsumeContext, call_next: ConsumeNext
    ) -> Outcome:
        consumer = self.batch.consumer
        while True:
            tx = self.transaction
            context.transaction = tx
            if not self.fresh:  # handled before (or earlier in this batch)
                return Outcome.DUPLICATE
            with correlation_scope(
                message.correlation_id or message.message_id, message.message_id
            ):
                outcome = await call_next(message, context)
            verdict_future = self.verdict
            if self.ran.cancelled():
                # The batch stopped waiting for it (cancelled: its connection was
                # lost, say) while the handler finished: nothing of the batch
                # commits, and the batch's abandon cancels this task anyway.
                raise asyncio.CancelledError
            self.ran.set_result(outcome)
            verdict = await verdict_future
            if verdict is None:
                return outcome
            if verdict is _REPLAY and self.go is not None:
                await self.go
                continue
            if isinstance(verdict, BaseException):
                raise verdict
            raise ConfigurationError(f"{consumer!r}: a batch lost its verdict")  # pragma: no cover


class _Batch:
    """Runs a batch's deliveries through the pipeline in one transaction (see the module)."""

    def __init__(self, consumer: MessageConsumer, messages: Sequence[IncomingMessage]) -> None:
        self.consumer = consumer
        self.messages = messages
        self.turns = [_Turn(self, i) for i in range(len(messages))]
        self.tasks: list[asyncio.Task[Outcome] | None] = [None] * len(messages)
        self.transaction: InboxTransaction | None = None
        self.running = 0  # pipelines started and not ended
        self.finished: asyncio.Future[None] | None = None  # set when the last one ends

    def _waiting(self, upto: int) -> list[_Turn]:
        """The deliveries before ``upto`` whose handler ran and that wait for the verdict."""
        return [
            t
            for t in self.turns[:upto]
            if t.ran.done() and t.ran.result() is not _ENDED and not t.verdict.done()
        ]

    async def _record(self, tx: InboxTransaction, turns: Sequence[_Turn]) -> None:
        handlers = self.consumer._handlers
        wanted: dict[str, str] = {}
        for turn in turns:
            message = self.messages[turn.index]
            if message.message_type in handlers:
                wanted.setdefault(message.message_id, message.message_type)
        record_many = getattr(tx, "record_many", None)
        name = self.consumer.name
        if record_many is not None:
            fresh = set(await record_many(name, list(wanted.items())))
        else:
            fresh = {m for m, t in wanted.items() if await tx.record(name, m, t)}
        for turn in turns:
            message_id = self.messages[turn.index].message_id
            turn.fresh = message_id in fresh
            fresh.discard(message_id)  # a second copy in the batch is a duplicate
            turn.transaction = tx

    async def run(self) -> None:
        consumer = self.consumer
        upto = len(self.messages)
        replay: list[_Turn] | None = None  # None: the first pass (tasks to start)
        while True:
            tx = self.transaction = await consumer._inbox.begin()
            turns = self.turns[:upto] if replay is None else replay
            await self._record(tx, turns)
            failed = None
            for turn in turns:
                if replay is None:
                    self.tasks[turn.index] = asyncio.create_task(self._pipeline(turn))
                    self.running += 1
                elif turn.go is not None:
                    turn.go.set_result(None)
                if await turn.ran is _ENDED:
                    ended = self.tasks[turn.index]
                    if ended is not None and (ended.cancelled() or ended.exception() is not None):
                        failed = turn.index
                        break
            if failed is None:
                break
            # The failed delivery's effects may be in the transaction: roll it all
            # back; the deliveries before it run again in a new one.
            self.transaction = None
            await tx.rollback()
            waiting = self._waiting(len(self.messages))
            replay = [t for t in waiting if t.index < failed]
            await _cancel([self.tasks[t.index] for t in waiting if t.index > failed])
            loop = asyncio.get_running_loop()
            for turn in replay:
                turn.go = loop.create_future()
                turn.ran = loop.create_future()
                verdict, turn.verdict = turn.verdict, loop.create_future()
                verdict.set_result(_REPLAY)
            if not replay:
                await _cancel(self.tasks)  # only done ones are left: nothing to cancel
                return
            upto = failed
        self.transaction = None
        waiting = self._waiting(len(self.messages))
        try:
            await tx.commit()
        except Exception as exc:
            for turn in waiting:
                turn.verdict.set_result(exc)
        else:
            for turn in waiting:
                turn.verdict.set_result(None)
        if self.running:  # the pipelines return their outcomes
            self.finished = asyncio.get_running_loop().create_future()
            await self.finished

    async def _pipeline(self, turn: _Turn) -> Outcome:
        # What a done callback and a final gather did, said from inside the task
        # (two turns of the loop fewer per delivery): it ended, and the last one
        # wakes the batch. Every task runs this far: each is awaited (``ran``)
        # before the next starts, and a cancelled one is cancelled once started.
        _TURN.set(turn)
        try:
            return await self.consumer._chain(
                self.messages[turn.index], ConsumeContext(self.consumer.name)
            )
        finally:
            turn.ended()
            self.running -= 1
            finished = self.finished
            if not self.running and finished is not None and not finished.done():
                finished.set_result(None)

    async def abandon(self) -> None:
        """Cancelled (the caller's deadline) or broken: nothing of the batch is kept."""
        tx, self.transaction = self.transaction, None
        await _cancel(self.tasks)
        if tx is not None:
            await tx.rollback()


async def _cancel(tasks: Sequence[asyncio.Task[Outcome] | None]) -> None:
    """Cancel the pipelines still running (not tried: the caller retries them) and wait."""
    running = [t for t in tasks if t is not None and not t.done()]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


_TURN: contextvars.ContextVar[_Turn | None] = contextvars.ContextVar(
    "cqrs_ddd_consumer_turn", default=None
)


async def _in_producer_context(
    message: IncomingMessage, context: ConsumeContext, call_next: ConsumeNext
) -> Outcome:
    """Without a tracing SDK: the producer's context is current while the delivery is
    processed (what a non-recording CONSUMER span would make current), so that what
    the handler sends carries it on; no span, no attributes."""
    if not message.trace_context:
        return await call_next(message, context)
    parent = propagate.extract(message.trace_context)
    if not trace.get_current_span(parent).get_span_context().is_valid:
        return await call_next(message, context)
    token = otel_context.attach(parent)
    try:
        return await call_next(message, context)
    finally:
        otel_context.detach(token)


class _DebugGate:
    """Whether structlog's configuration emits DEBUG for the consumer's logger, asked
    again only when the configuration changed (compared by identity). A logger class
    without ``is_enabled_for`` (stdlib-backed: its level may change at any time) is
    always handed the event, and filters it itself."""

    __slots__ = ("_factory", "_on", "_processors", "_wrapper")

    def __init__(self) -> None:
        self._wrapper: object = None
        self._factory: object = None
        self._processors: object = None
        self._on = True

    def __call__(self) -> bool:
        config = structlog.get_config()
        wrapper, factory, processors = (
            config["wrapper_class"],
            config["logger_factory"],
            config["processors"],
        )
        if (
            wrapper is not self._wrapper
            or factory is not self._factory
            or (processors is not self._processors)
        ):
            check = getattr(wrapper, "is_enabled_for", None)
            self._on = not callable(check) or bool(_log.bind().is_enabled_for(logging.DEBUG))
            self._wrapper, self._factory, self._processors = wrapper, factory, processors
        return self._on


_debug_enabled = _DebugGate()


def _link(step: ConsumerMiddleware, call_next: ConsumeNext) -> ConsumeNext:
    def run(message: IncomingMessage, context: ConsumeContext) -> Awaitable[Outcome]:
        return step(message, context, call_next)

    return run
