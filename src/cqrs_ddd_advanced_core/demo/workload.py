"""A shop's day in fast-forward: concurrent senders placing, changing and confirming orders.

``Workload(shop, commands=N, concurrency=C).run()`` sends N commands from C
concurrent tasks (plus queries in between) and returns a :class:`RunStats`.
The mix, per step of a sender:

* place an order (1 to 3 lines), add a line to an open order, confirm one
  (which issues its invoice through a nested command) or cancel one;
* change a user's preferences (40 users, so two senders sometimes change
  the same user's: the state repository's version check refuses the later);
* a **race**: two commands on the same open order at once (confirm and
  cancel, two new lines...), as when a customer and a clerk act together.
  Both load the same version; the second to commit fails with a
  ``ConcurrencyError`` (or, when it loaded after the first committed, is
  refused by the order itself: ``OrderClosedError``);
* a **retry**: confirming an order again after it was closed (a client
  retrying after a timeout), refused with ``OrderClosedError``.

Senders pick their orders among the most recent open ones, so conflicts also
happen without races, as they do when many people work on the same orders.

For each committed command the unit of work's step timings give the
persistence latency, computed the way the metrics middleware computes
``cqrs.persistence.duration``, and the dispatch context gives its events.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import random
import secrets
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cqrs_ddd_advanced_core.demo.domain import OrderLine
from cqrs_ddd_advanced_core.demo.messages import (
    AddOrderLine,
    CancelOrder,
    ConfirmOrder,
    GetOrderSummary,
    GetPreferences,
    PlaceOrder,
    UpdatePreferences,
)
from cqrs_ddd_advanced_core.demo.stats import RunStats
from cqrs_ddd_core.context import DispatchContext, current_context
from cqrs_ddd_core.exceptions import ConcurrencyError
from cqrs_ddd_core.persistence.steps import written_by_aggregate_type
from cqrs_ddd_core.telemetry.api import error_type
from cqrs_ddd_core.telemetry.names import NO_AGGREGATE_TYPE

if TYPE_CHECKING:
    from cqrs_ddd_advanced_core.demo.app import Shop
    from cqrs_ddd_core.domain.messages import Command
    from cqrs_ddd_core.persistence.ports import UnitOfWork, UnitOfWorkFactory

__all__ = ["UnitOfWorkCapture", "Workload"]

_Captured = list[tuple["UnitOfWork", "DispatchContext | None"]]
_CAPTURED: contextvars.ContextVar[_Captured | None] = contextvars.ContextVar(
    "cqrs_demo_captured_uow", default=None
)

SKUS = ("book", "lamp", "mug", "pen", "desk", "chair", "cable", "plant", "clock", "bag")
LANGUAGES = ("en", "fr", "de", "es", "it", "nl")
CURRENCIES = ("EUR", "USD", "GBP", "CHF")
USERS = 40

# (step, weight): see the module docstring.
STEPS: tuple[tuple[str, int], ...] = (
    ("place", 26),
    ("add_line", 22),
    ("confirm", 13),
    ("cancel", 4),
    ("race", 4),
    ("preferences", 20),
    ("retry", 3),
)
RACES: tuple[tuple[str, str], ...] = (
    ("confirm", "cancel"),
    ("add_line", "confirm"),
    ("add_line", "add_line"),
    ("cancel", "add_line"),
)


class UnitOfWorkCapture:
    """A unit-of-work factory that lets the sender see the unit of work of its command.

    The unit-of-work middleware calls the factory inside the dispatch, where
    :func:`~cqrs_ddd_core.context.current_context` is the root command's
    context; both are handed to the sender that asked (through a context
    variable, so concurrent senders never see each other's).
    """

    def __init__(self, factory: UnitOfWorkFactory) -> None:
        self._factory = factory

    def __call__(self) -> UnitOfWork:
        uow = self._factory()
        sink = _CAPTURED.get()
        if sink is not None:
            sink.append((uow, current_context()))
        return uow


def _persistence(
    uow: UnitOfWork, context: DispatchContext | None
) -> tuple[float, Counter[str], Counter[str], Counter[str]] | None:
    """``(seconds, events per aggregate type, stored, enqueued)`` of a committed unit of
    work, as ``MetricsMiddleware`` computes ``cqrs.persistence.duration`` (labelled by
    the aggregate types of the events), ``cqrs.events.stored`` and
    ``cqrs.outbox.enqueued`` (None: nothing written)."""
    timings = uow.timings
    if not timings:
        return None
    seconds = (max(t.end_ns for t in timings) - min(t.start_ns for t in timings)) / 1e9
    events: Counter[str] = Counter()
    if context is not None:
        events.update(
            event.aggregate_type or NO_AGGREGATE_TYPE
            for slot in context.published
            for event in slot
        )
    stored, enqueued = written_by_aggregate_type(getattr(uow, "committed", ()))
    return seconds, events, Counter(stored), Counter(enqueued)


class Workload:
    """Sends ``commands`` commands from ``concurrency`` tasks through ``shop.mediator``.

    Args:
        shop: The application (its unit-of-work factory should be a
            :class:`UnitOfWorkCapture` for persistence figures).
        commands: How many commands to send (nested ones not counted); None:
            as many as ``duration`` allows.
        concurrency: How many senders run at once.
        duration: Stop sending after this many seconds (commands in flight finish).
        rate: Send at most this many commands per second, all senders together.
        seed: Seeds the senders' choices (the interleaving still varies).
        query_ratio: Chance of a query after each step.
        measure_dispatches: Time each send here; pass ``False`` when the
            durations are fed to ``stats.record_dispatch`` from elsewhere
            (the CLI takes them from the metrics middleware itself).
        on_command: Called after each command finished (progress display).
    """

    def __init__(
        self,
        shop: Shop,
        *,
        commands: int | None,
        concurrency: int,
        duration: float | None = None,
        rate: float | None = None,
        seed: int | None = None,
        query_ratio: float = 0.3,
        measure_dispatches: bool = True,
        stats: RunStats | None = None,
        on_command: Callable[[RunStats], None] | None = None,
    ) -> None:
        if (commands is not None and commands < 0) or concurrency < 1:
            raise ValueError("commands must be >= 0 and concurrency >= 1")
        if commands is None and duration is None:
            raise ValueError("give commands, duration or both")
        if (duration is not None and duration <= 0) or (rate is not None and rate <= 0):
            raise ValueError("duration and rate must be positive")
        self.shop = shop
        self.stats = stats if stats is not None else RunStats()
        self.stats.commands_requested = commands or 0
        self.stats.concurrency = concurrency
        self._total = sys.maxsize if commands is None else commands
        self._duration = duration
        self._rate = rate
        self._deadline = math.inf
        self._started = 0.0
        self._slots = 0
        self._concurrency = concurrency
        self._rng = random.Random(seed)
        self._query_ratio = query_ratio
        self._measure = measure_dispatches
        self._on_command = on_command
        self._issued = 0
        self._run_id = secrets.token_hex(3)  # fresh order ids even on a reused database
        self._next_order = 0
        window = 4 * concurrency + 8
        self._open: deque[str] = deque(maxlen=window)  # recent open orders (abandoned beyond)
        self._closed: deque[str] = deque(maxlen=64)
        self._known: deque[str] = deque(maxlen=256)
        self._tasks: list[asyncio.Task[None]] = []

    # -- running -----------------------------------------------------------------------

    async def run(self) -> RunStats:
        """Run to the end, or until :meth:`stop`; returns the stats (``interrupted`` if stopped)."""
        stats = self.stats
        nested_before = Counter(self.shop.nested_commands)
        stats.started_at = time.time()
        start = time.perf_counter()
        self._started = time.monotonic()
        if self._duration is not None:
            self._deadline = self._started + self._duration
        self._tasks = [
            asyncio.create_task(self._sender(random.Random(self._rng.random())), name=f"sender-{i}")
            for i in range(self._concurrency)
        ]
        try:
            outcomes = await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            stats.elapsed_s = time.perf_counter() - start
            stats.ended_at = time.time()
            stats.nested_by_type = Counter(self.shop.nested_commands) - nested_before
        for outcome in outcomes:
            if isinstance(outcome, asyncio.CancelledError):
                stats.interrupted = True
            elif isinstance(outcome, BaseException):
                raise outcome
        return stats

    def stop(self) -> None:
        """Cancel every sender: commands in flight are cancelled and roll back."""
        for task in self._tasks:
            task.cancel()

    def _claim(self, wanted: int) -> int:
        if time.monotonic() >= self._deadline:
            return 0
        granted = min(wanted, self._total - self._issued)
        self._issued += granted
        return granted

    def _more(self) -> bool:
        return self._issued < self._total and time.monotonic() < self._deadline

    async def _pace(self) -> None:
        """With a rate: wait for the next free slot (slot ``k`` is ``k / rate`` s in).

        Taken before a step is chosen, so the step sees the orders as they are
        when it runs (a race counts as one slot).
        """
        if self._rate is not None:
            slot, self._slots = self._slots, self._slots + 1
            delay = self._started + slot / self._rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _sender(self, rng: random.Random) -> None:
        names = [name for name, _ in STEPS]
        weights = [weight for _, weight in STEPS]
        while self._more():
            await self._pace()
            if not self._more():
                break  # its slot came after the end
            step = rng.choices(names, weights)[0]
            await self._step(step, rng)
            if rng.random() < self._query_ratio:
                await self._query(rng)

    async def _step(self, step: str, rng: random.Random) -> None:
        if step in ("add_line", "confirm", "cancel", "race") and not self._open:
            step = "place"
        if step == "retry" and not self._closed:
            step = "confirm" if self._open else "place"
        granted = self._claim(2 if step == "race" else 1)
        if granted == 0:
            return
        if step == "race" and granted == 2:
            order_id = rng.choice(self._open)
            first, second = rng.choice(RACES)
            await asyncio.gather(
                self._send(self._order_command(first, order_id, rng)),
                self._send(self._order_command(second, order_id, rng)),
            )
            return
        if step == "race":  # one command left
            step = "add_line"
        if step == "place":
            self._next_order += 1
            order_id = f"order-{self._run_id}-{self._next_order:06d}"
            lines = [self._line(rng) for _ in range(rng.randint(1, 3))]
            command: Command[Any] = PlaceOrder(
                order_id=order_id, customer_id=f"customer-{rng.randrange(500):03d}", lines=lines
            )
        elif step == "preferences":
            command = UpdatePreferences(
                user_id=f"user-{rng.randrange(USERS):03d}",
                language=rng.choice(LANGUAGES),
                currency=rng.choice(CURRENCIES),
                newsletter=rng.random() < 0.5,
            )
        elif step == "retry":
            command = ConfirmOrder(order_id=rng.choice(self._closed))
        else:
            command = self._order_command(step, rng.choice(self._open), rng)
        await self._send(command)

    def _order_command(self, step: str, order_id: str, rng: random.Random) -> Command[Any]:
        if step == "add_line":
            return AddOrderLine(order_id=order_id, line=self._line(rng))
        if step == "confirm":
            return ConfirmOrder(order_id=order_id)
        return CancelOrder(order_id=order_id, reason=rng.choice(("changed mind", "too slow")))

    @staticmethod
    def _line(rng: random.Random) -> OrderLine:
        return OrderLine(
            sku=rng.choice(SKUS),
            quantity=rng.randint(1, 5),
            unit_price_cents=rng.choice((199, 450, 999, 1250, 4999)),
        )

    # -- one command, one query ----------------------------------------------------------

    async def _send(self, command: Command[Any]) -> None:
        stats = self.stats
        message_type = command.type_name()
        captured: _Captured = []
        token = _CAPTURED.set(captured)
        start = time.perf_counter()
        try:
            await self.shop.mediator.send(command)
        except Exception as exc:
            self._finished(message_type, start, command=True)
            name = error_type(exc)
            stats.errors[name] += 1
            if isinstance(exc, ConcurrencyError):
                stats.conflicts += 1
            return
        finally:
            _CAPTURED.reset(token)
        self._finished(message_type, start, command=True)
        stats.succeeded += 1
        if captured:
            found = _persistence(*captured[0])
            if found is not None:
                seconds, events, stored, enqueued = found
                stats.record_persistence(seconds, events, stored=stored, enqueued=enqueued)
        self._track(command)

    def _finished(self, message_type: str, start: float, *, command: bool) -> None:
        stats = self.stats
        if self._measure:
            kind = "command" if command else "query"
            stats.record_dispatch(kind, message_type, time.perf_counter() - start, nested=False)
        if command:
            stats.commands += 1
            stats.commands_by_type[message_type] += 1
            if self._on_command is not None:
                self._on_command(stats)

    def _track(self, command: Command[Any]) -> None:
        """Keep the senders' view of the orders up to date after a success."""
        if isinstance(command, PlaceOrder):
            self._open.append(command.order_id)
            self._known.append(command.order_id)
        elif isinstance(command, ConfirmOrder | CancelOrder):
            if command.order_id in self._open:
                self._open.remove(command.order_id)
            self._closed.append(command.order_id)

    async def _query(self, rng: random.Random) -> None:
        about_an_order = bool(self._known) and rng.random() < 0.7
        message_type = (GetOrderSummary if about_an_order else GetPreferences).type_name()
        start = time.perf_counter()
        try:
            if about_an_order:
                await self.shop.mediator.query(GetOrderSummary(order_id=rng.choice(self._known)))
            else:
                user_id = f"user-{rng.randrange(USERS):03d}"
                await self.shop.mediator.query(GetPreferences(user_id=user_id))
        except Exception as exc:
            self.stats.query_errors[error_type(exc)] += 1
        self._finished(message_type, start, command=False)
        self.stats.queries += 1
        self.stats.queries_by_type[message_type] += 1
