"""The composable middleware pipeline."""

from __future__ import annotations

from cqrs_ddd_core.pipeline.insert import insert_middlewares
from cqrs_ddd_core.pipeline.pipeline import (
    CallNext,
    Middleware,
    Pipeline,
    Placement,
    middleware_name,
    placement,
)

__all__ = [
    "CallNext",
    "Middleware",
    "Pipeline",
    "Placement",
    "insert_middlewares",
    "middleware_name",
    "placement",
]
