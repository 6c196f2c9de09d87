"""RetryMiddleware: a command that lost a race runs again, in a fresh unit of work."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cqrs_ddd_core import CommandResponse, HandlerRegistry, Mediator
from cqrs_ddd_core.adapters.memory import InMemoryUnitOfWork
from cqrs_ddd_core.context import current_context
from cqrs_ddd_core.exceptions import (
    ConcurrencyError,
    ConfigurationError,
    PipelineConfigurationError,
)
from cqrs_ddd_core.middleware import UnitOfWorkMiddleware
from cqrs_ddd_core.middleware.retry import RetryMiddleware
from tests.support.accounts import Deposit, Deposited, DepositMany


def mediator_failing(times: int, retry: RetryMiddleware, error: Exception | None = None):
    """A mediator whose Deposit handler fails ``times`` times, and what it saw."""
    seen: dict[str, list] = {"uows": [], "calls": []}
    published: list[Deposited] = []
    registry = HandlerRegistry()

    async def handle(command: Deposit) -> CommandResponse[int]:
        context = current_context()
        assert context is not None
        seen["uows"].append(context.uow)
        seen["calls"].append(command.amount)
        event = Deposited(amount=len(seen["calls"]))
        if len(seen["calls"]) <= times:
            context.published.append([event])  # as if the attempt had produced it
            raise error or ConcurrencyError("Account:a1", 1, 2)
        return CommandResponse(len(seen["calls"]), (event,))

    async def on_deposited(event: Deposited) -> None:
        published.append(event)

    registry.register_command_handler(Deposit, handle)
    registry.register_event_handler(Deposited, on_deposited)
    mediator = Mediator(registry, middlewares=[retry, UnitOfWorkMiddleware(InMemoryUnitOfWork)])
    return mediator, seen, published


async def test_a_command_that_succeeds_runs_once() -> None:
    mediator, seen, _ = mediator_failing(0, RetryMiddleware())

    response = await mediator.send(Deposit(account_id="a1", amount=1))

    assert response.result == 1
    assert len(seen["calls"]) == 1


async def test_a_conflict_is_retried_in_a_fresh_unit_of_work_until_it_succeeds() -> None:
    mediator, seen, published = mediator_failing(3, RetryMiddleware(initial_delay=0.0001))

    response = await mediator.send(Deposit(account_id="a1", amount=1))

    assert response.result == 4
    uows = seen["uows"]
    assert len({id(u) for u in uows}) == 4
    assert all(not u.is_open for u in uows)
    # Only the attempt that committed reaches the in-process event handlers.
    assert [e.amount for e in published] == [4]


async def test_it_gives_up_after_the_last_attempt_with_the_last_error() -> None:
    mediator, seen, published = mediator_failing(10, RetryMiddleware(attempts=3, initial_delay=0))

    with pytest.raises(ConcurrencyError):
        await mediator.send(Deposit(account_id="a1", amount=1))

    assert len(seen["calls"]) == 3
    assert published == []


async def test_other_errors_are_not_retried() -> None:
    mediator, seen, _ = mediator_failing(1, RetryMiddleware(), error=ValueError("bad input"))

    with pytest.raises(ValueError, match="bad input"):
        await mediator.send(Deposit(account_id="a1", amount=1))

    assert len(seen["calls"]) == 1


async def test_errors_to_retry_are_configurable() -> None:
    retry = RetryMiddleware(retry_on=(ValueError,), initial_delay=0)
    mediator, _, _ = mediator_failing(2, retry, error=ValueError("flaky"))

    assert (await mediator.send(Deposit(account_id="a1", amount=1))).result == 3


async def test_a_nested_command_is_retried_by_its_parent_only() -> None:
    retry = RetryMiddleware(initial_delay=0)
    calls = {"parent": 0, "child": 0}
    registry = HandlerRegistry()
    mediator = Mediator(registry, middlewares=[retry, UnitOfWorkMiddleware(InMemoryUnitOfWork)])

    async def parent(command: DepositMany) -> int:
        calls["parent"] += 1
        return (await mediator.send(Deposit(account_id="a1", amount=1))).result

    async def child(command: Deposit) -> int:
        calls["child"] += 1
        if calls["child"] == 1:
            raise ConcurrencyError("Account:a1", 0, 1)
        return calls["child"]

    registry.register_command_handler(DepositMany, parent)
    registry.register_command_handler(Deposit, child)

    assert (await mediator.send(DepositMany(account_id="a1", items=[]))).result == 2
    assert calls == {"parent": 2, "child": 2}


def test_it_must_run_outside_the_unit_of_work() -> None:
    with pytest.raises(PipelineConfigurationError, match="retry must run outside"):
        Mediator(
            HandlerRegistry(),
            middlewares=[UnitOfWorkMiddleware(InMemoryUnitOfWork), RetryMiddleware()],
        )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 0},
        {"initial_delay": -1},
        {"initial_delay": 2, "max_delay": 1},
        {"retry_on": ()},
        {"retry_on": (int,)},
    ],
)
def test_invalid_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ConfigurationError):
        RetryMiddleware(**kwargs)


def test_without_tenacity_it_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tenacity", None)

    with pytest.raises(ConfigurationError, match=r"cqrs-ddd-advanced-core\[retry\]"):
        RetryMiddleware()


def test_importing_it_does_not_need_tenacity() -> None:
    code = (
        "import sys; sys.modules['tenacity'] = None; "
        "import cqrs_ddd_core.middleware.retry as m; print(m.RetryMiddleware.name)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "retry"


def test_repr_shows_the_settings() -> None:
    assert repr(RetryMiddleware(attempts=3)) == (
        "RetryMiddleware(attempts=3, initial_delay=0.005, max_delay=0.5, jitter=True, "
        "retry_on=(ConcurrencyError))"
    )
