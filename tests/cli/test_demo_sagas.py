"""The demo's order process: its summary, checked against the SQLite file with plain SQL."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

from tests.cli.demo_process import run_demo


def _read(database: Path) -> tuple[dict[str, str], dict[str, str], set[str]]:
    """Saga statuses, reservation statuses and shipped orders, by order id."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            "SELECT aggregate_type, aggregate_id, state FROM aggregate_state "
            "WHERE aggregate_type IN ('cqrs.saga', 'StockReservation', 'Shipment')"
        ).fetchall()
    sagas: dict[str, str] = {}
    reservations: dict[str, str] = {}
    shipped: set[str] = set()
    for aggregate_type, aggregate_id, state in rows:
        value = json.loads(state)
        if aggregate_type == "cqrs.saga":
            sagas[value["key"]] = value["status"]
        elif aggregate_type == "StockReservation":
            reservations[aggregate_id] = value["status"]
        else:
            shipped.add(aggregate_id)
    return sagas, reservations, shipped


def test_every_confirmed_order_runs_its_saga_and_compensated_ones_hold_no_stock(
    tmp_path: Path,
) -> None:
    database = tmp_path / "shop.db"
    completed = run_demo(
        [
            "-n=400",
            "-c=4",
            f"--database-url=sqlite:///{database}",
            "--json",
            "--seed=5",
            "--order-process=0.25",
        ],
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    summary = json.loads(completed.stdout)
    sagas = summary["sagas"]

    statuses, reservations, shipped = _read(database)

    assert sagas["ok"]
    assert sagas["started"] == len(statuses) > 0
    confirmed = summary["events"]["by_aggregate_type"]  # every confirmation starts one
    assert confirmed["Invoice"] == len(statuses)
    assert sagas["by_status"] == dict(sorted(Counter(statuses.values()).items()))
    # The injected payment failures happened, and each was compensated.
    assert sagas["by_status"].get("compensated", 0) > 0
    assert sagas["by_status"].get("completed", 0) > 0
    for order_id, status in statuses.items():
        if status == "compensated":
            assert reservations[order_id] == "released", order_id
            assert order_id not in shipped
        else:
            assert status == "completed", (order_id, status)
            assert reservations[order_id] == "reserved"
            assert order_id in shipped


def test_without_the_option_the_demo_runs_no_saga(tmp_path: Path) -> None:
    database = tmp_path / "shop.db"
    completed = run_demo(
        ["-n=100", "-c=2", f"--database-url=sqlite:///{database}", "--json", "--seed=5"],
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]

    assert "sagas" not in json.loads(completed.stdout)
    assert _read(database) == ({}, {}, set())
