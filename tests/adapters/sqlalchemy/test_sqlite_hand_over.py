"""A job sent to an idle SQLite writer thread is handed over: the event loop waits,
the GIL released and for a bounded time, until the thread has taken it, so that
the job (a ``COMMIT`` and its ``fsync`` at ``FULL``) starts at once and does not
wait for a busy loop to let go of the GIL (up to the switch interval)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cqrs_ddd_core.adapters.sqlalchemy import sqlite_queue, sqlite_split, sqlite_thread
from cqrs_ddd_core.adapters.sqlalchemy.sqlite_thread import WriterClosedError, WriterThread
from tests.support.backends import sqlite_engine
from tests.support.commits import commit_new, open_the_writer, stored_ids


def _memory() -> sqlite3.Connection:
    return sqlite3.connect(":memory:", check_same_thread=False)


@pytest.fixture
def long_switch_interval() -> Iterator[None]:
    """No forced hand-over of the GIL during the test: a thread that wants it gets
    it only when the event loop's thread lets go of it."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


@pytest.fixture
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bound no loaded machine reaches: the tests that use it are about the
    hand-over, not its bound (the wait is the thread's wake-up either way)."""
    monkeypatch.setattr(sqlite_thread, "HAND_OVER_SECONDS", 10.0)


@pytest.fixture
async def thread() -> Any:
    started = WriterThread(_memory)
    await started.start()
    try:
        yield started
    finally:
        started.close()


def _job(began: threading.Event, release: threading.Event) -> Any:
    def job(_conn: sqlite3.Connection) -> str:
        began.set()
        release.wait(10)
        return "done"

    return job


async def test_a_job_handed_to_an_idle_thread_has_started_when_hand_over_returns(
    thread: WriterThread, long_switch_interval: None, patient: None
) -> None:
    began, release = threading.Event(), threading.Event()
    future = thread.hand_over(_job(began, release))
    assert began.is_set()  # before this task ever gave the loop back
    release.set()
    assert await future == "done"


async def test_a_job_only_submitted_waits_for_the_loop_to_let_go_of_the_gil(
    thread: WriterThread, long_switch_interval: None
) -> None:
    """What hand_over avoids (and why the test above can fail): the thread cannot
    start a submitted job while the event loop's thread keeps the GIL."""
    began, release = threading.Event(), threading.Event()
    future = thread.submit(_job(began, release))
    assert not began.is_set()
    release.set()
    assert await future == "done"


async def test_a_busy_thread_is_not_waited_for(
    thread: WriterThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an idle thread is waited for: behind a running job, hand_over queues and returns."""
    monkeypatch.setattr(sqlite_thread, "HAND_OVER_SECONDS", 5.0)
    began, release = threading.Event(), threading.Event()
    first = thread.hand_over(_job(began, release))
    assert began.is_set()
    started = time.monotonic()
    second = thread.hand_over(lambda _conn: "second")
    assert time.monotonic() - started < 1.0
    release.set()
    assert await first == "done"
    assert await second == "second"


async def test_the_wait_for_a_thread_that_does_not_come_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread that is not scheduled in time: the loop goes on after the bound and
    the job runs when the thread comes."""
    monkeypatch.setattr(sqlite_thread, "HAND_OVER_SECONDS", 0.05)
    late = WriterThread(_memory)
    late_start = threading.Timer(3.0, late._thread.start)  # would end an unbounded wait
    late_start.start()
    try:
        started = time.monotonic()
        future = late.hand_over(lambda _conn: "ran")
        waited = time.monotonic() - started
        assert 0.04 <= waited < 2.0
        assert not future.done()
    finally:
        late_start.cancel()
    late._thread.start()
    assert await asyncio.wait_for(future, 10) == "ran"
    late.close()


async def test_a_closed_thread_refuses_a_hand_over_at_once(thread: WriterThread) -> None:
    thread.close()
    started = time.monotonic()
    with pytest.raises(WriterClosedError):
        thread.hand_over(lambda _conn: None)
    assert time.monotonic() - started < 0.5


async def test_at_full_the_commit_starts_while_the_event_loop_is_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, long_switch_interval: None, patient: None
) -> None:
    """A sender's COMMIT goes to the thread; another task then keeps the loop busy
    (pure Python, no await). The COMMIT (its fsync) runs meanwhile, not after."""
    committing = threading.Event()
    original = sqlite_split.commit_written

    def commit_written(*args: Any) -> Any:
        committing.set()
        return original(*args)

    monkeypatch.setattr(sqlite_queue, "commit_written", commit_written)
    seen: list[bool] = []

    async def busy() -> None:
        deadline = time.monotonic() + 0.5
        while not committing.is_set() and time.monotonic() < deadline:
            pass  # holds the GIL: with a 1 s switch interval nobody else runs Python
        seen.append(committing.is_set())

    async with sqlite_engine(tmp_path, "FULL") as engine:
        await open_the_writer(engine)  # commits "a1"
        committing.clear()
        sender = asyncio.create_task(commit_new(engine, "b1"))
        spinner = asyncio.create_task(busy())
        await asyncio.gather(sender, spinner)
        assert seen == [True]
        assert sorted(await stored_ids(engine)) == ["a1", "b1"]
