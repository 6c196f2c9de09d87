"""Decorators that configure event sourcing declaratively."""

from __future__ import annotations

from cqrs_ddd_advanced_core.decorators.event_sourcing import (
    aggregate_type_name,
    is_non_event_sourced,
    non_event_sourced,
)

__all__ = ["aggregate_type_name", "is_non_event_sourced", "non_event_sourced"]
