"""The input rules module itself: each rule, each field, the error's attributes."""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import pytest

from cqrs_ddd_core.domain import DomainEvent
from cqrs_ddd_core.domain.messages import utc_now
from cqrs_ddd_core.exceptions import StorageLimitError
from cqrs_ddd_core.persistence import OutboxMessage
from cqrs_ddd_core.persistence.limits import (
    MAX_NAME_LENGTH,
    check_json_text,
    check_name,
    check_outbox_message,
    check_stream,
)
from cqrs_ddd_core.persistence.serialization import encode_append
from tests.support.accounts import Deposited


def message(**changes: Any) -> OutboxMessage:
    fields: dict[str, Any] = {
        "message_id": "m-1",
        "message_type": "Deposited",
        "payload": {},
        "created_at": utc_now(),
        **changes,
    }
    return OutboxMessage(**fields)


@pytest.mark.parametrize(
    "field",
    [
        "message_id",
        "message_type",
        "aggregate_type",
        "aggregate_id",
        "correlation_id",
        "causation_id",
    ],
)
@pytest.mark.parametrize(
    ("value", "limit"),
    [("x" * (MAX_NAME_LENGTH + 1), "at most 255 characters"), ("a\x00", "no NUL character")],
)
def test_every_name_of_an_outbox_message_is_checked(field: str, value: str, limit: str) -> None:
    with pytest.raises(StorageLimitError) as caught:
        check_outbox_message(message(**{field: value}), "{}")

    assert (caught.value.field, caught.value.limit) == (field, limit)
    expected_type = "Deposited" if field != "message_type" else value
    assert caught.value.type_name == expected_type


@pytest.mark.parametrize(
    "field", ["aggregate_type", "aggregate_id", "correlation_id", "causation_id"]
)
def test_the_optional_names_of_an_outbox_message_may_be_absent(field: str) -> None:
    check_outbox_message(message(**{field: None}), "{}")


@pytest.mark.parametrize("field", ["message_id", "message_type"])
def test_the_required_names_of_an_outbox_message_may_not_be_empty(field: str) -> None:
    with pytest.raises(StorageLimitError, match="a non-empty string") as caught:
        check_outbox_message(message(**{field: ""}), "{}")

    assert caught.value.field == field


def test_a_lone_surrogate_is_named_with_its_code_point_and_index() -> None:
    with pytest.raises(StorageLimitError) as caught:
        check_json_text("Deposited", "payload", '{"k": "ab\udc80"}')

    error = caught.value
    assert (error.type_name, error.field) == ("Deposited", "payload")
    assert str(error) == (
        "Cannot serialise Deposited: payload holds a lone surrogate U+DC80 at index 9 "
        "(limit: valid Unicode (no lone surrogate))"
    )
    with pytest.raises(StorageLimitError) as in_outbox:
        check_outbox_message(message(), '{"k": "\ud800"}')
    assert (in_outbox.value.type_name, in_outbox.value.field) == ("Deposited", "payload")


def test_names_at_the_limit_and_non_ascii_text_pass() -> None:
    check_name("T", "aggregate_id", "é" * MAX_NAME_LENGTH)
    check_stream("T", "Order", "ö-1")
    check_json_text("T", "payload", '{"k": "🎉 \\u0000"}')
    with pytest.raises(StorageLimitError, match="is None"):
        check_name("T", "aggregate_id", None)


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"event_id": "e" * 256}, "event_id", "event_id is 256 characters long"),
        ({"correlation_id": "c\x00"}, "correlation_id", "correlation_id contains NUL"),
        ({"causation_id": ""}, "causation_id", "causation_id is ''"),
        ({"metadata": {"k": "\ud800"}}, "metadata", "metadata holds a lone surrogate"),
    ],
)
def test_an_event_field_breaking_a_rule_is_named_with_its_type_and_what_is_wrong(
    changes: dict[str, Any], field: str, message: str
) -> None:
    event = Deposited(amount=1, **changes)

    with pytest.raises(StorageLimitError) as caught:
        encode_append("Account", "a-1", [event], 0)

    assert (caught.value.type_name, caught.value.field) == ("Deposited", field)
    assert str(caught.value).startswith(f"Cannot serialise Deposited: {message}")


@pytest.mark.parametrize(
    ("aggregate_type", "aggregate_id", "text"),
    [
        (
            "Account",
            "a\x00",
            "aggregate_id contains NUL (limit: no NUL",
        ),
        ("A\ud800", "a-1", "aggregate_type holds a lone surrogate"),
        (
            "Account",
            "",
            "aggregate_id is '' (limit: a non-empty string)",
        ),
    ],
)
def test_a_stream_key_error_names_the_event_type(
    aggregate_type: str, aggregate_id: str, text: str
) -> None:
    with pytest.raises(StorageLimitError) as caught:
        encode_append(aggregate_type, aggregate_id, [Deposited(amount=1)], 0)

    assert str(caught.value).startswith(f"Cannot serialise Deposited: {text}")


def test_an_outbox_message_whose_type_is_not_a_string_is_named_generically() -> None:
    with pytest.raises(StorageLimitError) as caught:
        check_outbox_message(message(message_type=7), "{}")

    assert (caught.value.type_name, caught.value.field) == ("OutboxMessage", "message_type")


def test_an_event_type_name_over_the_limit_is_named_as_the_type_too() -> None:
    class LongNamed(DomainEvent):
        event_type: ClassVar[str] = "E" * (MAX_NAME_LENGTH + 1)

    with pytest.raises(StorageLimitError) as caught:
        encode_append("Account", "a-1", [LongNamed()], 0)

    assert (caught.value.type_name, caught.value.field) == (LongNamed.event_type, "event_type")


@pytest.mark.parametrize(
    ("aggregate_type", "aggregate_id"),
    [("", ""), ("Account", ""), ("", "a-1"), (None, None), ("Account", "a\x00")],
)
def test_a_bad_stream_key_is_refused_even_right_after_a_good_one_passed(
    aggregate_type: Any, aggregate_id: Any
) -> None:
    """check_stream remembers the last key that passed; nothing else may slip through."""
    check_stream("Deposited", "Account", "a-1")
    check_stream("Deposited", "Account", "a-1")  # the remembered key, again

    with pytest.raises(StorageLimitError):
        check_stream("Deposited", aggregate_type, aggregate_id)
    with pytest.raises(StorageLimitError):  # and again: a refusal is not remembered
        check_stream("Deposited", aggregate_type, aggregate_id)


def test_an_empty_stream_key_is_refused_by_the_first_check_of_a_process() -> None:
    """Before any key passed, nothing is remembered (not even the empty string)."""
    from cqrs_ddd_core.persistence import limits

    importlib.reload(limits)  # the module as a new process has it

    with pytest.raises(StorageLimitError):
        limits.check_stream("Deposited", "", "")
