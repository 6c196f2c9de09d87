"""``cqrs.events.stored`` / ``cqrs.outbox.enqueued``: counted by the library, observed by the SDK.

The SDK keeps the first registration of an instrument name in a meter and drops
the callbacks of later ones, so every middleware of one meter provider must add
to one set of totals (registered once). These tests count what each provider
reports against what was sent: a lost or a doubled count fails them.
"""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData

from cqrs_ddd_core.middleware import MetricsMiddleware
from cqrs_ddd_core.telemetry import CommitCounts, commit_counts
from cqrs_ddd_core.testing import MetricCapture
from tests.observability.app import PlaceOrder, Shop, build_mediator

ORDER = {"cqrs.aggregate.type": "Order"}


def _sums(data: MetricsData | None, name: str) -> dict[str, float]:
    """``{aggregate type: value}`` of counter ``name`` in one collection."""
    found: dict[str, float] = {}
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        key = str((point.attributes or {})["cqrs.aggregate.type"])
                        assert key not in found, f"two {name} points for {key}"
                        found[key] = point.value
    return found


async def _place(mediator: object, prefix: str, count: int) -> None:
    for i in range(count):
        await mediator.send(PlaceOrder(order_id=f"{prefix}-{i}", amount=1))  # type: ignore[attr-defined]


async def test_two_mediators_on_one_provider_report_the_sum_of_their_commits(
    metric_capture: MetricCapture,
) -> None:
    first = build_mediator(Shop(), meter_provider=metric_capture.meter_provider)
    second = build_mediator(Shop(), meter_provider=metric_capture.meter_provider)

    await _place(first, "a", 3)
    await _place(second, "b", 4)

    assert metric_capture.value("cqrs.events.stored", ORDER) == 7


async def test_each_provider_reports_only_the_commits_of_its_own_mediators() -> None:
    one, two = MetricCapture(), MetricCapture()
    try:
        await _place(build_mediator(Shop(), meter_provider=one.meter_provider), "a", 2)
        await _place(build_mediator(Shop(), meter_provider=two.meter_provider), "b", 5)
        assert one.value("cqrs.events.stored", ORDER) == 2
        assert two.value("cqrs.events.stored", ORDER) == 5
        assert commit_counts(one.meter_provider) is not commit_counts(two.meter_provider)
    finally:
        one.shutdown()
        two.shutdown()


async def test_every_reader_of_a_provider_sees_the_totals_and_collecting_again_adds_nothing() -> (
    None
):
    readers = [InMemoryMetricReader(), InMemoryMetricReader()]
    provider = MeterProvider(metric_readers=readers)
    try:
        mediator = build_mediator(Shop(), meter_provider=provider)
        await _place(mediator, "a", 3)
        for reader in readers:
            assert _sums(reader.get_metrics_data(), "cqrs.events.stored") == {"Order": 3}
            assert _sums(reader.get_metrics_data(), "cqrs.events.stored") == {"Order": 3}
        await _place(mediator, "b", 2)
        for reader in readers:
            assert _sums(reader.get_metrics_data(), "cqrs.events.stored") == {"Order": 5}
    finally:
        provider.shutdown()


async def test_middlewares_built_again_for_a_provider_keep_adding_to_its_totals(
    metric_capture: MetricCapture,
) -> None:
    await _place(build_mediator(Shop(), meter_provider=metric_capture.meter_provider), "a", 2)
    assert metric_capture.value("cqrs.events.stored", ORDER) == 2
    # A middleware made later (a new mediator, a query pipeline's) registers nothing
    # new: the SDK would keep the first registration and drop its callback.
    MetricsMiddleware(meter_provider=metric_capture.meter_provider)
    await _place(build_mediator(Shop(), meter_provider=metric_capture.meter_provider), "b", 1)

    assert metric_capture.value("cqrs.events.stored", ORDER) == 3


