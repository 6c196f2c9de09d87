"""Workload 7: loading a long-lived event-sourced aggregate, with and without snapshots.

One ``Account`` stream of 10,050 events on a SQLite file (WAL, the default
``synchronous=FULL``), written in commits of 50 events. One op = one
``EventSourcedRepository.load``:

* with snapshots: ``snapshot_store=SQLAlchemySnapshotStore`` and the policy
  ``EveryNEvents(100)``; the latest snapshot is at version 10,000 (taken
  after commit, as the policy does), so a load reads it and replays the 50
  events after it: the average case of "every 100 events", not the best one;
* full replay: the same repository without a snapshot store, all 10,050 events.

Both cases run interleaved in one process; the target is the per-round ratio.
``--quick`` uses 550 events (a snapshot at 500).
"""

from __future__ import annotations

import os

from benchmarks.harness import Case, Config, Target, WorkloadResult, interleave, ratio, summarize
from benchmarks.logs import configure_filtered

NAME = "snapshots"
TITLE = "7. Loading a 10,000-event aggregate: snapshot every 100 events vs full replay (SQLite)"

TARGETS = [
    Target(
        "snapshot_load_speedup",
        "snapshot_load_speedup",
        ">=",
        20.0,
        "loading a 10,050-event aggregate with snapshots every 100 events is >= 20x faster "
        "than replaying it",
    ),
]

EVENTS = 10_050
EVERY = 100
PER_COMMIT = 50


async def run(cfg: Config) -> WorkloadResult:
    from cqrs_ddd_advanced_core.event_sourcing import (
        EventSourcedAggregate,
        EventSourcedRepository,
        EveryNEvents,
    )
    from cqrs_ddd_core import DomainEvent
    from cqrs_ddd_core.adapters.sqlalchemy import (
        SQLAlchemyEventStore,
        SQLAlchemySnapshotStore,
        SQLAlchemyUnitOfWork,
        create_engine,
        create_tables,
    )

    class Deposited(DomainEvent):
        amount: int
        note: str

    class Account(EventSourcedAggregate):
        balance: int = 0
        deposits: int = 0
        last_note: str = ""

        def deposit(self, amount: int) -> None:
            self.raise_event(Deposited(amount=amount, note=f"deposit {self.deposits + 1}"))

        def apply_Deposited(self, event: Deposited) -> None:
            self.balance += event.amount
            self.deposits += 1
            self.last_note = event.note

    configure_filtered()
    events_total = 550 if cfg.quick else EVENTS
    engine = create_engine(f"sqlite:///{os.path.join(cfg.workdir, 'snapshots.sqlite3')}")
    try:
        await create_tables(engine)
        store = SQLAlchemyEventStore(engine)
        snapshots = SQLAlchemySnapshotStore(engine)
        with_snapshots = EventSourcedRepository(
            store,
            Account,
            event_types=[Deposited],
            snapshot_store=snapshots,
            snapshot_policy=EveryNEvents(EVERY),
        )
        replaying = EventSourcedRepository(store, Account, event_types=[Deposited])
        account = Account.blank("acct-1")
        while account.version < events_total:
            uow = SQLAlchemyUnitOfWork(engine)
            expected = account.original_version
            for _ in range(min(PER_COMMIT, events_total - account.version)):
                account.deposit(1)
            with_snapshots.track(account, uow=uow)  # the policy snapshots after commit
            await store.append(
                "Account", account.id, account.collect_events(), expected_version=expected, uow=uow
            )
            await uow.commit()
            account.mark_persisted()
        latest = await snapshots.latest("Account", account.id)
        loaded = await with_snapshots.load(account.id)
        replayed = await replaying.load(account.id)
        if loaded.model_dump() != replayed.model_dump() or latest is None:
            raise RuntimeError("the snapshot load and the full replay disagree")

        async def load_with_snapshot(n: int) -> None:
            for _ in range(n):
                await with_snapshots.load("acct-1")

        async def load_full_replay(n: int) -> None:
            for _ in range(n):
                await replaying.load("acct-1")

        stats = await interleave(
            [
                Case(
                    "load_with_snapshot",
                    f"load: snapshot at {latest.version:,} + "
                    f"{events_total - latest.version} events",
                    load_with_snapshot,
                    min_ops=1,
                    unit="load",
                ),
                Case(
                    "load_full_replay",
                    f"load: replay all {events_total:,} events",
                    load_full_replay,
                    min_ops=1,
                    unit="load",
                ),
            ],
            cfg,
            io=True,
        )
    finally:
        await engine.dispose()
    result = WorkloadResult(
        NAME,
        TITLE,
        cases=stats,
        settings={
            "events": events_total,
            "snapshot_every": EVERY,
            "latest_snapshot_version": latest.version,
            "events_after_snapshot": events_total - latest.version,
            "database": "SQLite file, WAL, synchronous=FULL",
        },
    )
    result.ratios.append(
        ratio(
            stats,
            "snapshot_load_speedup",
            "load_full_replay",
            "load_with_snapshot",
            "time of a full replay / time of a snapshot load",
        )
    )
    return summarize(result, TARGETS)
