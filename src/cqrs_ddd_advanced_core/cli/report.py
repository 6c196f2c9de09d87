"""The demo's summary: one JSON document, shown as a table or printed as is (``--json``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["print_json", "print_table", "short_type"]


def short_type(error_type: str) -> str:
    """``cqrs_ddd_core.exceptions.ConcurrencyError`` -> ``ConcurrencyError``."""
    return error_type.rsplit(".", 1)[-1]


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    ms = seconds * 1000.0
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms" if ms < 100 else f"{ms:.0f} ms"


def _quantiles(figures: Mapping[str, float]) -> str:
    return "   ".join(f"{name} {_ms(value)}" for name, value in figures.items())


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {n:,}" for name, n in counts.items()) or "none"


def _check(ok: bool) -> Text:
    return Text("✓", style="green") if ok else Text("✗", style="bold red")


def print_json(summary: Mapping[str, Any], file: IO[str]) -> None:
    """Write ``summary`` to ``file`` as indented JSON, then flush."""
    file.write(json.dumps(summary, indent=2, allow_nan=False, default=str) + "\n")
    file.flush()


def _clean(value: Any) -> Any:
    """NaN (no samples) as null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    return value


def finalise(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` made fit for JSON (non-finite numbers become ``None``)."""
    cleaned: dict[str, Any] = _clean(summary)
    return cleaned


def print_table(summary: Mapping[str, Any], console: Console) -> None:
    """The summary as a two-column table."""
    db = summary["database"]
    check = summary["database_check"]
    title = f"cqrs-ddd demo: {db['dialect']} {db['url']}"
    if summary["interrupted"]:
        title += " [bold red](interrupted: partial figures)[/]"
    table = Table(
        title=title,
        show_header=False,
        title_justify="left",
        caption=(
            "persistence = the unit of work's write and commit steps; conflicts are expected "
            "(concurrent commands on one order or user: the later one is refused)"
        ),
        caption_justify="left",
    )
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")

    failed = summary["commands"] - summary["succeeded"]
    table.add_row(
        "commands",
        f"{summary['commands']:,} in {summary['elapsed_s']:.2f} s = "
        f"[bold]{summary['commands_per_second']:,.0f}/s[/] with {summary['concurrency']} senders; "
        f"{summary['succeeded']:,} committed, {failed:,} failed",
    )
    by_type = dict(summary["commands_by_type"])
    nested = {
        name: n - by_type.get(name, 0)
        for name, n in summary["dispatches_by_type"].items()
        if n != by_type.get(name, 0)
    }
    table.add_row(
        "by type",
        _counts(by_type) + (f"; nested: {_counts(nested)}" if nested else ""),
    )
    table.add_row("queries", f"{summary['queries']:,}: {_counts(summary['queries_by_type'])}")
    table.add_row("command latency", _quantiles(summary["command_latency_s"]))
    table.add_row("persistence latency", _quantiles(summary["persistence_latency_s"]))
    table.add_row("query latency", _quantiles(summary["query_latency_s"]))

    events, outbox = summary["events"], summary["outbox"]
    table.add_row(
        "events stored",
        _with_check(
            f"{events['total']:,}: {_counts(events['by_aggregate_type'])}",
            check["events_match"],
            check["events"],
            summary["interrupted"],
        ),
    )
    table.add_row(
        "outbox enqueued",
        _with_check(
            f"{outbox['total']:,}: {_counts(outbox['by_aggregate_type'])}",
            check["outbox_match"],
            check["outbox"],
            summary["interrupted"],
        ),
    )
    table.add_row("audit records", f"{check['audit']:,}")
    conflicts = summary["conflicts"]
    table.add_row("conflicts", f"{conflicts:,} ConcurrencyError" if conflicts else "none")
    others = {
        short_type(name): n
        for name, n in summary["errors_by_type"].items()
        if not name.endswith("ConcurrencyError")
    }
    table.add_row("errors", _counts(others))
    integrity = check["integrity"]
    line = Text()
    line.append_text(_check(integrity["ok"]))
    if integrity["ok"]:
        line.append(
            f" {integrity['streams']:,} streams all 1..n, events and outbox in step, "
            f"{integrity['states']:,} states in step"
        )
    else:
        problems = {
            k: v for k, v in integrity.items() if v and k not in ("ok", "streams", "states")
        }
        line.append(f" {json.dumps(problems)}")
    table.add_row("database check", line)
    read_model = check.get("read_model")
    if read_model:  # the customer_orders projection (cli/demo_read_model.py)
        model = Text()
        model.append_text(_check(read_model["matches_events"]))
        model.append(
            f" {read_model['projection']}: {read_model['customers']:,} customers, "
            f"at position {read_model['checkpoint']:,} of {read_model['head']:,} "
            f"({read_model['lag_at_end']:,} behind when the workload ended), "
            + ("matches the events" if read_model["matches_events"] else "DIFFERS from the events")
        )
        table.add_row("read model", model)
    sagas = summary.get("sagas")
    if sagas:
        saga_line = Text()
        saga_line.append_text(_check(sagas["ok"]))
        saga_line.append(
            f" order process: {sagas['started']:,} sagas, {_counts(sagas['by_status'])}; "
            "no compensated saga holds stock"
            if sagas["ok"]
            else f" order process: {json.dumps(sagas)}"
        )
        table.add_row("sagas", saga_line)
    if summary.get("metrics_url"):
        table.add_row("metrics", summary["metrics_url"])
    console.print(table)


def _with_check(text: str, ok: bool, in_database: int, interrupted: bool) -> Text:
    line = Text(text + "  ")
    if ok:
        line.append_text(_check(ok))
        line.append(" database")
    elif interrupted:  # a command cancelled inside its commit may have committed whole
        line.append(f"database has {in_database:,}, with those cut off inside their commit")
    else:
        line.append_text(_check(ok))
        line.append(f" database has {in_database:,}")
    return line
