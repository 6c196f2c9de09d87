"""One root error, subtrees by concern, context carried as attributes."""

from __future__ import annotations

import inspect

import pytest

import cqrs_ddd_core
from cqrs_ddd_core import exceptions
from cqrs_ddd_core.exceptions import (
    ConcurrencyError,
    ConfigurationError,
    CqrsDddError,
    DispatchError,
    FieldError,
    HandlerNotFoundError,
    HandlerRegistrationError,
    MessageValidationError,
    PersistenceError,
    PipelineConfigurationError,
    PipelineFrozenError,
    RecordNotFoundError,
    SerializationError,
    UnitOfWorkError,
)
from tests.core.shop import PlaceOrder


@pytest.mark.parametrize(
    ("error", "parent"),
    [
        (ConfigurationError, CqrsDddError),
        (PipelineConfigurationError, ConfigurationError),
        (PipelineFrozenError, ConfigurationError),
        (HandlerRegistrationError, ConfigurationError),
        (DispatchError, CqrsDddError),
        (HandlerNotFoundError, DispatchError),
        (MessageValidationError, DispatchError),
        (PersistenceError, CqrsDddError),
        (ConcurrencyError, PersistenceError),
        (SerializationError, PersistenceError),
        (UnitOfWorkError, PersistenceError),
        (RecordNotFoundError, PersistenceError),
    ],
)
def test_each_error_sits_in_the_tree_the_module_docstring_draws(
    error: type[Exception], parent: type[Exception]
) -> None:
    assert error.__mro__[1] is parent
    assert error.__name__ in (exceptions.__doc__ or "")


def test_every_exception_class_of_the_module_is_exported_from_the_package_root() -> None:
    classes = {
        name
        for name, value in vars(exceptions).items()
        if inspect.isclass(value) and issubclass(value, Exception)
    }

    assert classes <= set(cqrs_ddd_core.__all__)
    assert classes <= set(exceptions.__all__)


def test_a_concurrency_error_with_an_unknown_actual_version_says_so() -> None:
    error = ConcurrencyError("Order:o-1", 3, None)

    assert str(error) == "Concurrency conflict on Order:o-1: expected version 3, found unknown"
    assert error.actual_version is None


def test_a_validation_error_lists_every_field_and_marks_whole_message_errors() -> None:
    error = MessageValidationError(
        PlaceOrder,
        [FieldError(("amount",), "too small"), FieldError((), "inconsistent", "model")],
    )

    assert str(error) == "PlaceOrder is invalid: amount: too small; <message>: inconsistent"
    assert error.errors[1].type == "model"
