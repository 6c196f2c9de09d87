"""Saga telemetry: a span per step linked to its trigger, and the saga metrics.

Names (fixed; ``docs/observability.md`` lists them with their Prometheus
spellings):

* span ``saga.step`` (INTERNAL), attributes ``cqrs.saga.type``, ``cqrs.saga.id``,
  ``cqrs.saga.step``, ``cqrs.saga.action`` and ``cqrs.saga.trigger_event_id``,
  linked to the span of the event that triggered the step (its
  ``traceparent`` metadata, else the span current when it was delivered);
* counters ``cqrs.saga.started``, ``cqrs.saga.completed``,
  ``cqrs.saga.compensated``, ``cqrs.saga.failed`` (``{saga}``, by
  ``cqrs.saga.type``), counted when the transition commits;
* histogram ``cqrs.saga.step.duration`` (seconds, by type, step and outcome);
* gauge ``cqrs.saga.open`` (``{saga}``, by type): open sagas, as the
  :class:`~cqrs_ddd_advanced_core.sagas.SagaWorker` last counted them.

Only the OpenTelemetry API is used.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import propagate, trace
from opentelemetry.metrics import CallbackOptions, Observation

from cqrs_ddd_core.telemetry.api import get_meter, get_tracer
from cqrs_ddd_core.telemetry.names import (
    ATTR_OUTCOME,
    DURATION_BUCKETS,
    OUTCOME_ERROR,
    OUTCOME_SUCCESS,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from cqrs_ddd_core.domain.messages import DomainEvent

__all__ = [
    "ATTR_SAGA_ACTION",
    "ATTR_SAGA_ID",
    "ATTR_SAGA_STEP",
    "ATTR_SAGA_TRIGGER_EVENT_ID",
    "ATTR_SAGA_TYPE",
    "METRIC_SAGAS_COMPENSATED",
    "METRIC_SAGAS_COMPLETED",
    "METRIC_SAGAS_FAILED",
    "METRIC_SAGAS_OPEN",
    "METRIC_SAGAS_STARTED",
    "METRIC_SAGA_STEP_DURATION",
    "SPAN_SAGA_STEP",
    "SagaTelemetry",
    "StepSpan",
    "Trigger",
    "current_trigger",
]

SPAN_SAGA_STEP: Final = "saga.step"
ATTR_SAGA_TYPE: Final = "cqrs.saga.type"
ATTR_SAGA_ID: Final = "cqrs.saga.id"
ATTR_SAGA_STEP: Final = "cqrs.saga.step"
ATTR_SAGA_ACTION: Final = "cqrs.saga.action"
"""``run``, ``compensate``, ``event``, ``timeout``, ``start`` or ``resume``."""
ATTR_SAGA_TRIGGER_EVENT_ID: Final = "cqrs.saga.trigger_event_id"

METRIC_SAGAS_STARTED: Final = "cqrs.saga.started"
METRIC_SAGAS_COMPLETED: Final = "cqrs.saga.completed"
METRIC_SAGAS_COMPENSATED: Final = "cqrs.saga.compensated"
METRIC_SAGAS_FAILED: Final = "cqrs.saga.failed"
METRIC_SAGA_STEP_DURATION: Final = "cqrs.saga.step.duration"
METRIC_SAGAS_OPEN: Final = "cqrs.saga.open"


class Trigger:
    """The event a saga transition reacts to: its id and the span to link to."""

    __slots__ = ("event_id", "link")

    def __init__(self, event_id: str | None, link: trace.Link | None) -> None:
        self.event_id = event_id
        self.link = link

    @classmethod
    def of(cls, event: DomainEvent | None) -> Trigger:
        """The trigger for ``event``: its ``traceparent`` metadata, else the current span."""
        context: trace.SpanContext | None = None
        if event is not None and "traceparent" in event.metadata:
            carrier = {k: str(v) for k, v in event.metadata.items() if isinstance(v, str)}
            extracted = trace.get_current_span(propagate.extract(carrier)).get_span_context()
            context = extracted if extracted.is_valid else None
        if context is None:
            current = trace.get_current_span().get_span_context()
            context = current if current.is_valid else None
        link = None if context is None else trace.Link(context)
        return cls(None if event is None else event.event_id, link)


current_trigger: ContextVar[Trigger | None] = ContextVar("cqrs_saga_trigger", default=None)
"""The trigger of the transitions the running task performs (set by the manager)."""


class SagaTelemetry:
    """The saga instruments and tracer, made once per manager.

    Args:
        tracer_provider: Instead of the global provider.
        meter_provider: Instead of the global provider.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.tracer = get_tracer(tracer_provider)
        meter = get_meter(meter_provider)
        self.started = meter.create_counter(
            METRIC_SAGAS_STARTED, unit="{saga}", description="Sagas started, by type."
        )
        self.completed = meter.create_counter(
            METRIC_SAGAS_COMPLETED, unit="{saga}", description="Sagas completed, by type."
        )
        self.compensated = meter.create_counter(
            METRIC_SAGAS_COMPENSATED,
            unit="{saga}",
            description="Sagas that compensated every started step, by type.",
        )
        self.failed = meter.create_counter(
            METRIC_SAGAS_FAILED,
            unit="{saga}",
            description="Sagas whose compensation failed (they need a person), by type.",
        )
        self.step_duration = meter.create_histogram(
            METRIC_SAGA_STEP_DURATION,
            unit="s",
            description="Time of one saga transition (its step's command and commit).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.open_by_type: dict[str, int] = {}
        meter.create_observable_gauge(
            METRIC_SAGAS_OPEN,
            callbacks=[self._observe_open],
            unit="{saga}",
            description="Open (running or compensating) sagas by type, as last counted.",
        )

    def _observe_open(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {ATTR_SAGA_TYPE: t}) for t, n in self.open_by_type.items()]

    def set_open(self, counts: Mapping[str, int]) -> None:
        """Replace the open-saga counts the gauge reports (types gone report 0)."""
        merged = dict.fromkeys(self.open_by_type, 0)
        merged.update(counts)
        self.open_by_type = merged


