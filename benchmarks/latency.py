"""Per-command latency of the concurrent workloads: each command timed from send to return.

A workload's throughput comes from the harness (a slice's wall time over its
commands); with many senders at once that says nothing about how long one
caller waits, so the concurrent senders also time every command they send
(``time.perf_counter_ns`` around the call, on the sender's own task or
thread) into a :class:`Latencies`. Its ``reset`` is the case's ``on_timed``
hook: what warm-up and calibration recorded is dropped, and the percentiles
cover the timed rounds only.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["Latencies", "latency_figures"]


class Latencies:
    """Command latencies in nanoseconds; ``record`` is safe from any thread (``list.append``)."""

    __slots__ = ("_ns",)

    def __init__(self) -> None:
        self._ns: list[int] = []

    def record(self, ns: int) -> None:
        self._ns.append(ns)

    def reset(self) -> None:
        self._ns = []

    def summary(self) -> dict[str, Any]:
        """``count``, ``p50_us``, ``p99_us`` and ``max_us`` of what was recorded since ``reset``."""
        data = sorted(self._ns)
        if not data:
            return {"count": 0, "p50_us": None, "p99_us": None, "max_us": None}
        if len(data) == 1:
            p50 = p99 = float(data[0])
        else:
            cuts = statistics.quantiles(data, n=100, method="inclusive")
            p50, p99 = cuts[49], cuts[98]
        return {
            "count": len(data),
            "p50_us": round(p50 / 1000, 1),
            "p99_us": round(p99 / 1000, 1),
            "max_us": round(data[-1] / 1000, 1),
        }


def latency_figures(recorders: Sequence[tuple[str, Latencies]]) -> dict[str, Any]:
    """``{case name: summary}`` for the workload's ``figures``."""
    return {name: recorder.summary() for name, recorder in recorders}
