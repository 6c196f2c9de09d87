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
# The ambient (correlation id, causation id) of ``correlation_scope``: one
# variable for the pair, so a root dispatch reads it with a single ``get``.
_ambient: ContextVar[tuple[str, str | None] | None] = ContextVar("cqrs_ambient_ids", default=None)
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
        message_id = self.message_id = message.message_id
        message_class = type(message)
        try:
            self.message_type = _type_names[message_class]
        except KeyError:
            self.message_type = _type_names[message_class] = message_class.type_name()
        self.parent = parent
        self.events: tuple[DomainEvent, ...] = ()
        self.recorded: list[tuple[AggregateRoot, DomainEvent]] | None = None
        self.db_steps: list[StepTiming] | None = None
        if parent is None:
            # A root message with no correlation id starts a flow: its own id names
            # the flow (the usual correlation/causation convention), and no new
            # random id is drawn on every dispatch.
            ambient = _ambient.get()
            if ambient is None:
                self.correlation_id: str = message.correlation_id or message_id
                self.causation_id: str | None = None
            else:
                self.correlation_id = message.correlation_id or ambient[0] or message_id
                self.causation_id = ambient[1]
            self.uow: UnitOfWork | None = None
            self.ordinals: dict[tuple[str, str, str], int] | None = None
            self.metadata: dict[str, Any] = dict(metadata) if metadata else {}
            self.published: list[list[DomainEvent]] = []
        else:
            self.correlation_id = message.correlation_id or parent.correlation_id
            self.causation_id = parent.message_id
            # A nested command joins the parent's transaction; a query only reads.
            self.uow = parent.uow
            # Counted per unit of work: the same mapping as the parent's.
            self.ordinals = parent.ordinals
            # Copied (the caller's mapping stays the caller's).
            self.metadata = {**parent.metadata, **metadata} if metadata else dict(parent.metadata)
            self.published = parent.published

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


_new_context = DispatchContext.__new__


def _root_context(
    message: Message, kind: MessageKind, metadata: Mapping[str, Any] | None
) -> DispatchContext:
    """``DispatchContext(message, kind, metadata=metadata)`` for a root dispatch, made faster.

    The mediator's hot path: a plain function filling the slots, without the
    class call and keyword parsing of the constructor (about a third of the
    cost). It must set what ``__init__`` sets for ``parent=None``; a test
    compares the two, slot by slot.
    """
    self = _new_context(DispatchContext)
    self.message = message
    self.kind = kind
    message_id = self.message_id = message.message_id
    message_class = type(message)
    try:
        self.message_type = _type_names[message_class]
    except KeyError:
        self.message_type = _type_names[message_class] = message_class.type_name()
    self.parent = None
    self.events = ()
    self.recorded = None
    self.db_steps = None
    ambient = _ambient.get()
    if ambient is None:
        self.correlation_id = message.correlation_id or message_id
        self.causation_id = None
    else:
        self.correlation_id = message.correlation_id or ambient[0] or message_id
        self.causation_id = ambient[1]
    self.uow = None
    self.ordinals = None
    self.metadata = dict(metadata) if metadata else {}
    self.published = []
    return self


def current_context() -> DispatchContext | None:
    """The dispatch running in this task, if any."""
    return _current.get()


def current_uow() -> UnitOfWork | None:
    """The unit of work of the dispatch running in this task, if any."""
    ctx = _current.get()
    return None if ctx is None else ctx.uow


def ambient_correlation_id() -> str | None:
    """The correlation id set by :func:`correlation_scope`, if any."""
    ambient = _ambient.get()
    return None if ambient is None else ambient[0]


@contextmanager
def correlation_scope(correlation_id: str, causation_id: str | None = None) -> Iterator[str]:
    """Make ``correlation_id`` (and ``causation_id``) the default for messages
    sent inside the block that have no parent dispatch.

    Typical uses: a web middleware opens a scope with the request id; the
    mediator opens one around in-process event handlers, with the event's id
    as the causation id of the commands they send.
    """
    token = _ambient.set((correlation_id, causation_id))
    try:
        yield correlation_id
    finally:
        _ambient.reset(token)
