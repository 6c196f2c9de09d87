"""Interleaved measurement: every case of a workload runs in one process, in turns.

Machines here are shared and noisy, so a workload never measures its cases one
after the other. Each *round* runs every case once (a *slice* of ``n`` ops),
starting with a different case each round; a ratio between two cases is taken
per round (both slices ran within a few hundred milliseconds of each other)
and the median of those per-round ratios is reported, with its spread.

A case is an ``async`` callable ``run(n)`` that performs ``n`` operations;
synchronous baselines simply block inside it. Per-op time is the slice's wall
time (``time.perf_counter_ns``) divided by ``n``.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Case",
    "CaseStats",
    "Config",
    "RatioStats",
    "Target",
    "TargetResult",
    "WorkloadResult",
    "interleave",
    "ratio",
    "summarize",
]


@dataclass(frozen=True, slots=True)
class Config:
    """How hard to measure.

    Attributes:
        quick: Tiny counts, for the smoke test: figures are meaningless.
        rounds: Interleaved rounds per workload.
        slice_ms: Target wall time of one case's slice in one round.
        warmup_ms: Wall time spent warming each case before calibration.
        workdir: Where SQLite files and other scratch data go.
    """

    quick: bool
    rounds: int
    slice_ms: float
    warmup_ms: float
    workdir: str

    @classmethod
    def make(
        cls, *, quick: bool, rounds: int | None, slice_ms: float | None, workdir: str
    ) -> Config:
        return cls(
            quick=quick,
            rounds=rounds if rounds is not None else (2 if quick else 15),
            slice_ms=slice_ms if slice_ms is not None else (2.0 if quick else 50.0),
            warmup_ms=2.0 if quick else 100.0,
            workdir=workdir,
        )


@dataclass(slots=True)
class Case:
    """One contender of a workload.

    Attributes:
        name: Stable identifier (JSON key).
        label: What it is, for the table.
        run: ``await run(n)`` performs ``n`` operations.
        min_ops / max_ops: Bounds on the calibrated slice size.
        gc_off: Disable the cyclic GC during a slice (collected before each).
        unit: Name of one operation, for the table.
        on_timed: Called once after calibration, before the first timed round
            (e.g. to drop per-command latencies recorded while warming up).
    """

    name: str
    label: str
    run: Callable[[int], Awaitable[Any]]
    min_ops: int = 1
    max_ops: int = 1_000_000
    gc_off: bool = True
    unit: str = "command"
    on_timed: Callable[[], None] | None = None


@dataclass(slots=True)
class CaseStats:
    name: str
    label: str
    ops_per_slice: int
    per_op_ns: list[float]
    unit: str = "command"

    @property
    def median_ns(self) -> float:
        return statistics.median(self.per_op_ns)

    def to_json(self) -> dict[str, Any]:
        data = sorted(self.per_op_ns)
        q1, q3 = _quartiles(data)
        median = statistics.median(data)
        return {
            "label": self.label,
            "median_us": round(median / 1000, 3),
            "min_us": round(data[0] / 1000, 3),
            "max_us": round(data[-1] / 1000, 3),
            "q1_us": round(q1 / 1000, 3),
            "q3_us": round(q3 / 1000, 3),
            "ops_per_s": round(1e9 / median, 1) if median else None,
            "ops_per_slice": self.ops_per_slice,
            "rounds": len(data),
        }


@dataclass(slots=True)
class RatioStats:
    """``per round: time(numerator) / time(denominator)``, then the median.

    With the slower case as numerator this reads "x times faster"; with the
    contender as numerator it reads "costs x times the baseline".
    """

    name: str
    numerator: str
    denominator: str
    values: list[float]
    meaning: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def to_json(self) -> dict[str, Any]:
        data = sorted(self.values)
        return {
            "value": round(self.median, 3),
            "min": round(data[0], 3),
            "max": round(data[-1], 3),
            "numerator": self.numerator,
            "denominator": self.denominator,
            "meaning": self.meaning,
        }


@dataclass(frozen=True, slots=True)
class Target:
    """A promise from the issue: ``ratio <op> threshold``."""

    name: str
    ratio: str
    op: str  # ">=" or "<="
    threshold: float
    description: str

    def check(self, value: float) -> bool:
        return value >= self.threshold if self.op == ">=" else value <= self.threshold


@dataclass(slots=True)
class TargetResult:
    name: str
    description: str
    op: str
    threshold: float
    value: float | None
    met: bool | None  # None: not run

    def to_json(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "value": None if self.value is None else round(self.value, 3),
            "op": self.op,
            "threshold": self.threshold,
            "met": self.met,
        }


@dataclass(slots=True)
class WorkloadResult:
    """What one workload found; ``status`` is ``ok``, ``skipped`` or ``error``."""

    name: str
    title: str
    status: str = "ok"
    reason: str = ""
    cases: list[CaseStats] = field(default_factory=list)
    ratios: list[RatioStats] = field(default_factory=list)
    targets: list[TargetResult] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"title": self.title, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        if self.cases:
            out["cases"] = {c.name: c.to_json() for c in self.cases}
        if self.ratios:
            out["ratios"] = {r.name: r.to_json() for r in self.ratios}
        if self.figures:
            out["figures"] = self.figures
        out["targets"] = {t.name: t.to_json() for t in self.targets}
        if self.settings:
            out["settings"] = self.settings
        if self.notes:
            out["notes"] = self.notes
        return out


def _quartiles(sorted_data: Sequence[float]) -> tuple[float, float]:
    if len(sorted_data) < 2:
        return sorted_data[0], sorted_data[0]
    q = statistics.quantiles(sorted_data, n=4, method="inclusive")
    return q[0], q[2]


async def _timed(case: Case, n: int) -> int:
    gc.collect()
    if case.gc_off:
        gc.disable()
    try:
        start = time.perf_counter_ns()
        await case.run(n)
        return time.perf_counter_ns() - start
    finally:
        gc.enable()


async def _calibrate(case: Case, cfg: Config, slice_ms: float, warmup_ms: float) -> int:
    """Warm ``case`` up for ``warmup_ms`` and size its slice to ``slice_ms``."""
    n = max(case.min_ops, 1)
    budget = warmup_ms * 1e6
    spent = 0
    done = 0
    while True:
        elapsed = await _timed(case, n)
        spent += elapsed
        done += n
        if spent >= budget or n >= case.max_ops:
            break
        n = min(case.max_ops, n * 2)
    per_op = max(spent / done, 1.0)
    return int(min(case.max_ops, max(case.min_ops, slice_ms * 1e6 / per_op)))


async def interleave(cases: Sequence[Case], cfg: Config, *, io: bool = False) -> list[CaseStats]:
    """Run ``cases`` round-robin for ``cfg.rounds`` rounds; per-op ns per round.

    Round ``r`` starts with case ``r mod len(cases)`` so that no case always
    runs first (cold caches) or last (after the others' garbage). ``io``
    cases (database round trips, fsyncs) get slices three times longer, so
    that each holds enough operations.
    """
    scale = 1.0 if cfg.quick or not io else 3.0
    sizes = {
        c.name: await _calibrate(c, cfg, cfg.slice_ms * scale, cfg.warmup_ms * scale) for c in cases
    }
    stats = {c.name: CaseStats(c.name, c.label, sizes[c.name], [], c.unit) for c in cases}
    for case in cases:
        if case.on_timed is not None:
            case.on_timed()
    count = len(cases)
    for r in range(cfg.rounds):
        shift = r % count
        for case in [*cases[shift:], *cases[:shift]]:
            n = sizes[case.name]
            stats[case.name].per_op_ns.append(await _timed(case, n) / n)
    return [stats[c.name] for c in cases]


def ratio(
    cases: Sequence[CaseStats], name: str, numerator: str, denominator: str, meaning: str = ""
) -> RatioStats:
    """Per-round ``time(numerator) / time(denominator)`` for two cases of one run."""
    by_name = {c.name: c for c in cases}
    top, bottom = by_name[numerator].per_op_ns, by_name[denominator].per_op_ns
    return RatioStats(
        name, numerator, denominator, [a / b for a, b in zip(top, bottom, strict=True)], meaning
    )


def summarize(result: WorkloadResult, targets: Sequence[Target]) -> WorkloadResult:
    """Check ``targets`` against the ratios (or figures) already in ``result``."""
    ratios = {r.name: r.median for r in result.ratios}
    for target in targets:
        value = ratios.get(target.ratio)
        if value is None:
            figure = result.figures.get(target.ratio)
            value = float(figure) if isinstance(figure, int | float) else None
        result.targets.append(
            TargetResult(
                target.name,
                target.description,
                target.op,
                target.threshold,
                value,
                None if value is None else target.check(value),
            )
        )
    return result
