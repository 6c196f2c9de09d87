"""Human-readable tables (rich when installed, plain text otherwise)."""

from __future__ import annotations

import json
from typing import Any

from benchmarks.harness import WorkloadResult

__all__ = ["render"]


def _fmt_us(us: float) -> str:
    if us >= 1000:
        return f"{us / 1000:,.2f} ms"
    if us >= 10:
        return f"{us:,.1f} µs"
    return f"{us:,.2f} µs"


def _rows(result: WorkloadResult) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    cases = []
    for c in result.cases:
        j = c.to_json()
        cases.append(
            [
                c.name,
                _fmt_us(j["median_us"]),
                f"{_fmt_us(j['min_us'])} - {_fmt_us(j['max_us'])}",
                f"{_fmt_us(j['q1_us'])} - {_fmt_us(j['q3_us'])}",
                f"{j['ops_per_s']:,.0f}" if j["ops_per_s"] else "-",
                c.label,
            ]
        )
    ratios = [
        [r.name, f"{r.median:.2f}x", f"{min(r.values):.2f} - {max(r.values):.2f}", r.meaning]
        for r in result.ratios
    ]
    targets = []
    for t in result.targets:
        verdict = {True: "MET", False: "MISSED", None: "NOT RUN"}[t.met]
        value = "-" if t.value is None else f"{t.value:.2f}"
        targets.append([t.name, f"{value} {t.op} {t.threshold:g}", verdict, t.description])
    return cases, ratios, targets


def _plain_table(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


_CASE_HEADER = ["case", "median/op", "min - max", "IQR", "ops/s", "what"]
_RATIO_HEADER = ["ratio", "median", "min - max (per round)", "meaning"]
_TARGET_HEADER = ["target", "value", "verdict", "promise"]


def render(result: WorkloadResult) -> None:
    """Print ``result`` for people (the JSON summary is printed separately)."""
    cases, ratios, targets = _rows(result)
    extra: dict[str, Any] = {}
    if result.figures:
        extra["figures"] = result.figures
    if result.settings:
        extra["settings"] = result.settings
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        Console = None  # type: ignore[assignment,misc]
    if Console is None:
        print(f"\n== {result.title} [{result.status}] {result.reason}")
        for title, header, rows in (
            ("", _CASE_HEADER, cases),
            ("", _RATIO_HEADER, ratios),
            ("", _TARGET_HEADER, targets),
        ):
            if rows:
                print(_plain_table(title, header, rows))
        for key, value in extra.items():
            print(f"{key}: {json.dumps(value)}")
        for note in result.notes:
            print(f"note: {note}")
        return
    console = Console(width=160, highlight=False, soft_wrap=False)
    console.rule(f"{result.title} [{result.status}] {result.reason}".strip())
    for header, rows in ((_CASE_HEADER, cases), (_RATIO_HEADER, ratios), (_TARGET_HEADER, targets)):
        if not rows:
            continue
        table = Table(*header, show_edge=False, pad_edge=False)
        for row in rows:
            if header is _TARGET_HEADER:
                colour = {"MET": "green", "MISSED": "red"}.get(row[2], "yellow")
                row = [row[0], row[1], f"[{colour}]{row[2]}[/{colour}]", row[3]]
            table.add_row(*row)
        console.print(table)
    for key, value in extra.items():
        console.print(f"{key}: {json.dumps(value)}", markup=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
