"""The per-dispatch context and the context variables that carry it.

A :class:`DispatchContext` is created for every ``send``/``query`` and handed
to each middleware. It is also published in a context variable for the
duration of the dispatch, so a command sent from inside a handler (or a saga
step) finds its parent: it joins the parent's unit of work, inherits the
correlation id and takes the parent's message id as its causation id.

Everything runs in the caller's task (``call_next`` is awaited, never
scheduled), so context variables set by an outer middleware are visible to
the handler.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from cqrs_ddd_core.domain.aggregate import AggregateRoot
    from cqrs_ddd_core.domain.messages import DomainEvent, Message
    from cqrs_ddd_core.persistence.ports import UnitOfWork
    from cqrs_ddd_core.persistence.records import StepTiming

__all__ = [
    "DispatchContext",
    "ambient_correlation_id",
    "correlation_scope",
    "current_context",
    "current_uow",
]

MessageKind = Literal["command", "query"]

_current: ContextVar[DispatchContext | None] = ContextVar("cqrs_dispatch_context", default=None)
_ambient_correlation: ContextVar[str | None] = ContextVar("cqrs_correlation_id", default=None)
_ambient_causation: ContextVar[str | None] = ContextVar("cqrs_causation_id", default=None)
# ``type_name()`` per message class, looked up once: it is a stable name, and a
# classmethod call on every dispatch costs more than a dict lookup.
_type_names: dict[type, str] = {}


class DispatchContext:
    """What travels with one message through the pipeline.

    Attributes:
        message: The command or query being dispatched.
        kind: ``"command"`` or ``"query"``.
        message_id: The message's id.
        message_type: The message's type name.
        correlation_id: Shared by every message of one business flow: the
            message's own, else the parent's or the ambient one, else (a root
            message starting a flow) the message's id.
        causation_id: The id of the message that caused this one, if any.
        uow: The unit of work, once a unit-of-work middleware opened or joined one.
        ordinals: How many events with derived ids each ``(message id,
            aggregate type, aggregate id)`` got in this unit-of-work attempt,
            shared by every dispatch that joined it; the ordinal of the next
            derived event id (:func:`~cqrs_ddd_core._ids.derived_id`) is one
            more. A fresh mapping each time a unit of work is opened (a
            retry runs in a new one, so it derives the same ids again);
            ``None`` outside a unit of work.
        metadata: Free-form values middlewares and handlers share (actor, tenant...).
        parent: The dispatch this one was sent from, if any.
        events: The events this dispatch produced (set when the handler returns).
        recorded: The ``(aggregate, event)`` pairs recorded with
            ``AggregateRoot.record_event`` while this command's handler ran
            (``None`` until the first); the mediator adds those the handler
            did not return to the response, so none is dropped silently.
        published: The root's list of events to hand to in-process event
            handlers once the root dispatch has committed, in persistence order.
        db_steps: The database reads this dispatch made (``StepTiming`` s, see
            :func:`~cqrs_ddd_core.persistence.steps.record_read`); None (nothing
            measured) unless tracing records this dispatch's span.
    """

    __slots__ = (
        "causation_id",
        "correlation_id",
        "db_steps",
        "events",
        "kind",
        "message",
        "message_id",
        "message_type",
        "metadata",
        "ordinals",
        "parent",
        "published",
        "recorded",
        "uow",
    )

    def __init__(
        self,
        message: Message,
        kind: MessageKind,
        *,
        parent: DispatchContext | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.message = message
        self.kind = kind
        self.message_id = message.message_id
        message_class = type(message)
        try:
            self.message_type = _type_names[message_class]
        except KeyError:
            self.message_type = _type_names[message_class] = message_class.type_name()
        self.parent = parent
        self.events: tuple[DomainEvent, ...] = ()
        self.recorded: list[tuple[AggregateRoot, DomainEvent]] | None = None
        self.db_steps: list[StepTiming] | None = None
        if parent is not None:
            self.correlation_id: str = message.correlation_id or parent.correlation_id
            self.causation_id: str | None = parent.message_id
            # A nested command joins the parent's transaction; a query only reads.
            self.uow: UnitOfWork | None = parent.uow
            # Counted per unit of work: the same mapping as the parent's.
            self.ordinals: dict[tuple[str, str, str], int] | None = parent.ordinals
            # Copied (the caller's mapping stays the caller's).
            self.metadata: dict[str, Any] = (
                {**parent.metadata, **metadata} if metadata else dict(parent.metadata)
            )
            self.published: list[list[DomainEvent]] = parent.published
        else:
            # A root message with no correlation id starts a flow: its own id names
            # the flow (the usual correlation/causation convention), and no new
            # random id is drawn on every dispatch.
            self.correlation_id = (
                message.correlation_id or _ambient_correlation.get() or message.message_id
            )
            self.causation_id = _ambient_causation.get()
            self.uow = None
            self.ordinals = None
            self.metadata = dict(metadata) if metadata else {}
            self.published = []

    def forget_recorded(self, events: Iterable[DomainEvent]) -> None:
        """Stop tracking ``events`` as recorded and not yet persisted.

        For code that persists recorded events itself (the orchestrator's
        ``persist_events``): the mediator then does not add them to the
        response a second time.
        """
        recorded = self.recorded
        if recorded:
            ids = {event.event_id for event in events}
            self.recorded = [pair for pair in recorded if pair[1].event_id not in ids]

    @property
    def is_nested(self) -> bool:
        """True when this message was sent from inside another dispatch."""
        return self.parent is not None

    def __repr__(self) -> str:
        return (
            f"DispatchContext({self.kind} {self.message_type} id={self.message_id} "
            f"correlation={self.correlation_id} causation={self.causation_id})"
        )


def current_context() -> DispatchContext | None:
    """The dispatch running in this task, if any."""
    return _current.get()


def current_uow() -> UnitOfWork | None:
    """The unit of work of the dispatch running in this task, if any."""
    ctx = _current.get()
    return None if ctx is None else ctx.uow


def ambient_correlation_id() -> str | None:
    """The correlation id set by :func:`correlation_scope`, if any."""
    return _ambient_correlation.get()


@contextmanager
def correlation_scope(correlation_id: str, causation_id: str | None = None) -> Iterator[str]:
    """Make ``correlation_id`` (and ``causation_id``) the default for messages
    sent inside the block that have no parent dispatch.

    Typical uses: a web middleware opens a scope with the request id; the
    mediator opens one around in-process event handlers, with the event's id
    as the causation id of the commands they send.
    """
    token = _ambient_correlation.set(correlation_id)
    cause_token = _ambient_causation.set(causation_id)
    try:
        yield correlation_id
    finally:
        _ambient_causation.reset(cause_token)
        _ambient_correlation.reset(token)