class StepSpan:
    """The ``saga.step`` span and the step-duration sample of one transition.

    Args:
        telemetry: The instruments and tracer.
        saga_id: The saga.
        saga_type: Its definition's name.
        step: The step (``start`` or ``-`` for transitions of no step).
        action: ``start``, ``run``, ``compensate``, ``event``, ``timeout`` or ``resume``.
    """

    __slots__ = ("_attributes", "_cm", "_span", "_start", "_telemetry")

    def __init__(
        self, telemetry: SagaTelemetry, saga_id: str, saga_type: str, step: str, action: str
    ) -> None:
        self._telemetry = telemetry
        self._attributes = {ATTR_SAGA_TYPE: saga_type, ATTR_SAGA_STEP: step}
        trigger = current_trigger.get()
        attributes: dict[str, str] = {
            **self._attributes,
            ATTR_SAGA_ID: saga_id,
            ATTR_SAGA_ACTION: action,
        }
        links = []
        if trigger is not None:
            if trigger.event_id is not None:
                attributes[ATTR_SAGA_TRIGGER_EVENT_ID] = trigger.event_id
            if trigger.link is not None:
                links.append(trigger.link)
        self._cm = telemetry.tracer.start_as_current_span(
            SPAN_SAGA_STEP, kind=trace.SpanKind.INTERNAL, attributes=attributes, links=links
        )
        self._start = 0

    def __enter__(self) -> trace.Span:
        self._start = time.perf_counter_ns()
        self._span = self._cm.__enter__()
        return self._span

    def __exit__(self, *exc_info: Any) -> None:
        outcome = OUTCOME_ERROR if exc_info[0] is not None else OUTCOME_SUCCESS
        self._telemetry.step_duration.record(
            (time.perf_counter_ns() - self._start) / 1e9,
            {**self._attributes, ATTR_OUTCOME: outcome},
        )
        self._cm.__exit__(*exc_info)
