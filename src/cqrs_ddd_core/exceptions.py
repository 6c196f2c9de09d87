"""Errors raised by the core package.

Every error the project raises derives from :class:`CqrsDddError`, so one
``except CqrsDddError`` catches them all. The tree::

    CqrsDddError
    ├── ConfigurationError
    │   ├── PipelineConfigurationError      (placement constraint violated)
    │   ├── PipelineFrozenError             (change after the pipeline was built)
    │   ├── HandlerRegistrationError        (conflicting or invalid registration)
    │   └── MissingExtraError               (an optional dependency is not installed;
    │                                        names the extra; also a ModuleNotFoundError;
    │                                        defined in :mod:`cqrs_ddd_core.extras`)
    ├── DispatchError
    │   ├── HandlerNotFoundError            (no handler for a message type)
    │   ├── MessageValidationError          (field errors; nothing was persisted)
    │   └── CommandRefusedError             (a business rule refused the command)
    └── PersistenceError
        ├── ConcurrencyError                (stream, expected and actual version)
        ├── SerializationError              (a payload that cannot be stored)
        │   └── StorageLimitError           (a field breaks an input rule: too long,
        │                                    NUL, lone surrogate; names field and limit)
        ├── CommitOutcomeUnknownError       (the commit may or may not have happened;
        │                                    carries the message and event ids)
        ├── UnitOfWorkError                 (misuse: no unit of work, closed, ...)
        └── RecordNotFoundError             (repository lookup found nothing)

The advanced package hangs its event-sourcing errors under ``CqrsDddError`` too
(see :mod:`cqrs_ddd_advanced_core.domain.exceptions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CommandRefusedError",
    "CommitOutcomeUnknownError",
    "ConcurrencyError",
    "ConfigurationError",
    "CqrsDddError",
    "DispatchError",
    "FieldError",
    "HandlerNotFoundError",
    "HandlerRegistrationError",
    "MessageValidationError",
    "PersistenceError",
    "PipelineConfigurationError",
    "PipelineFrozenError",
    "RecordNotFoundError",
    "SerializationError",
    "StorageLimitError",
    "UnitOfWorkError",
]


class CqrsDddError(Exception):
    """Root of every error raised by this project."""


class ConfigurationError(CqrsDddError):
    """The library was wired in a way that cannot work."""


class PipelineConfigurationError(ConfigurationError):
    """A middleware's placement constraint is violated by the listed order.

    Attributes:
        order: The names of the middlewares in the order they were listed.
        offender: The name of the middleware whose constraint failed.
    """

    def __init__(self, message: str, *, order: Sequence[str], offender: str) -> None:
        super().__init__(message)
        self.order = tuple(order)
        self.offender = offender


class PipelineFrozenError(ConfigurationError):
    """Something tried to change a pipeline after it was built."""


class HandlerRegistrationError(ConfigurationError):
    """A handler registration conflicts with an existing one or is invalid.

    Attributes:
        message_type: The message class the registration was for.
    """

    def __init__(self, message: str, *, message_type: type) -> None:
        super().__init__(message)
        self.message_type = message_type


class DispatchError(CqrsDddError):
    """A message could not be dispatched."""


class HandlerNotFoundError(DispatchError):
    """No handler is registered for the message's type.

    Attributes:
        message_type: The class of the message that had no handler.
    """

    def __init__(self, message_type: type, kind: str) -> None:
        super().__init__(f"No {kind} handler is registered for {message_type.__qualname__}")
        self.message_type = message_type
        self.kind = kind


@dataclass(frozen=True, slots=True)
class FieldError:
    """One failed field check: where, what, and a machine-readable type."""

    loc: tuple[str | int, ...]
    msg: str
    type: str = "value_error"


class MessageValidationError(DispatchError):
    """The message failed validation before any transaction opened.

    Attributes:
        message_type: The class of the invalid message.
        errors: The field errors, in the order they were found.
    """

    def __init__(self, message_type: type, errors: Sequence[FieldError]) -> None:
        self.message_type = message_type
        self.errors = tuple(errors)
        details = "; ".join(f"{'.'.join(map(str, e.loc)) or '<message>'}: {e.msg}" for e in errors)
        super().__init__(f"{message_type.__qualname__} is invalid: {details}")


class CommandRefusedError(DispatchError):
    """A business rule refused the command (an order already closed...): an expected outcome.

    Derive the domain's refusals from it. Tracing, logging and metrics report
    it as ``cqrs.outcome="refused"``, a result and not an error (no ERROR
    status, no traceback); see ``docs/observability.md``, "Refusals".
    """


class PersistenceError(CqrsDddError):
    """Storing or loading failed."""


class ConcurrencyError(PersistenceError):
    """Another writer changed the stream or record first.

    Attributes:
        stream: The stream (``"<aggregate type>:<aggregate id>"``) or record key.
        expected_version: The version the writer expected to find.
        actual_version: The version actually stored, when known.
    """

    def __init__(self, stream: str, expected_version: int, actual_version: int | None) -> None:
        actual = "unknown" if actual_version is None else str(actual_version)
        super().__init__(
            f"Concurrency conflict on {stream}: expected version {expected_version}, found {actual}"
        )
        self.stream = stream
        self.expected_version = expected_version
        self.actual_version = actual_version


class SerializationError(PersistenceError):
    """A payload cannot be serialised for storage; nothing was written.

    Attributes:
        type_name: The event or record type whose payload failed.
    """

    def __init__(self, type_name: str, reason: str) -> None:
        super().__init__(f"Cannot serialise {type_name}: {reason}")
        self.type_name = type_name


class StorageLimitError(SerializationError):
    """A value breaks an input rule every backend applies; nothing was written.

    Checked before any SQL (see :mod:`cqrs_ddd_core.persistence.limits`), so
    SQLite, PostgreSQL and the in-memory adapters refuse the same input the
    same way.

    Attributes:
        field: The offending field (``aggregate_id``, ``event_type``, ...).
        limit: The rule, e.g. ``"at most 255 characters"`` or ``"no NUL"``.
        type_name: The event or record type being stored.
    """

    def __init__(self, type_name: str, *, field: str, limit: str, detail: str) -> None:
        super().__init__(type_name, f"{field} {detail} (limit: {limit})")
        self.field = field
        self.limit = limit


class CommitOutcomeUnknownError(PersistenceError):
    """The commit was sent but its outcome could not be learnt.

    The connection was lost (or the deadline passed) after the commit left the
    process and before the database answered, and looking the event ids up
    again did not settle it. The writes are either all stored or all absent,
    never half. Appends are idempotent by event id, so sending the same
    command again (same message id, same event ids) is safe.

    Attributes:
        message_id: The id of the command whose commit is in doubt, when known.
        event_ids: The ids of the events the commit carried.
    """

    def __init__(
        self,
        message: str,
        *,
        message_id: str | None = None,
        event_ids: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message_id = message_id
        self.event_ids = tuple(event_ids)


class UnitOfWorkError(PersistenceError):
    """A unit of work was missing or used after it ended."""


class RecordNotFoundError(PersistenceError):
    """A repository found no record with the given key.

    Attributes:
        key: The key that was looked up.
    """

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(f"No {kind} with id {key!r}")
        self.kind = kind
        self.key = key
