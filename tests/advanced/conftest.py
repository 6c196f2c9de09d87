"""Fixtures for the advanced tests: a fresh in-memory world per test."""

from __future__ import annotations

import pytest

from tests.advanced.domain import World


@pytest.fixture
def world() -> World:
    return World()
