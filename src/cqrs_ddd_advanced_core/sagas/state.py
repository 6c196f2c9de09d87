"""A saga instance's stored state: where it is, what it did, what it saw."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cqrs_ddd_core.domain.messages import utc_now

__all__ = [
    "OPEN_STATUSES",
    "SAGA_ROW_TYPE",
    "TERMINAL_STATUSES",
    "SagaState",
    "SagaStatus",
    "due_sagas",
    "saga_id_for",
    "select_sagas",
]

SAGA_ROW_TYPE = "cqrs.saga"
"""The ``aggregate_type`` the stores keep saga rows under (conflicts name it too)."""


class SagaStatus(StrEnum):
    """The life of a saga.

    ``running`` → ``completed``; or, when a step fails, ``running`` →
    ``compensating`` → ``compensated``; ``failed`` when a compensation itself
    failed (the saga needs a person: ``cqrs-ddd sagas resume`` retries it).
    """

    RUNNING = "running"
    COMPLETED = "completed"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    FAILED = "failed"


OPEN_STATUSES = frozenset({SagaStatus.RUNNING, SagaStatus.COMPENSATING})
"""Statuses of a saga that still has work to do (or an event to wait for)."""
TERMINAL_STATUSES = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED})
"""Statuses nothing moves a saga out of, except a ``resume`` of a failed one."""


def saga_id_for(saga_type: str, key: str) -> str:
    """The id of the saga of ``saga_type`` correlated by ``key``.

    The id is derived, not drawn: an event correlated to ``key`` finds its
    saga by id, with no lookup table, and a start delivered twice finds the
    saga it created the first time.
    """
    return f"{saga_type}:{key}"


class SagaState(BaseModel):
    """One saga instance, as stored.

    Attributes:
        saga_id: ``"<saga type>:<key>"`` (see :func:`saga_id_for`).
        saga_type: The definition's name.
        key: The correlation key its events carry.
        status: See :class:`SagaStatus`.
        step: Index of the step being run or awaited (``len(steps)`` once done).
        waiting: True while the current step's command has committed and the
            saga waits for its outcome event.
        data: The saga's data (the definition's data model, as JSON).
        version: Bumped by every stored change; a save expects the version the
            state was loaded at (optimistic check).
        started_steps: Names of the steps whose command committed, in order
            (an awaited step is started before its outcome is known); these
            are the steps a compensation undoes.
        completed_steps: Names of the steps that succeeded, in order.
        compensated_steps: Names of the steps compensated, in the order run.
        processed_event_ids: Ids of the events this saga has handled (a
            redelivered one changes nothing).
        deadline_at: When the awaited step times out, if it has a timeout.
        error: Why the saga compensates or failed.
        correlation_id: The flow's correlation id (the starting event's).
        created_at: When it started.
        updated_at: When it was last stored.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    saga_id: str
    saga_type: str
    key: str
    status: SagaStatus = SagaStatus.RUNNING
    step: int = 0
    waiting: bool = False
    data: dict[str, Any] = Field(default_factory=dict)
    version: int = 0
    started_steps: list[str] = Field(default_factory=list)
    completed_steps: list[str] = Field(default_factory=list)
    compensated_steps: list[str] = Field(default_factory=list)
    processed_event_ids: list[str] = Field(default_factory=list)
    deadline_at: datetime | None = None
    error: str | None = None
    correlation_id: str | None = None
    created_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)

    @property
    def is_terminal(self) -> bool:
        """True once completed, compensated or failed."""
        return self.status in TERMINAL_STATUSES

    def has_processed(self, event_id: str) -> bool:
        """True when the event with ``event_id`` was handled already."""
        return event_id in self.processed_event_ids


def select_sagas(
    states: Iterable[SagaState],
    *,
    saga_type: str | None = None,
    statuses: Collection[SagaStatus] | None = None,
    limit: int = 1000,
) -> list[SagaState]:
    """``states`` of ``saga_type`` with one of ``statuses``, oldest first, at most ``limit``.

    The stores share it, so that every adapter answers a listing the same way.
    """
    wanted = None if statuses is None else frozenset(statuses)
    found = [
        s
        for s in states
        if (saga_type is None or s.saga_type == saga_type)
        and (wanted is None or s.status in wanted)
    ]
    found.sort(key=lambda s: (s.created_at, s.saga_id))
    return found[:limit]


def due_sagas(states: Iterable[SagaState], now: datetime, *, limit: int = 100) -> list[SagaState]:
    """Open ``states`` waiting on a step whose deadline is at or before ``now``, oldest first."""
    found = [
        s
        for s in states
        if s.status in OPEN_STATUSES
        and s.waiting
        and s.deadline_at is not None
        and s.deadline_at <= now
    ]
    found.sort(key=lambda s: (s.deadline_at or now, s.saga_id))
    return found[:limit]
