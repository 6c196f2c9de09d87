"""The input rules module itself: each rule, each field, the error's attributes."""

from __future__ import annotations

from typing import Any

import pytest

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
    assert in_outbox.value.field == "payload"


def test_names_at_the_limit_and_non_ascii_text_pass() -> None:
    check_name("T", "aggregate_id", "é" * MAX_NAME_LENGTH)
    check_stream("T", "Order", "ö-1")
    check_json_text("T", "payload", '{"k": "🎉 \\u0000"}')
    with pytest.raises(StorageLimitError, match="is None"):
        check_name("T", "aggregate_id", None)
