"""Duration histograms per message type, persistence latency, stored events and outbox messages."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.context import get_current

from cqrs_ddd_core.persistence.steps import written_by_aggregate_type
from cqrs_ddd_core.pipeline.pipeline import CallNext, Placement
from cqrs_ddd_core.telemetry.api import error_type, get_meter
from cqrs_ddd_core.telemetry.commit_counts import commit_counts
from cqrs_ddd_core.telemetry.instruments import Instruments
from cqrs_ddd_core.telemetry.names import (
    ATTR_AGGREGATE_TYPE,
    ATTR_ERROR_TYPE,
    ATTR_MESSAGE_TYPE,
    ATTR_OUTCOME,
    ATTR_REFUSAL_TYPE,
    NO_AGGREGATE_TYPE,
    OUTCOME_ERROR,
    OUTCOME_REFUSED,
    OUTCOME_SUCCESS,
)
from cqrs_ddd_core.telemetry.outcomes import DEFAULT_REFUSALS, Refusals

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import Histogram, MeterProvider

    from cqrs_ddd_core.context import DispatchContext
    from cqrs_ddd_core.persistence.records import StepTiming

__all__ = ["MetricsMiddleware"]

_Attributes = Mapping[str, str]
_CACHE_LIMIT = 1024


class MetricsMiddleware:
    """Records ``cqrs.command.duration`` / ``cqrs.query.duration`` for every dispatch.

    Attributes: ``cqrs.message.type``, ``cqrs.outcome`` (``success``,
    ``refused`` or ``error``) and ``cqrs.refusal.type`` (refused) or
    ``error.type`` (error), qualified class names (see
    :mod:`cqrs_ddd_core.telemetry.outcomes`). Placed outside the unit of work,
    the command's duration includes its commit.

    When a command owned its unit of work and it committed, also records:

    * ``cqrs.persistence.duration``: from the first write step's start to the
      end of ``COMMIT`` (the ``StepTiming`` s the unit of work measured), once
      per distinct aggregate type among the events of the unit of work (nested
      commands' events included), or once with ``cqrs.aggregate.type="none"``
      when it committed no events;
    * ``cqrs.events.stored``: the events the commit appended to an event
      store, per aggregate type (``@non_event_sourced`` aggregates' events are
      not among them: they go to the outbox only);
    * ``cqrs.outbox.enqueued``: the messages the commit wrote to an outbox,
      per aggregate type.

    The two counters are counted here (an integer addition per aggregate
    type) and read by the SDK when it collects, through observable counters
    registered once per meter provider (see
    :mod:`cqrs_ddd_core.telemetry.commit_counts`): every middleware of one
    provider adds to the same totals.

    Attribute sets are computed once per (message type, outcome, type) or
    aggregate type and reused.

    Args:
        meter_provider: Use this provider instead of the global one (resolved
            lazily: an SDK installed after the mediator was built is used).
        refusals: Exception types recorded as ``cqrs.outcome="refused"``.
    """

    name = "metrics"
    placement = Placement.of(outside=("unit_of_work",))

    __slots__ = (
        "_attributes",
        "_counts",
        "_durations",
        "_instruments",
        "_per_aggregate",
        "_provider",
        "_refusals",
    )

    def __init__(
        self, *, meter_provider: MeterProvider | None = None, refusals: Refusals = DEFAULT_REFUSALS
    ) -> None:
        self._provider = meter_provider
        self._refusals = tuple(refusals)
        self._instruments = Instruments(get_meter(meter_provider))
        self._counts = commit_counts(meter_provider)
        self._durations: dict[str, Histogram] = {
            "command": self._instruments.command_duration,
            "query": self._instruments.query_duration,
        }
        # Caches keyed by low-cardinality names, not per-call state.
        self._attributes: dict[tuple[str, str | None, bool], _Attributes] = {}
        self._per_aggregate: dict[str, _Attributes] = {}

    async def __call__(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        owns_uow = context.uow is None  # see TracingMiddleware: outside the unit of work
        start = time.perf_counter()
        try:
            result = await call_next(message, context)
        except BaseException as exc:
            self._durations[context.kind].record(
                time.perf_counter() - start,
                self._attributes_for(
                    context.message_type, error_type(exc), isinstance(exc, self._refusals)
                ),
            )
            raise
        elapsed = time.perf_counter() - start
        # The current context, read once for every record of this dispatch (the
        # SDK would read it per record; its exemplar filter is what looks at it).
        current = get_current()
        self._durations[context.kind].record(
            elapsed, self._attributes_for(context.message_type, None, False), current
        )
        uow = context.uow
        if owns_uow and uow is not None and uow.timings:
            self._record_persistence(context, uow, current)
        return result

    def _attributes_for(
        self, message_type: str, error_type: str | None, refused: bool
    ) -> _Attributes:
        key = (message_type, error_type, refused)
        found = self._attributes.get(key)
        if found is None:
            if error_type is None:
                found = {ATTR_MESSAGE_TYPE: message_type, ATTR_OUTCOME: OUTCOME_SUCCESS}
            elif refused:
                found = {
                    ATTR_MESSAGE_TYPE: message_type,
                    ATTR_OUTCOME: OUTCOME_REFUSED,
                    ATTR_REFUSAL_TYPE: error_type,
                }
            else:
                found = {
                    ATTR_MESSAGE_TYPE: message_type,
                    ATTR_OUTCOME: OUTCOME_ERROR,
                    ATTR_ERROR_TYPE: error_type,
                }
            self._attributes[key] = found
        return found

    def _record_persistence(self, context: DispatchContext, uow: Any, current: Context) -> None:
        timings: Sequence[StepTiming] = uow.timings
        start, end = timings[0].start_ns, 0
        for step in timings:
            if step.start_ns < start:
                start = step.start_ns
            if step.end_ns > end:
                end = step.end_ns
        seconds = (end - start) / 1e9
        # Every command of the unit of work (the root and the ones it sent)
        # that produced events has its slot in context.published, in
        # persistence order (a command without events has none).
        per_type: dict[str, int] = {}
        for slot in context.published:
            for event in slot:
                aggregate_type = event.aggregate_type or NO_AGGREGATE_TYPE
                per_type[aggregate_type] = per_type.get(aggregate_type, 0) + 1
        histogram = self._instruments.persistence_duration
        if not per_type:
            histogram.record(seconds, self._aggregate_attributes(NO_AGGREGATE_TYPE), current)
        for aggregate_type in per_type:
            histogram.record(seconds, self._aggregate_attributes(aggregate_type), current)
        committed = getattr(uow, "committed", None)
        if committed:
            stored, enqueued = written_by_aggregate_type(committed)
            if stored or enqueued:
                self._counts.add(stored, enqueued)

    def _aggregate_attributes(self, aggregate_type: str) -> _Attributes:
        found = self._per_aggregate.get(aggregate_type)
        if found is None:
            if len(self._per_aggregate) >= _CACHE_LIMIT:  # aggregate types are few; be safe
                self._per_aggregate.clear()
            found = self._per_aggregate[aggregate_type] = {ATTR_AGGREGATE_TYPE: aggregate_type}
        return found

    def __repr__(self) -> str:
        provider = "global" if self._provider is None else repr(self._provider)
        refusals = ", ".join(t.__qualname__ for t in self._refusals)
        return f"MetricsMiddleware(meter_provider={provider}, refusals=[{refusals}])"
