"""Sagas: long-running processes across aggregates and services.

A saga is an event handler with state. It is started by an event, finds
later events by a correlation key they carry, sends one command per step
through the mediator (joining the unit of work of the transition that runs
the step), and undoes the started steps in reverse order when a step fails.
Its state commits with the step's effects; deadlines are stored and fired by
:class:`SagaWorker`, which also recovers sagas a crash left mid-way.

Define one with :class:`SagaBuilder`, run them with :class:`SagaManager`;
store them with ``cqrs_ddd_advanced_core.adapters.memory.InMemorySagaStore``
or ``cqrs_ddd_advanced_core.adapters.sqlalchemy.SQLAlchemySagaStore``. See
``docs/tutorials/sagas.md``.
"""

from __future__ import annotations

from cqrs_ddd_advanced_core.sagas.commands import (
    AdvanceSaga,
    DeliverSagaEvent,
    FireSagaTimeout,
    ResumeSaga,
    StartSaga,
)
from cqrs_ddd_advanced_core.sagas.definition import SagaBuilder, SagaDefinition, SagaStep
from cqrs_ddd_advanced_core.sagas.manager import SagaManager
from cqrs_ddd_advanced_core.sagas.ports import SagaStore
from cqrs_ddd_advanced_core.sagas.state import SagaState, SagaStatus, saga_id_for
from cqrs_ddd_advanced_core.sagas.worker import SagaWorker

__all__ = [
    "AdvanceSaga",
    "DeliverSagaEvent",
    "FireSagaTimeout",
    "ResumeSaga",
    "SagaBuilder",
    "SagaDefinition",
    "SagaManager",
    "SagaState",
    "SagaStatus",
    "SagaStep",
    "SagaStore",
    "SagaWorker",
    "StartSaga",
    "saga_id_for",
]
