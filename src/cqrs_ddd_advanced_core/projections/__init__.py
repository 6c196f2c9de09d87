"""Projections (read models) built from the events with exactly-once checkpoints.

A :class:`Projection` is a name and event handlers; a :class:`ProjectionRunner`
catches it up from its checkpoint by global position and follows new events,
storing the checkpoint in the same transaction as the projection's writes.
See ``docs/tutorials/projections.md``.
"""

from __future__ import annotations

from cqrs_ddd_advanced_core.projections.projection import (
    Projection,
    ProjectionHandler,
    ProjectionReset,
)
from cqrs_ddd_advanced_core.projections.runner import ProjectionRunner, ProjectionStatus

__all__ = [
    "Projection",
    "ProjectionHandler",
    "ProjectionReset",
    "ProjectionRunner",
    "ProjectionStatus",
]
