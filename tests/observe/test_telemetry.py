"""OpenTelemetry spans and GenAI metrics, checked with the SDK's in-memory exporters."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from decimal import Decimal

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.observe.helpers import T0, event, memory_guard
from tokenward.core.budgets import Budget, Subject
from tokenward.core.decide import CallPlan
from tokenward.core.usage import Usage
from tokenward.errors import BudgetExceeded
from tokenward.guard import Outcome
from tokenward.observe import Telemetry
from tokenward.observe.telemetry import DURATION_BUCKETS, TOKEN_BUCKETS


@pytest.fixture
def otel() -> tuple[Telemetry, InMemorySpanExporter, InMemoryMetricReader]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    return Telemetry(tracer_provider, meter_provider), exporter, reader


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    out: dict[str, list[Any]] = {}
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                out.setdefault(metric.name, []).extend((metric.unit, p) for p in metric.data.data_points)
    return out


def test_one_client_span_per_call_with_genai_attributes(otel: Any) -> None:
    telemetry, exporter, reader = otel
    guard, _ = memory_guard(telemetry)
    admission = guard.admit(
        Subject(user="alice", session="conv-1", agent="coder"),
        CallPlan("gpt-4o-mini", input_tokens=1200, max_output_tokens=256),
        endpoint="openai-chat",
        provider="openai",
    )
    usage = Usage(input_tokens=1250, output_tokens=90, cache_read_tokens=1000, reasoning_tokens=30)
    guard.settle(
        admission,
        Outcome(usage, model_served="gpt-4o-mini-2024-07-18", metadata={"response_id": "chatcmpl-1"}),
    )
    (span,) = exporter.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert span.name == "chat gpt-4o-mini" and span.kind is SpanKind.CLIENT
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert attrs["gen_ai.response.id"] == "chatcmpl-1"
    assert attrs["gen_ai.conversation.id"] == "conv-1" and attrs["gen_ai.agent.id"] == "coder"
    assert attrs["gen_ai.request.max_tokens"] == 256
    assert attrs["gen_ai.usage.input_tokens"] == 1250
    assert attrs["gen_ai.usage.output_tokens"] == 90
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 1000
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 30
    assert "gen_ai.usage.cache_creation.input_tokens" not in attrs  # not reported: left out, not 0
    assert Decimal(str(attrs["tokenward.cost_usd"])) > 0
    assert attrs["tokenward.subject.user"] == "alice" and attrs["tokenward.held.output_tokens"] == "256"
    assert span.status.status_code is StatusCode.UNSET

    points = _points(reader)
    usage_points = {
        p.attributes["gen_ai.token.type"]: (unit, p) for unit, p in points["gen_ai.client.token.usage"]
    }
    assert usage_points["input"][1].sum == 1250 and usage_points["output"][1].sum == 90
    assert usage_points["input"][0] == "{token}"
    assert tuple(usage_points["input"][1].explicit_bounds) == TOKEN_BUCKETS
    assert usage_points["input"][1].attributes["gen_ai.request.model"] == "gpt-4o-mini"
    ((unit, duration),) = points["gen_ai.client.operation.duration"]
    assert unit == "s" and duration.count == 1 and tuple(duration.explicit_bounds) == DURATION_BUCKETS
    assert duration.attributes["gen_ai.provider.name"] == "openai"


def test_a_refused_call_is_an_error_span_naming_the_budget(otel: Any) -> None:
    telemetry, exporter, reader = otel
    guard, _ = memory_guard(telemetry)
    guard.ledger.put_budget(Budget("tiny", "session", "total_tokens", Decimal(100)))
    with pytest.raises(BudgetExceeded):
        guard.admit(Subject(session="s"), CallPlan("gpt-4o-mini", input_tokens=500, max_output_tokens=10))
    (span,) = exporter.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert attrs["error.type"] == "budget_exceeded"
    assert attrs["tokenward.budget.name"] == "tiny" and attrs["tokenward.budget.limit"] == "100"
    assert attrs["tokenward.budget.meter"] == "total_tokens"
    assert "gen_ai.client.token.usage" not in _points(reader)


def test_a_recorded_charge_gets_a_span_at_its_own_instant(otel: Any) -> None:
    telemetry, exporter, _ = otel
    guard, _ = memory_guard(telemetry)
    guard.charge(event("rec-1", T0, cached=40))
    (span,) = exporter.get_finished_spans()
    assert span.start_time == span.end_time == int(T0.timestamp() * 1e9)
    assert dict(span.attributes or {})["gen_ai.usage.cache_read.input_tokens"] == 40


def test_an_upstream_error_marks_the_span(otel: Any) -> None:
    telemetry, exporter, reader = otel
    guard, _ = memory_guard(telemetry)
    admission = guard.admit(Subject(session="s"), CallPlan("gpt-4o-mini", 10, 10), endpoint="openai-chat")
    guard.settle(admission, Outcome(None, status="upstream_error"))
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert dict(span.attributes or {})["error.type"] == "upstream_error"
    ((_, duration),) = _points(reader)["gen_ai.client.operation.duration"]
    assert duration.attributes["error.type"] == "upstream_error"
