"""How a dispatch ended: success, refused (an expected result) or error.

A refusal is the domain saying no: a business rule (a
:class:`~cqrs_ddd_core.exceptions.CommandRefusedError`), a version conflict
(:class:`~cqrs_ddd_core.exceptions.ConcurrencyError`: the later of two
writers is refused and may retry), invalid input or a missing record. The
OpenTelemetry conventions leave the classification to the instrumentation
that knows the context ("Recording errors": an HTTP 404 is not an error when
the caller only checks whether something exists; server spans leave 4xx
unset). So tracing, logging and metrics agree on one rule:

* **refused**: ``cqrs.outcome="refused"`` and ``cqrs.refusal.type`` (the
  qualified class name); the span status stays unset and carries no
  exception event; the log line ``<kind>_refused`` has no traceback;
* **error**: anything else: ``cqrs.outcome="error"``, ``error.type``, span
  status ERROR with the exception recorded, ``<kind>_failed`` with a traceback.

The caller still gets the exception either way: a refusal is a result for
telemetry, not a success.
"""

from __future__ import annotations

from typing import Final

from cqrs_ddd_core.exceptions import (
    CommandRefusedError,
    ConcurrencyError,
    MessageValidationError,
    RecordNotFoundError,
)

__all__ = ["DEFAULT_REFUSALS", "Refusals"]

Refusals = tuple[type[BaseException], ...]
"""Exception types a dispatch ends with as an expected refusal."""

DEFAULT_REFUSALS: Final[Refusals] = (
    CommandRefusedError,
    ConcurrencyError,
    MessageValidationError,
    RecordNotFoundError,
)
"""The refusals tracing, logging and metrics middlewares assume unless told otherwise."""
