"""Retry a whole command when another writer got there first.

A :class:`~cqrs_ddd_core.exceptions.ConcurrencyError` means the command read
state that changed before it committed; running it again (handler, loads and
all) in a fresh unit of work usually succeeds. This middleware must wrap the
unit of work, so each attempt gets a new transaction::

    Mediator(registry, middlewares=[RetryMiddleware(), UnitOfWorkMiddleware(uow_factory), ...])

The first attempt runs with no retry machinery at all (a failure-free
command pays one ``try``); tenacity schedules the later ones, with jittered
exponential backoff. tenacity is an optional dependency:
``pip install 'cqrs-ddd-advanced-core[retry]'``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from cqrs_ddd_core.exceptions import ConcurrencyError, ConfigurationError
from cqrs_ddd_core.pipeline.pipeline import CallNext, Placement
from cqrs_ddd_core.telemetry.api import error_type

if TYPE_CHECKING:
    from tenacity import RetryCallState

    from cqrs_ddd_core.context import DispatchContext

__all__ = ["RetryMiddleware"]

_log = structlog.get_logger("cqrs_ddd_core.retry")


class RetryMiddleware:
    """Runs the rest of the pipeline again when it raises a retryable error.

    Args:
        attempts: How many times the command may run in all (>= 1).
        initial_delay: Seconds of the first backoff; each later one doubles,
            up to ``max_delay``.
        max_delay: The longest backoff, in seconds.
        jitter: Draw each backoff at random below its bound, so that the
            losers of one conflict do not collide again in step.
        retry_on: The errors worth another attempt.

    Raises:
        ConfigurationError: tenacity is not installed, or an argument is invalid.

    A nested command (sent from a handler, inside its parent's unit of work)
    is not retried on its own: the conflict surfaces at the parent's commit
    and the parent's retry runs the whole flow again.
    """

    name = "retry"
    placement = Placement.of(outside=("unit_of_work",))

    __slots__ = ("_attempts", "_retry_on", "_retrying", "_settings")

    def __init__(
        self,
        *,
        attempts: int = 5,
        initial_delay: float = 0.005,
        max_delay: float = 0.5,
        jitter: bool = True,
        retry_on: Sequence[type[BaseException]] = (ConcurrencyError,),
    ) -> None:
        try:
            import tenacity
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigurationError(
                "RetryMiddleware needs tenacity: pip install 'cqrs-ddd-advanced-core[retry]'"
            ) from exc
        if attempts < 1:
            raise ConfigurationError(f"attempts must be at least 1, got {attempts}")
        if initial_delay < 0 or max_delay < initial_delay:
            raise ConfigurationError(
                f"need 0 <= initial_delay <= max_delay, got {initial_delay} and {max_delay}"
            )
        retry_types = tuple(retry_on)
        if not retry_types or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in retry_types
        ):
            raise ConfigurationError(f"retry_on must list exception types, got {retry_on!r}")
        wait = (
            tenacity.wait_random_exponential(multiplier=initial_delay, max=max_delay)
            if jitter
            else tenacity.wait_exponential(multiplier=initial_delay, max=max_delay)
        )
        self._attempts = attempts
        self._retry_on = retry_types
        self._retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(attempts),
            wait=wait,
            retry=tenacity.retry_if_exception_type(retry_types),
            reraise=True,
        )
        self._settings = (attempts, initial_delay, max_delay, jitter)

    async def __call__(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        if context.uow is not None:  # joined a parent's transaction: the parent retries
            return await call_next(message, context)
        published = len(context.published)
        try:
            return await call_next(message, context)
        except self._retry_on as error:
            if self._attempts == 1:
                raise
            first_error: BaseException = error
        # tenacity takes over from here; the first failure is replayed into it
        # so that its wait and stop rules count it like any other attempt.
        replay = True
        retrying = self._retrying.copy(
            before_sleep=functools.partial(_log_retry, context.message_type)
        )
        async for attempt in retrying:
            with attempt:
                if replay:
                    replay = False
                    raise first_error
                _reset(context, published)
                return await call_next(message, context)
        raise first_error  # pragma: no cover - tenacity either returns or re-raises

    def __repr__(self) -> str:
        attempts, initial, maximum, jitter = self._settings
        names = ", ".join(t.__name__ for t in self._retry_on)
        return (
            f"RetryMiddleware(attempts={attempts}, initial_delay={initial}, "
            f"max_delay={maximum}, jitter={jitter}, retry_on=({names}))"
        )


def _reset(context: DispatchContext, published: int) -> None:
    """Forget what the failed attempt left on the context (its transaction rolled back)."""
    context.uow = None
    context.ordinals = None
    context.events = ()
    del context.published[published:]


def _log_retry(message_type: str, state: RetryCallState) -> None:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    _log.info(
        "command_retry",
        message_type=message_type,
        attempt=state.attempt_number,
        wait_s=round(state.upcoming_sleep, 4),
        error_type=error_type(error) if error is not None else None,
    )
