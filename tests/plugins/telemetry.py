"""`captured`: OpenTelemetry switched on for one test, with in-memory span and metric exporters."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.observability import telemetry


def hex_id(value: int, width: int) -> str:
    return format(value, f"0{width}x")


@dataclass
class Captured:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self, trace: str | None = None) -> list[ReadableSpan]:
        """Finished spans, optionally only those of one trace id (32 hex digits)."""
        spans = list(self.exporter.get_finished_spans())
        return [s for s in spans if trace is None or hex_id(s.context.trace_id, 32) == trace]

    def counts(self, name: str) -> dict[frozenset[tuple[str, Any]], int]:
        """The counter `name`'s value per attribute set."""
        data = self.reader.get_metrics_data()
        result: dict[frozenset[tuple[str, Any]], int] = {}
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            result[frozenset((point.attributes or {}).items())] = int(point.value)  # type: ignore[union-attr]
        return result


@pytest.fixture
def captured() -> Iterator[Captured]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    telemetry.enable(tracer_provider, meter_provider)
    try:
        yield Captured(exporter, reader)
    finally:
        telemetry.disable()
        tracer_provider.shutdown()
        meter_provider.shutdown()
