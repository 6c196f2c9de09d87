"""The demo shop: a realistic domain and a concurrent workload for ``cqrs-ddd demo``.

* :mod:`~cqrs_ddd_advanced_core.demo.domain`: ``Order`` and ``Invoice``
  (event-sourced), ``UserPreferences`` (``@non_event_sourced``, state-stored);
* :mod:`~cqrs_ddd_advanced_core.demo.messages`: commands, queries, read models;
* :mod:`~cqrs_ddd_advanced_core.demo.app`: :class:`Shop`, the handlers on an
  ``EventSourcedMediator`` with its default pipeline plus audit;
* :mod:`~cqrs_ddd_advanced_core.demo.workload`: :class:`Workload`, N commands
  from C concurrent senders, with real conflicts;
* :mod:`~cqrs_ddd_advanced_core.demo.stats`: :class:`RunStats`, the summary figures.

Only ports are used: wire the in-memory or the SQLAlchemy adapters (the CLI
does the latter; ``examples/shop/run.py`` shows both).
"""

from __future__ import annotations

from cqrs_ddd_advanced_core.demo.app import Shop
from cqrs_ddd_advanced_core.demo.stats import RunStats
from cqrs_ddd_advanced_core.demo.workload import UnitOfWorkCapture, Workload

__all__ = ["RunStats", "Shop", "UnitOfWorkCapture", "Workload"]
