"""``cqrs.events.stored`` and ``cqrs.outbox.enqueued``: counted here, read by the SDK.

An SDK ``Counter.add`` costs about as much as a histogram record (some 60k
instructions: a ``Measurement`` built, its attributes cleaned, copied and
hashed), twice per commit. Counting is an integer addition, so the library
counts per aggregate type itself and reports the totals through observable
counters (same names, units, descriptions and attributes, hence the same
Prometheus series and OTLP sums), whose callbacks the SDK calls when it
collects: on a scrape, on the periodic exporter's thread.

**One registration per meter provider.** The SDK keeps the first
registration of an instrument name in a meter and returns it for later
ones, dropping their callbacks; a proxy meter (the API's, before the SDK is
installed) forwards its registrations when the SDK arrives, where the same
rule applies. So every metrics middleware reporting to one provider shares
one :class:`CommitCounts`, registered once:

* the global provider (no ``meter_provider``, or the one that is the global
  when the middleware is built): one process-wide instance, registered on
  the global meter when it is first needed (through the proxy if the SDK is
  not installed yet: it forwards to the SDK set later);
* any other provider ``P``: one instance per ``P``, registered on ``P``'s
  meter. If ``P`` later becomes the global provider, its registration came
  first there and the global instance's was dropped, so ``P``'s callback
  reports the global instance's counts as well (the SDK calls only the first
  registration's callback, so nothing is reported twice).

Counts are cumulative since the process started counting (a commit made
before the SDK was installed is included) and only grow. Additions and reads
take a lock: collection runs on other threads (the Prometheus server's, the
periodic reader's), and mediators may run on several event loops.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING
from weakref import ref

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from cqrs_ddd_core.telemetry.api import get_meter
from cqrs_ddd_core.telemetry.names import (
    ATTR_AGGREGATE_TYPE,
    METRIC_EVENTS_STORED,
    METRIC_OUTBOX_ENQUEUED,
)

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

__all__ = [
    "EVENTS_STORED_DESCRIPTION",
    "OUTBOX_ENQUEUED_DESCRIPTION",
    "CommitCounts",
    "commit_counts",
]

EVENTS_STORED_DESCRIPTION = "Events appended to an event store by committed units of work."
OUTBOX_ENQUEUED_DESCRIPTION = "Messages written to an outbox by committed units of work."


class CommitCounts:
    """Events stored and outbox messages enqueued per aggregate type, since counting began.

    Get the instance of a meter provider with :func:`commit_counts`; its
    :meth:`add` is what the metrics middleware calls once per commit.
    """

    __slots__ = ("_attributes", "_events", "_lock", "_outbox")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[str, int] = {}
        self._outbox: dict[str, int] = {}
        # One attribute mapping per aggregate type, reused for every observation.
        self._attributes: dict[str, Mapping[str, str]] = {}

    def add(self, stored: Mapping[str, int], enqueued: Mapping[str, int]) -> None:
        """Count one commit's ``stored`` events and ``enqueued`` messages per aggregate type.

        Raises:
            ValueError: a count is negative (counters only grow).
        """
        with self._lock:
            for counts, added in ((self._events, stored), (self._outbox, enqueued)):
                for aggregate_type, count in added.items():
                    if count < 0:
                        raise ValueError(f"a negative count ({count}) for {aggregate_type!r}")
                    counts[aggregate_type] = counts.get(aggregate_type, 0) + count

    def events_stored(self) -> dict[str, int]:
        """The events stored so far, per aggregate type."""
        with self._lock:
            return dict(self._events)

    def outbox_enqueued(self) -> dict[str, int]:
        """The outbox messages enqueued so far, per aggregate type."""
        with self._lock:
            return dict(self._outbox)

    def _observations(self, events: bool, *also: CommitCounts) -> list[Observation]:
        totals: dict[str, int] = {}
        for counts in (self, *also):
            with counts._lock:
                source = counts._events if events else counts._outbox
                for aggregate_type, count in source.items():
                    totals[aggregate_type] = totals.get(aggregate_type, 0) + count
        return [Observation(count, self._attributes_of(key)) for key, count in totals.items()]

    def _attributes_of(self, aggregate_type: str) -> Mapping[str, str]:
        found = self._attributes.get(aggregate_type)
        if found is None:
            found = self._attributes[aggregate_type] = {ATTR_AGGREGATE_TYPE: aggregate_type}
        return found

    def __repr__(self) -> str:
        return (
            f"CommitCounts(events_stored={self.events_stored()}, "
            f"outbox_enqueued={self.outbox_enqueued()})"
        )


_registry_lock = threading.Lock()
_global: CommitCounts | None = None
# Keyed by identity, not by ``==`` and ``hash`` (a provider class may define
# ``__eq__`` without ``__hash__``, or two providers may compare equal): ``id``
# -> (a weak reference to the provider, its counts). A dropped provider's
# entry is pruned at the next registration, and the identity check on lookup
# makes a reused ``id`` harmless.
_by_provider: dict[int, tuple[ref[MeterProvider], CommitCounts]] = {}


def commit_counts(meter_provider: MeterProvider | None = None) -> CommitCounts:
    """The counts reported to ``meter_provider`` (the global provider when ``None``).

    The first call for a provider registers the two observable counters on
    its ``cqrs_ddd`` meter; later calls return the same instance.
    """
    global _global
    with _registry_lock:
        if meter_provider is None or meter_provider is metrics.get_meter_provider():
            if _global is None:
                counts = CommitCounts()
                _register(get_meter(None), counts, None)
                _global = counts
            return _global
        entry = _by_provider.get(id(meter_provider))
        if entry is not None and entry[0]() is meter_provider:
            return entry[1]
        for key in [k for k, (alive, _) in _by_provider.items() if alive() is None]:
            del _by_provider[key]
        found = CommitCounts()
        _register(get_meter(meter_provider), found, meter_provider)
        _by_provider[id(meter_provider)] = (ref(meter_provider), found)
        return found


def _register(meter: metrics.Meter, counts: CommitCounts, provider: MeterProvider | None) -> None:
    def also() -> tuple[CommitCounts, ...]:
        # A provider made the global one after it was registered here: the
        # global instance's registration (direct or forwarded by the proxy)
        # came second on this meter and was dropped, so it is reported here.
        if (
            provider is not None
            and _global is not None
            and metrics.get_meter_provider() is provider
        ):
            return (_global,)
        return ()

    def events(_options: CallbackOptions) -> Iterable[Observation]:
        return counts._observations(True, *also())

    def outbox(_options: CallbackOptions) -> Iterable[Observation]:
        return counts._observations(False, *also())

    meter.create_observable_counter(
        METRIC_EVENTS_STORED,
        callbacks=[events],
        unit="{event}",
        description=EVENTS_STORED_DESCRIPTION,
    )
    meter.create_observable_counter(
        METRIC_OUTBOX_ENQUEUED,
        callbacks=[outbox],
        unit="{message}",
        description=OUTBOX_ENQUEUED_DESCRIPTION,
    )
