"""Redaction of secret-looking keys, whatever their spelling or depth."""

from __future__ import annotations

import pytest

from cqrs_ddd_core.telemetry import REDACTED, Redactor, is_secret_key, redact


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "Password",
        "user_password",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refreshToken",
        "api_key",
        "apiKey",
        "X-Api-Key",
        "authorization",
        "Authorization",
        "credentials",
        "private_key",
        "privateKey",
        "cookie",
        "aws_access_key_id",
    ],
)
def test_secret_looking_keys_are_recognised(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["author", "amount", "order_id", "email", "description"])
def test_ordinary_keys_are_not(key: str) -> None:
    assert not is_secret_key(key)


def test_non_string_keys_are_never_secret() -> None:
    assert not is_secret_key(3)


def test_redaction_is_recursive_and_leaves_the_input_alone() -> None:
    value = {
        "user": {"name": "ada", "password": "p", "keys": [{"api_key": "k", "id": 1}]},
        "items": ({"secret": "s"}, "plain"),
        "amount": 3,
    }

    redacted = redact(value)

    assert redacted == {
        "user": {"name": "ada", "password": REDACTED, "keys": [{"api_key": REDACTED, "id": 1}]},
        "items": [{"secret": REDACTED}, "plain"],
        "amount": 3,
    }
    assert value["user"]["password"] == "p"  # type: ignore[index]


def test_a_redactor_takes_extra_markers() -> None:
    redactor = Redactor(extra_markers=["iban"])

    assert redactor({"IBAN": "DE00", "password": "x", "name": "n"}) == {
        "IBAN": REDACTED,
        "password": REDACTED,
        "name": "n",
    }
    assert "iban" in repr(redactor)
