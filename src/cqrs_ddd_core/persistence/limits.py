"""The input rules every backend applies, checked before any SQL is sent.

One place decides what can be stored, so the in-memory adapters, SQLite and
PostgreSQL refuse the same input with the same typed error
(:class:`~cqrs_ddd_core.exceptions.StorageLimitError`, naming the field and
the limit) instead of whatever each database or driver happens to raise:

* names and ids (``aggregate_type``, ``aggregate_id``, ``event_type``,
  ``event_id``, ``correlation_id``, ``causation_id``, ``message_type``...):
  a non-empty string (ids that may be absent: ``None`` or non-empty) of at
  most :data:`MAX_NAME_LENGTH` characters (the ``VARCHAR(255)`` columns);
* no NUL character (PostgreSQL text cannot hold it);
* no lone surrogate (``"\\ud800"``: not encodable as UTF-8, so neither
  SQLite nor PostgreSQL can store it), in names and in JSON text alike.

The checks are C-level string operations (length, ``in``, ``isascii``), a
fraction of a microsecond per event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from cqrs_ddd_core.exceptions import StorageLimitError

if TYPE_CHECKING:
    from cqrs_ddd_core.persistence.records import OutboxMessage

__all__ = [
    "MAX_NAME_LENGTH",
    "check_json_text",
    "check_name",
    "check_outbox_message",
    "check_stream",
    "names_ok",
]

MAX_NAME_LENGTH: Final = 255
"""Characters in a name or id column (``VARCHAR(255)`` on PostgreSQL)."""

_LENGTH: Final = f"at most {MAX_NAME_LENGTH} characters"
_NO_NUL: Final = "no NUL character"
_UTF8: Final = "valid Unicode (no lone surrogate)"


def check_name(type_name: str, field: str, value: object, *, optional: bool = False) -> None:
    """Refuse a name or id that some backend could not store as given.

    Args:
        type_name: The event or record type (for the error message).
        field: The field's name.
        value: Its value.
        optional: ``None`` is allowed (a nullable column).

    Raises:
        StorageLimitError: not a non-empty string, too long, NUL, lone surrogate.
    """
    if (value is not None and names_ok(value)) or (value is None and optional):
        return  # the common case: a plain ASCII name (C-level checks only)
    _refuse_name(type_name, field, value, optional)


def names_ok(*values: object) -> bool:
    """Whether every value is a plain ASCII name that passes :func:`check_name`
    (``None`` too, as if optional): one call for the common case; when it
    says ``False``, check each with :func:`check_name` for the precise error."""
    for value in values:
        if value is None:
            continue
        if not (
            value.__class__ is str
            and 0 < len(value) <= MAX_NAME_LENGTH
            and value.isascii()
            and "\x00" not in value
        ):
            return False
    return True


def _refuse_name(type_name: str, field: str, value: object, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise StorageLimitError(
            type_name, field=field, limit="a non-empty string", detail=f"is {value!r}"
        )
    if len(value) > MAX_NAME_LENGTH:
        raise StorageLimitError(
            type_name, field=field, limit=_LENGTH, detail=f"is {len(value)} characters long"
        )
    if "\x00" in value:
        raise StorageLimitError(type_name, field=field, limit=_NO_NUL, detail="contains NUL")
    if not value.isascii():
        _check_encodable(type_name, field, value)


def check_json_text(type_name: str, field: str, text: str) -> None:
    """Refuse JSON text holding a lone surrogate (NUL is escaped in JSON already).

    Raises:
        StorageLimitError: the text cannot be encoded as UTF-8.
    """
    if not text.isascii():
        _check_encodable(type_name, field, text)


def _check_encodable(type_name: str, field: str, value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start]
        raise StorageLimitError(
            type_name,
            field=field,
            limit=_UTF8,
            detail=f"holds a lone surrogate U+{ord(bad):04X} at index {exc.start}",
        ) from None


def check_stream(type_name: str, aggregate_type: str, aggregate_id: str) -> None:
    """The rules for a stream's (or a state row's) key.

    Raises:
        StorageLimitError: see :func:`check_name`.
    """
    global _stream_ok
    last_type, last_id = _stream_ok
    if aggregate_type is last_type and aggregate_id is last_id:
        # The key passed a moment ago (a command saves an aggregate's state and
        # appends its events: the same two string objects, checked twice).
        return
    if (
        aggregate_type is not None
        and aggregate_id is not None
        and names_ok(aggregate_type, aggregate_id)
    ):
        _stream_ok = (aggregate_type, aggregate_id)
        return
    check_name(type_name, "aggregate_type", aggregate_type)
    check_name(type_name, "aggregate_id", aggregate_id)


# The last stream key check_stream passed (strings are immutable: the same
# objects pass again); at first a key no input can be.
_NOTHING = object()
_stream_ok: tuple[object, object] = (_NOTHING, _NOTHING)


def check_outbox_message(message: OutboxMessage, payload_json: str) -> None:
    """The rules for one outbox message (its names, ids and payload text).

    Raises:
        StorageLimitError: see :func:`check_name` and :func:`check_json_text`.
    """
    if (
        message.message_id is not None
        and message.message_type is not None
        and names_ok(
            message.message_id,
            message.message_type,
            message.aggregate_type,
            message.aggregate_id,
            message.correlation_id,
            message.causation_id,
        )
        and payload_json.isascii()
    ):
        return  # the common case, in one call; else the precise error below
    kind = message.message_type if isinstance(message.message_type, str) else "OutboxMessage"
    check_name(kind, "message_id", message.message_id)
    check_name(kind, "message_type", message.message_type)
    check_name(kind, "aggregate_type", message.aggregate_type, optional=True)
    check_name(kind, "aggregate_id", message.aggregate_id, optional=True)
    check_name(kind, "correlation_id", message.correlation_id, optional=True)
    check_name(kind, "causation_id", message.causation_id, optional=True)
    check_json_text(kind, "payload", payload_json)
