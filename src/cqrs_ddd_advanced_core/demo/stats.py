"""What a workload run did: counts, errors and latency samples, and its summary figures.

Quantiles are **nearest-rank** (the smallest sample with at least ``q`` of the
samples at or below it): a value that was really measured, and the one whose
histogram bucket Prometheus's ``histogram_quantile`` lands in, so the summary
and the dashboards agree to the bucket.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QUANTILES", "LatencySamples", "RunStats", "quantile"]

QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0..1) of already-sorted values; ``nan`` when empty."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass(slots=True)
class LatencySamples:
    """Durations in seconds."""

    values: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.values.append(seconds)

    def quantiles(self) -> dict[str, float]:
        """``{"p50": s, "p95": s, "p99": s}`` (nearest rank; ``nan`` without samples)."""
        ordered = sorted(self.values)
        return {name: quantile(ordered, q) for name, q in QUANTILES}

    def __len__(self) -> int:
        return len(self.values)


def _samples() -> defaultdict[str, LatencySamples]:
    return defaultdict(LatencySamples)


def _per_key(samples: Mapping[str, LatencySamples]) -> dict[str, dict[str, float]]:
    return {key: samples[key].quantiles() for key in sorted(samples) if len(samples[key])}


def _sorted(counter: Counter[str]) -> dict[str, int]:
    return {key: counter[key] for key in sorted(counter)}


@dataclass(slots=True)
class RunStats:
    """Everything a run measured. Error types are ``error.type`` values (qualified names).

    Attributes:
        commands: Commands the workload sent that finished (succeeded or failed).
        dispatch_latency: Per message type, the duration of every dispatch
            (nested commands included), as the pipeline's metrics step measures it.
        persistence_latency: One sample per committed unit of work: first write
            step's start to the end of its commit.
        persistence_by_aggregate: The same samples, once per aggregate type the
            unit of work persisted events of (``"none"`` without events), which is
            how ``cqrs.persistence.duration`` is labelled.
        events_stored: Events appended to the event store per aggregate type,
            as ``cqrs.events.stored`` counts them (event-sourced types only).
        outbox_enqueued: Outbox messages written per aggregate type, as
            ``cqrs.outbox.enqueued`` counts them (every event goes there).
    """

    commands_requested: int = 0
    concurrency: int = 0
    commands: int = 0
    succeeded: int = 0
    commands_by_type: Counter[str] = field(default_factory=Counter)
    nested_by_type: Counter[str] = field(default_factory=Counter)
    queries: int = 0
    queries_by_type: Counter[str] = field(default_factory=Counter)
    query_errors: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    conflicts: int = 0
    events_stored: Counter[str] = field(default_factory=Counter)
    outbox_enqueued: Counter[str] = field(default_factory=Counter)
    command_latency: LatencySamples = field(default_factory=LatencySamples)
    dispatch_latency: defaultdict[str, LatencySamples] = field(default_factory=_samples)
    query_latency: LatencySamples = field(default_factory=LatencySamples)
    persistence_latency: LatencySamples = field(default_factory=LatencySamples)
    persistence_by_aggregate: defaultdict[str, LatencySamples] = field(default_factory=_samples)
    started_at: float = 0.0
    ended_at: float = 0.0
    elapsed_s: float = 0.0
    interrupted: bool = False

    # -- recording ---------------------------------------------------------------------

    def record_dispatch(
        self, kind: str, message_type: str, seconds: float, *, nested: bool
    ) -> None:
        """One dispatch's duration (a command or a query, root or nested)."""
        self.dispatch_latency[message_type].add(seconds)
        if nested:
            return
        if kind == "command":
            self.command_latency.add(seconds)
        else:
            self.query_latency.add(seconds)

    def record_persistence(
        self,
        seconds: float,
        events: Mapping[str, int],
        *,
        stored: Mapping[str, int],
        enqueued: Mapping[str, int],
    ) -> None:
        """A committed unit of work: its duration, its events per aggregate type
        (how the duration is labelled), and what it stored and enqueued."""
        self.persistence_latency.add(seconds)
        for aggregate_type in events or ("none",):
            self.persistence_by_aggregate[aggregate_type].add(seconds)
        self.events_stored.update(stored)
        self.outbox_enqueued.update(enqueued)

    # -- figures -----------------------------------------------------------------------

    @property
    def commands_per_second(self) -> float:
        return self.commands / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The machine-readable summary (latencies in seconds)."""
        dispatches = self.commands_by_type + self.nested_by_type
        return {
            "commands_requested": self.commands_requested,
            "concurrency": self.concurrency,
            "commands": self.commands,
            "succeeded": self.succeeded,
            "failed": self.commands - self.succeeded,
            "commands_per_second": round(self.commands_per_second, 1),
            "elapsed_s": round(self.elapsed_s, 3),
            "commands_by_type": _sorted(self.commands_by_type),
            "dispatches_by_type": _sorted(dispatches),
            "queries": self.queries,
            "queries_by_type": _sorted(self.queries_by_type),
            "conflicts": self.conflicts,
            "errors_by_type": _sorted(self.errors),
            "query_errors_by_type": _sorted(self.query_errors),
            "command_latency_s": self.command_latency.quantiles(),
            "query_latency_s": self.query_latency.quantiles(),
            "persistence_latency_s": self.persistence_latency.quantiles(),
            "latency_by_message_type_s": _per_key(self.dispatch_latency),
            "persistence_latency_by_aggregate_type_s": _per_key(self.persistence_by_aggregate),
            "committed_units_of_work": len(self.persistence_latency),
            "persistence_samples_by_aggregate_type": {
                key: len(self.persistence_by_aggregate[key])
                for key in sorted(self.persistence_by_aggregate)
            },
            "events_stored_by_aggregate_type": _sorted(self.events_stored),
            "outbox_enqueued_by_aggregate_type": _sorted(self.outbox_enqueued),
            "workload_started": self.started_at,
            "workload_ended": self.ended_at,
            "interrupted": self.interrupted,
        }
