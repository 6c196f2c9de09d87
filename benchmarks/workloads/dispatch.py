"""Workload 1: dispatch through 6 pass-through middlewares, no I/O.

Ours: the core ``Mediator`` with six pass-through middlewares listed
(``middlewares=[...]``, no unit of work). Against python-cqrs with six
pass-through middlewares, in the same process, interleaved. The floor is a
bare ``await handler.handle(cmd)``.
"""

from __future__ import annotations

from benchmarks.baselines.bare import bare_handler
from benchmarks.harness import Case, Config, Target, WorkloadResult, interleave, ratio, summarize
from benchmarks.ours import PassThrough, Ping, make_mediator, sender

NAME = "dispatch"
TITLE = "1. Dispatch through 6 pass-through middlewares, no I/O"

TARGETS = [
    Target(
        "dispatch_vs_python_cqrs",
        "speedup_vs_python_cqrs_silenced",
        ">=",
        8.0,
        "6 pass-through middlewares: >= 8x faster than python-cqrs (its logging silenced)",
    ),
]


async def run(cfg: Config) -> WorkloadResult:
    from benchmarks.peers.python_cqrs import make_sender

    command = Ping()
    mediator, handler = make_mediator([PassThrough() for _ in range(6)])
    bare_mediator, _ = make_mediator([])
    cases = [
        Case("bare_handler", "await handler.handle(cmd)", bare_handler(handler, command)),
        Case("ours_6mw", "ours: Mediator, 6 pass-through middlewares", sender(mediator, command)),
        Case("ours_0mw", "ours: Mediator, no middleware", sender(bare_mediator, command)),
        Case(
            "python_cqrs_6mw_silenced",
            "python-cqrs: 6 pass-through + its logging mw, logger at WARNING",
            make_sender(6, "silenced"),
        ),
        Case(
            "python_cqrs_6mw_nolog",
            "python-cqrs: 6 pass-through, its logging mw replaced",
            make_sender(6, "nolog"),
        ),
        Case(
            "python_cqrs_6mw_default",
            "python-cqrs: 6 pass-through + its logging mw, logger at DEBUG",
            make_sender(6, "default"),
        ),
    ]
    stats = await interleave(cases, cfg)
    result = WorkloadResult(NAME, TITLE, cases=stats)
    result.ratios = [
        ratio(
            stats,
            "speedup_vs_python_cqrs_silenced",
            "python_cqrs_6mw_silenced",
            "ours_6mw",
            "python-cqrs (silenced) time / ours: x times faster",
        ),
        ratio(
            stats,
            "speedup_vs_python_cqrs_nolog",
            "python_cqrs_6mw_nolog",
            "ours_6mw",
            "python-cqrs (no logging mw) time / ours",
        ),
        ratio(
            stats,
            "speedup_vs_python_cqrs_default",
            "python_cqrs_6mw_default",
            "ours_6mw",
            "python-cqrs (its default logging) time / ours",
        ),
        ratio(
            stats, "ours_6mw_vs_bare", "ours_6mw", "bare_handler", "ours time / bare handler call"
        ),
        ratio(
            stats,
            "ours_6mw_vs_0mw",
            "ours_6mw",
            "ours_0mw",
            "ours with 6 middlewares / ours with none",
        ),
    ]
    by = {c.name: c.median_ns for c in stats}
    result.figures = {
        "ours_overhead_us": round((by["ours_6mw"] - by["bare_handler"]) / 1000, 3),
        "ours_per_middleware_us": round((by["ours_6mw"] - by["ours_0mw"]) / 6000, 3),
    }
    result.settings = {"middlewares": 6, "handler": "returns None", "command": "reused instance"}
    return summarize(result, TARGETS)
