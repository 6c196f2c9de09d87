"""Fixtures for the core tests: fresh in-memory stores, a unit-of-work factory, a registry."""

from __future__ import annotations

import pytest

from cqrs_ddd_core.cqrs import HandlerRegistry
from tests.core.shop import Stores, UowFactory


@pytest.fixture
def stores() -> Stores:
    return Stores()


@pytest.fixture
def uow_factory() -> UowFactory:
    return UowFactory()


@pytest.fixture
def registry() -> HandlerRegistry:
    return HandlerRegistry()
