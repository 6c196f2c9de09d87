"""A mediator's default pipelines use the providers it is given, not the global ones."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cqrs_ddd_advanced_core import EventSourcedMediator
from cqrs_ddd_core.adapters.memory import InMemoryUnitOfWork
from cqrs_ddd_core.cqrs import HandlerRegistry, Mediator
from cqrs_ddd_core.domain import Command, Query


class Ping(Command[str]):
    pass


class Peek(Query[int]):
    pass


def _providers() -> tuple[
    TracerProvider, InMemorySpanExporter, MeterProvider, InMemoryMetricReader
]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return tracer_provider, exporter, MeterProvider(metric_readers=[reader]), reader


def _metric_names(reader: InMemoryMetricReader) -> set[str]:
    data = reader.get_metrics_data()
    assert data is not None
    return {
        metric.name
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }


async def _ping(command: Ping) -> str:
    return "pong"


async def _peek(query: Peek) -> int:
    return 7


async def test_a_mediators_default_pipelines_use_injected_providers() -> None:
    tracer_provider, exporter, meter_provider, reader = _providers()
    registry = HandlerRegistry()
    registry.register_command_handler(Ping, _ping)
    registry.register_query_handler(Peek, _peek)
    mediator = Mediator(
        registry,
        InMemoryUnitOfWork,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )

    assert (await mediator.send(Ping())).result == "pong"
    assert await mediator.query(Peek()) == 7

    assert [span.name for span in exporter.get_finished_spans()] == ["command Ping", "query Peek"]
    assert {"cqrs.command.duration", "cqrs.query.duration"} <= _metric_names(reader)


async def test_an_event_sourced_mediator_passes_injected_providers_to_its_defaults() -> None:
    tracer_provider, exporter, meter_provider, reader = _providers()
    registry = HandlerRegistry()
    registry.register_command_handler(Ping, _ping)
    mediator = EventSourcedMediator(
        registry=registry,
        uow_factory=InMemoryUnitOfWork,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )

    await mediator.send(Ping())

    assert [span.name for span in exporter.get_finished_spans()] == ["command Ping"]
    assert "cqrs.command.duration" in _metric_names(reader)