@pytest.mark.timeout(60)
async def test_collections_on_another_thread_during_dispatch_lose_and_double_nothing() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    mediator = build_mediator(Shop(), meter_provider=provider)
    seen: list[dict[str, float]] = []
    stop = threading.Event()

    def collect() -> None:  # as the Prometheus server's or the periodic reader's thread does
        while not stop.is_set():
            seen.append(_sums(reader.get_metrics_data(), "cqrs.events.stored"))

    collector = threading.Thread(target=collect)
    collector.start()
    try:
        senders = [_place(mediator, f"s{n}", 50) for n in range(4)]
        await asyncio.gather(*senders)
    finally:
        stop.set()
        collector.join(timeout=30)
    try:
        assert not collector.is_alive()
        values = [point.get("Order", 0) for point in seen]
        assert len(values) > 1
        assert values == sorted(values)  # monotonic in every collection
        assert _sums(reader.get_metrics_data(), "cqrs.events.stored") == {"Order": 200}
    finally:
        provider.shutdown()


def test_counts_add_per_aggregate_type_and_refuse_to_go_down() -> None:
    counts = CommitCounts()
    counts.add({"Order": 2, "Stock": 1}, {"Order": 2})
    counts.add({"Order": 1}, {"Invoice": 3})

    assert counts.events_stored() == {"Order": 3, "Stock": 1}
    assert counts.outbox_enqueued() == {"Order": 2, "Invoice": 3}
    with pytest.raises(ValueError, match="negative"):
        counts.add({"Order": -1}, {})
    assert counts.events_stored() == {"Order": 3, "Stock": 1}
    assert "Stock" in repr(counts)


def test_a_provider_without_an_sdk_gets_counts_that_nobody_reads() -> None:
    provider = NoOpMeterProvider()
    counts = commit_counts(provider)
    counts.add({"Order": 1}, {})

    assert commit_counts(provider) is counts
    assert counts.events_stored() == {"Order": 1}


@pytest.mark.timeout(60)
def test_a_collection_while_new_aggregate_types_are_counted_loses_none_of_them() -> None:
    # Adding a type while a collection iterates the totals would, unguarded, fail
    # the SDK's callback ("dictionary changed size"): that collection would miss
    # every series. Switching threads as often as possible makes it likely.
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    counts = commit_counts(provider)
    stop = threading.Event()
    added: list[int] = []

    def count() -> None:
        n = 0
        while not stop.is_set() and n < 50_000:
            counts.add({f"Type{n}": 1}, {f"Type{n}": 2})
            n += 1
        added.append(n)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    adder = threading.Thread(target=count)
    try:
        adder.start()
        previous: dict[str, float] = {}
        for _ in range(60):
            if not adder.is_alive():
                break
            data = reader.get_metrics_data()
            for name, expected in (("cqrs.events.stored", 1), ("cqrs.outbox.enqueued", 2)):
                seen = _sums(data, name)
                assert set(seen.values()) <= {expected}, name
                if name == "cqrs.events.stored":
                    assert previous.keys() <= seen.keys(), "a collection lost a series"
                    previous = seen
    finally:
        stop.set()
        adder.join(timeout=30)
        sys.setswitchinterval(interval)
    try:
        assert len(_sums(reader.get_metrics_data(), "cqrs.events.stored")) == added[0] > 0
    finally:
        provider.shutdown()


class _EqualProvider(NoOpMeterProvider):
    """Compares equal to every provider of its class and, as Python then does, has no hash."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _EqualProvider)


def test_providers_are_told_apart_by_identity_even_when_unhashable_or_equal() -> None:
    first, second = _EqualProvider(), _EqualProvider()
    assert first == second

    counts = commit_counts(first)
    counts.add({"Order": 1}, {})

    assert commit_counts(first) is counts
    assert commit_counts(second) is not counts
    assert commit_counts(second).events_stored() == {}


def test_a_dropped_provider_leaves_no_counts_for_a_new_one_at_the_same_address() -> None:
    import gc

    registry = sys.modules["cqrs_ddd_core.telemetry.commit_counts"]._by_provider
    provider = NoOpMeterProvider()
    commit_counts(provider).add({"Order": 4}, {})
    key = id(provider)
    del provider
    gc.collect()

    fresh = NoOpMeterProvider()
    assert commit_counts(fresh).events_stored() == {}
    assert key not in registry or registry[key][0]() is not None
