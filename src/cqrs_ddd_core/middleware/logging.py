"""Structured logs for each dispatch, with its ids bound for everything logged inside it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any, Final

import structlog

from cqrs_ddd_core.context import DispatchContext
from cqrs_ddd_core.exceptions import ConcurrencyError, MessageValidationError, RecordNotFoundError
from cqrs_ddd_core.pipeline.pipeline import CallNext, Placement
from cqrs_ddd_core.telemetry.api import error_type
from cqrs_ddd_core.telemetry.names import OUTCOME_REFUSED
from cqrs_ddd_core.telemetry.outcomes import DEFAULT_REFUSALS, Refusals
from cqrs_ddd_core.telemetry.redaction import DEFAULT_SECRET_MARKERS, Redactor

__all__ = ["DEFAULT_EXPECTED_ERRORS", "LoggingMiddleware"]

DEFAULT_EXPECTED_ERRORS: Final[tuple[type[BaseException], ...]] = (
    MessageValidationError,
    ConcurrencyError,
    RecordNotFoundError,
    asyncio.CancelledError,
)
"""Failures that are part of normal business (logged at WARNING, without traceback)."""

_LOGGED: Final = "_cqrs_ddd_logged_by"
_METHODS: Final = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
}
_ENVELOPE: Final = frozenset({"message_id", "correlation_id"})


def _structlog_vars(*keys: str) -> tuple[ContextVar[Any], ...]:
    # The very ContextVars behind structlog.contextvars.bind_contextvars, found
    # through its public API once; setting them directly costs ~0.1 µs instead
    # of ~1.5 µs per bind/reset round, with the same meaning.
    tokens = structlog.contextvars.bind_contextvars(**dict.fromkeys(keys))
    found = tuple(tokens[key].var for key in keys)
    structlog.contextvars.reset_contextvars(**tokens)
    return found


_CORRELATION_ID, _MESSAGE_TYPE, _MESSAGE_ID = _structlog_vars(
    "correlation_id", "message_type", "message_id"
)


# structlog's public configuration, read once per dispatch (``get_config``
# returns a fresh dict of the very objects configure() installs, ~0.3 µs): a
# bound logger is reused for as long as they stay the same objects.
_get_config: Final = structlog.get_config


class _Bound:
    """A bound logger, what it was built from, and the levels it emits (when fixed)."""

    __slots__ = ("context_class", "factory", "levels", "log", "processors", "stdout", "wrapper")

    def __init__(self, log: Any, config: dict[str, Any]) -> None:
        self.log = log
        self.wrapper = config["wrapper_class"]
        self.factory = config["logger_factory"]
        self.processors = config["processors"]
        self.context_class = config["context_class"]
        # sys.stdout is part of it because the default PrintLogger writes to
        # the sys.stdout of the moment it was made (pytest's capsys, redirect_stdout).
        self.stdout = sys.stdout
        self.levels = _fixed_levels(log)

    def current(self, config: dict[str, Any]) -> bool:
        """True while structlog's configuration is the one this logger was built from.

        By identity: configure() and reset_defaults() install new objects;
        capture_logs edits the processor list in place, which a reused logger
        sees too.
        """
        return (
            self.wrapper is config["wrapper_class"]
            and self.processors is config["processors"]
            and self.factory is config["logger_factory"]
            and self.context_class is config["context_class"]
            and self.stdout is sys.stdout
        )


def _logged_inside(logged_by: object, context: DispatchContext) -> bool:
    # True when the dispatch that logged the exception runs inside ``context``
    # (a nested command). Not merely "was logged": the same exception object
    # may be raised again by an unrelated dispatch (a module-level instance).
    node = logged_by if isinstance(logged_by, DispatchContext) else None
    while node is not None:
        if node is context:
            return True
        node = node.parent
    return False


def _emit(log: Any, level: int, event: str, fields: dict[str, Any]) -> None:
    # A broken logging setup must not fail a command that has already
    # committed; like logging.Handler.handleError, report it on stderr.
    try:
        getattr(log, _METHODS[level])(event, **fields)
    except Exception as exc:
        print(
            f"--- cqrs_ddd_core: logging {event!r} failed: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )


_Check = Callable[[Any, int], bool] | None
_checks: dict[type, _Check] = {}


def _check_for(logger_type: type) -> _Check:
    # Only trust a method defined on the class: structlog's generic BoundLogger
    # turns any unknown attribute into a logging method.
    for attr in ("is_enabled_for", "isEnabledFor"):  # structlog >= 25.1 / stdlib
        method = getattr(logger_type, attr, None)
        if callable(method):
            return method  # type: ignore[no-any-return]
    return None


def _enabled(log: Any, level: int) -> bool:
    kind = type(log)
    try:
        check = _checks[kind]
    except KeyError:
        check = _checks[kind] = _check_for(kind)
    return True if check is None else bool(check(log, level))


# The classes make_filtering_bound_logger returns for the standard levels. Its
# documentation promises their level cannot change once built ("a static
# class"), so which levels they emit is asked once. A structlog that built a
# new class per call would only cost the fast path: such loggers are then
# asked on every dispatch, as stdlib-backed ones are.
_FILTERING_CLASSES: Final = frozenset(
    structlog.make_filtering_bound_logger(level)
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
)


def _fixed_levels(log: Any) -> dict[int, bool] | None:
    """Which levels ``log`` emits, when that cannot change without a reconfiguration.

    structlog's filtering loggers (``make_filtering_bound_logger``) decide by a
    level fixed in their class; a stdlib-backed logger asks the stdlib logger,
    whose level may change at any time (None: ask on every dispatch).
    """
    kind = type(log)
    try:
        check = _checks[kind]
    except KeyError:
        check = _checks[kind] = _check_for(kind)
    if check is None:
        return dict.fromkeys(_METHODS, True)
    if kind in _FILTERING_CLASSES:
        return {level: bool(check(log, level)) for level in _METHODS}
    return None


def _payload(message: Any, redactor: Redactor) -> Any:
    try:
        fields = message.model_dump(mode="json", exclude=_ENVELOPE)
    except Exception as exc:  # a field without a JSON form must not fail the command
        return f"<unserialisable: {type(exc).__qualname__}>"
    return redactor(fields)


class LoggingMiddleware:
    """Logs the start and end of each dispatch and binds its ids in structlog's contextvars.

    For the whole dispatch ``correlation_id``, ``message_type`` and
    ``message_id`` are bound with ``structlog.contextvars`` (restored after,
    so a nested dispatch gives them back to its parent), so whatever the
    handler logs carries them. Events (``kind`` is ``command`` or ``query``):

    * ``<kind>_started`` at DEBUG;
    * ``<kind>_succeeded`` at INFO for commands, DEBUG for queries, with
      ``outcome``, ``duration_ms`` and, for commands, ``events_raised`` (the
      events the command raised);
    * ``<kind>_refused`` at the success level, with ``outcome="refused"``,
      ``refusal_type`` (the qualified class name, as ``cqrs.refusal.type``)
      and ``reason`` (the message), no traceback, for refusals (``refusals``:
      a business rule, a version conflict...; a result, not an error, as the
      span and the metrics say too: see :mod:`cqrs_ddd_core.telemetry.outcomes`);
    * ``<kind>_failed`` with ``outcome="error"``, ``error_type`` (the
      qualified class name, as ``error.type``) and ``duration_ms``: at WARNING
      with ``error`` (the message) for other expected failures
      (``expected_errors``: a cancellation...), at ERROR with the traceback for
      anything else. A failure is logged once, by the innermost dispatch it
      passed through; the enclosing dispatches end with the same event at
      their success level and ``propagated=True``.

    Events are only built when the logger would emit them (checked with
    ``is_enabled_for``), so a filtered-out level costs next to nothing. The
    library never configures structlog.

    Args:
        logger_name: Name passed to ``structlog.get_logger``.
        log_payload: Add the message's fields as ``payload`` to the start
            event, with secret-looking fields redacted (recursively).
        secret_markers: Extra key fragments to redact, besides
            :data:`~cqrs_ddd_core.telemetry.DEFAULT_SECRET_MARKERS`.
        expected_errors: Exception types logged at WARNING without traceback
            (when not refusals).
        refusals: Exception types logged as ``<kind>_refused``.
        command_level: Level of ``command_succeeded``.
        query_level: Level of ``query_succeeded``.
    """

    name = "logging"
    placement = Placement.of(outside=("unit_of_work",))

    __slots__ = (
        "_bound",
        "_events",
        "_expected",
        "_levels",
        "_logger",
        "_logger_name",
        "_redactor",
        "_refusals",
        "_refused",
        "log_payload",
    )

    def __init__(
        self,
        *,
        logger_name: str = "cqrs_ddd_core.dispatch",
        log_payload: bool = False,
        secret_markers: Iterable[str] = (),
        expected_errors: tuple[type[BaseException], ...] = DEFAULT_EXPECTED_ERRORS,
        command_level: int = logging.INFO,
        query_level: int = logging.DEBUG,
        refusals: Refusals = DEFAULT_REFUSALS,
    ) -> None:
        for level in (command_level, query_level):
            if level not in _METHODS:
                raise ValueError(f"level must be one of {sorted(_METHODS)}, got {level!r}")
        self._logger_name = logger_name
        self._logger: Any = structlog.get_logger(logger_name)
        self._bound: _Bound | None = None
        self.log_payload = log_payload
        self._redactor = (
            Redactor(DEFAULT_SECRET_MARKERS, extra_markers=secret_markers) if log_payload else None
        )
        self._expected = tuple(expected_errors)
        self._refusals = tuple(refusals)
        self._levels = {"command": command_level, "query": query_level}
        self._events = {
            kind: (f"{kind}_started", f"{kind}_succeeded", f"{kind}_failed")
            for kind in ("command", "query")
        }
        self._refused = {kind: f"{kind}_refused" for kind in ("command", "query")}

    async def __call__(self, message: Any, context: DispatchContext, call_next: CallNext) -> Any:
        bound = self._bound
        config = _get_config()
        if bound is None or not bound.current(config):
            log, levels = self._rebind(config)
        else:
            log, levels = bound.log, bound.levels
        kind = context.kind
        started, succeeded, failed = self._events[kind]
        t_corr = _CORRELATION_ID.set(context.correlation_id)
        t_type = _MESSAGE_TYPE.set(context.message_type)
        t_id = _MESSAGE_ID.set(context.message_id)
        try:
            if levels[logging.DEBUG] if levels is not None else _enabled(log, logging.DEBUG):
                fields: dict[str, Any] = {
                    "message_type": context.message_type,
                    "message_id": context.message_id,
                    "correlation_id": context.correlation_id,
                    "causation_id": context.causation_id,
                }
                if self._redactor is not None:
                    fields["payload"] = _payload(message, self._redactor)
                _emit(log, logging.DEBUG, started, fields)
            start = time.perf_counter_ns()
            try:
                result = await call_next(message, context)
            except BaseException as exc:
                self._log_failure(log, failed, context, exc, start)
                raise
            level = self._levels[kind]
            if levels[level] if levels is not None else _enabled(log, level):
                fields = self._end_fields(context, start, "success")
                if kind == "command":
                    fields["events_raised"] = len(context.events)
                _emit(log, level, succeeded, fields)
            return result
        finally:
            _MESSAGE_ID.reset(t_id)
            _MESSAGE_TYPE.reset(t_type)
            _CORRELATION_ID.reset(t_corr)

    def _rebind(self, config: dict[str, Any]) -> tuple[Any, dict[int, bool] | None]:
        """The logger as structlog's configuration *now* makes it.

        Resolved at dispatch, not at import: the application may configure
        structlog (or a test capture it) after the mediator was built. Asking
        the lazy proxy costs ~3 µs unless the application set
        ``cache_logger_on_first_use``, so the bound logger, and the levels it
        emits when they are fixed, are kept for as long as the configuration
        they were built from stays the same (``structlog.get_config()``,
        compared by identity).
        """
        bound = self._bound = _Bound(self._logger.bind(), config)
        return bound.log, bound.levels

    def _log_failure(
        self, log: Any, event: str, context: DispatchContext, exc: BaseException, start: int
    ) -> None:
        refused = isinstance(exc, self._refusals)
        if _logged_inside(getattr(exc, _LOGGED, None), context):
            level = self._levels[context.kind]  # a nested dispatch logged it already
            if _enabled(log, level):
                if refused:
                    fields = self._end_fields(context, start, OUTCOME_REFUSED)
                    fields["refusal_type"] = error_type(exc)
                    event = self._refused[context.kind]
                else:
                    fields = self._end_fields(context, start, "error")
                    fields["error_type"] = error_type(exc)
                fields["propagated"] = True
                _emit(log, level, event, fields)
            return
        with contextlib.suppress(AttributeError, TypeError):  # exotic exception types
            setattr(exc, _LOGGED, context)
        if refused:
            level = self._levels[context.kind]
            if _enabled(log, level):
                fields = self._end_fields(context, start, OUTCOME_REFUSED)
                fields["refusal_type"] = error_type(exc)
                fields["reason"] = str(exc)  # our typed errors carry controlled messages
                _emit(log, level, self._refused[context.kind], fields)
            return
        expected = isinstance(exc, self._expected)
        level = logging.WARNING if expected else logging.ERROR
        if not _enabled(log, level):
            return
        fields = self._end_fields(context, start, "error")
        fields["error_type"] = error_type(exc)
        if expected:
            # Our typed errors carry controlled messages; other exceptions'
            # messages may hold SQL or payload values, so they get the
            # traceback (exc_info) and no separate message field.
            fields["error"] = str(exc)
            _emit(log, logging.WARNING, event, fields)
        else:
            fields["exc_info"] = exc
            _emit(log, logging.ERROR, event, fields)

    @staticmethod
    def _end_fields(context: DispatchContext, start: int, outcome: str) -> dict[str, Any]:
        return {
            "message_type": context.message_type,
            "message_id": context.message_id,
            "correlation_id": context.correlation_id,
            "outcome": outcome,
            "duration_ms": round((time.perf_counter_ns() - start) / 1e6, 3),
        }

    def __repr__(self) -> str:
        return (
            f"LoggingMiddleware(logger_name={self._logger_name!r}, "
            f"log_payload={self.log_payload}, expected_errors="
            f"[{', '.join(t.__qualname__ for t in self._expected)}])"
        )
