"""OpenTelemetry spans and GenAI metrics for every guarded call (a guard observer).

Follows the OpenTelemetry semantic conventions for generative AI (status "Development";
https://opentelemetry.io/docs/specs/semconv/gen-ai/, the ``semantic-conventions-genai``
registry), client side:

* one span per call, kind ``CLIENT``, named ``"{gen_ai.operation.name} {gen_ai.request.model}"``,
  from admission to settlement, with ``gen_ai.operation.name`` (``chat``),
  ``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
  ``gen_ai.request.max_tokens`` (the clamped bound), ``gen_ai.response.id``,
  ``gen_ai.conversation.id`` (the session), ``gen_ai.agent.id``, and the usage:
  ``gen_ai.usage.input_tokens`` (the whole prompt, cached tokens included),
  ``gen_ai.usage.output_tokens`` (reasoning included), ``gen_ai.usage.cache_read.input_tokens``,
  ``gen_ai.usage.cache_creation.input_tokens``, ``gen_ai.usage.reasoning.output_tokens``; a count
  the provider did not report is left out, never set to 0;
* tokenward's own attributes: ``tokenward.cost_usd`` (exact, as a decimal string),
  ``tokenward.cost_estimated``, ``tokenward.status``, ``tokenward.request_id``,
  ``tokenward.subject.<scope>``, ``tokenward.held.<meter>``, ``tokenward.budget.clamped_by``;
  a refused call gets a span with status ERROR, ``error.type`` = ``budget_exceeded`` and
  ``tokenward.budget.{name,scope,subject_id,meter,limit,used,held,requested,reset_at}``;
* the metrics ``gen_ai.client.token.usage`` (histogram, ``{token}``, one record per
  ``gen_ai.token.type`` ``input`` and ``output``) and ``gen_ai.client.operation.duration``
  (histogram, ``s``), with the bucket boundaries the conventions recommend.

The providers come from the OpenTelemetry API's globals unless passed in; install
``tokenward[otel]`` (the API) and configure an SDK as usual.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from tokenward.core.budgets import SCOPES, Subject
from tokenward.core.decide import CallPlan
from tokenward.core.events import UsageEvent
from tokenward.errors import BudgetError, BudgetExceeded, MissingDependency
from tokenward.numbers import plain

if TYPE_CHECKING:
    from tokenward.guard.flow import Admission

__all__ = ["DURATION_BUCKETS", "TOKEN_BUCKETS", "Telemetry"]

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
"""Bucket boundaries the conventions give for ``gen_ai.client.token.usage``."""
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
"""Bucket boundaries the conventions give for ``gen_ai.client.operation.duration`` (seconds)."""

_OPERATIONS = {"openai-chat": "chat", "anthropic-messages": "chat", "openai-responses": "chat"}
_PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "openai-compatible": "openai", "fake": "fake"}
_DIALECT_PROVIDERS = {
    "openai-chat": "openai",
    "openai-responses": "openai",
    "anthropic-messages": "anthropic",
}


def _otel() -> Any:
    try:
        import opentelemetry.metrics as metrics
        import opentelemetry.trace as trace
    except ImportError:
        raise MissingDependency("opentelemetry-api", "otel") from None
    return trace, metrics


def _provider(provider: str | None, endpoint: str | None) -> str:
    if provider:
        return _PROVIDERS.get(provider, provider)
    return _DIALECT_PROVIDERS.get(endpoint or "", "unknown")


def _subject_attributes(subject: Subject) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scope in SCOPES:
        value = subject.value(scope)
        if value is not None:
            out[f"tokenward.subject.{scope}"] = value
    if subject.session:
        out["gen_ai.conversation.id"] = subject.session
    if subject.agent:
        out["gen_ai.agent.id"] = subject.agent
    for name, value in subject.tags:
        out[f"tokenward.tag.{name}"] = value
    return out


class Telemetry:
    """Spans and GenAI metrics per guarded call.

    Args:
        tracer_provider / meter_provider: OpenTelemetry providers (default: the global ones).
        max_open_spans: calls admitted but not yet settled that are remembered; beyond that the
            oldest span is ended with ``tokenward.status`` = ``unsettled``.

    Raises:
        MissingDependency: the OpenTelemetry API is not installed (``tokenward[otel]``).
    """

    def __init__(
        self, tracer_provider: Any = None, meter_provider: Any = None, *, max_open_spans: int = 10_000
    ) -> None:
        trace, metrics = _otel()
        import tokenward

        self._trace = trace
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(
            "tokenward", tokenward.__version__
        )
        meter = (meter_provider or metrics.get_meter_provider()).get_meter("tokenward", tokenward.__version__)
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.max_open_spans = max_open_spans
        self._open: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._lock = threading.Lock()

    # -- guard observer hooks ----------------------------------------------------------------------
    def on_admit(self, admission: Admission) -> None:
        """Start the call's span."""
        plan = admission.plan
        operation = _OPERATIONS.get(admission.endpoint or "", "chat")
        attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": _provider(admission.provider, admission.endpoint),
            "gen_ai.request.model": plan.model,
            "gen_ai.request.max_tokens": admission.max_output_tokens,
            "tokenward.request_id": admission.request_id,
            "tokenward.estimate.input_tokens": plan.input_tokens,
            **_subject_attributes(admission.subject),
            **{f"tokenward.held.{k}": plain(v) for k, v in admission.decision.amounts.items()},
        }
        if admission.decision.clamped_by:
            attributes["tokenward.budget.clamped_by"] = admission.decision.clamped_by
        span = self.tracer.start_span(
            f"{operation} {plan.model}", kind=self._trace.SpanKind.CLIENT, attributes=attributes
        )
        evicted = []
        with self._lock:
            self._open[admission.request_id] = (span, time.monotonic())
            while len(self._open) > self.max_open_spans:
                evicted.append(self._open.popitem(last=False)[1][0])
        for old in evicted:
            old.set_attribute("tokenward.status", "unsettled")
            old.end()

    def on_deny(self, subject: Subject, plan: CallPlan | None, error: BudgetError) -> None:
        """A refused call: a short span with status ERROR and the budget that refused it."""
        model = plan.model if plan is not None else "unknown"
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "tokenward.status": "denied",
            **_subject_attributes(subject),
        }
        if isinstance(error, BudgetExceeded):
            attributes["error.type"] = "budget_exceeded"
            for key, value in error.to_dict().items():
                if value is not None:
                    attributes[f"tokenward.budget.{'name' if key == 'budget' else key}"] = value
        else:
            attributes["error.type"] = "unpriced_call"
            attributes["tokenward.budget.name"] = getattr(error, "budget", "")
        span = self.tracer.start_span(
            f"chat {model}", kind=self._trace.SpanKind.CLIENT, attributes=attributes
        )
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, str(error)))
        span.end()

    def on_settle(self, event: UsageEvent) -> None:
        """Finish the call's span (or make one, for a call that had no admission) and record the
        token and duration metrics."""
        with self._lock:
            opened = self._open.pop(event.request_id, None)
        operation = _OPERATIONS.get(event.endpoint or "", "chat")
        model = event.model or "unknown"
        if opened is None:
            start = int(event.at.timestamp() * 1e9)
            span = self.tracer.start_span(
                f"{operation} {model}",
                kind=self._trace.SpanKind.CLIENT,
                start_time=start,
                attributes={
                    "gen_ai.operation.name": operation,
                    "gen_ai.request.model": model,
                    "tokenward.request_id": event.request_id,
                    **_subject_attributes(event.subject),
                },
            )
            started = None
        else:
            span, started = opened
        provider = _provider(event.provider, event.endpoint)
        served = event.metadata.get("model_served") or event.model
        usage = event.usage
        attributes: dict[str, Any] = {
            "gen_ai.provider.name": provider,
            "tokenward.status": event.status,
            "tokenward.cost_estimated": event.cost_estimated,
            "tokenward.usage.input_source": usage.input_source,
            "tokenward.usage.output_source": usage.output_source,
        }
        if served:
            attributes["gen_ai.response.model"] = str(served)
        if isinstance(event.metadata.get("response_id"), str):
            attributes["gen_ai.response.id"] = event.metadata["response_id"]
        for name, value in (
            ("gen_ai.usage.input_tokens", usage.input_tokens),
            ("gen_ai.usage.output_tokens", usage.output_tokens),
            ("gen_ai.usage.cache_read.input_tokens", usage.cache_read_tokens),
            ("gen_ai.usage.cache_creation.input_tokens", usage.cache_write_tokens),
            ("gen_ai.usage.reasoning.output_tokens", usage.reasoning_tokens),
        ):
            if value is not None:
                attributes[name] = value
        if event.cost_usd is not None:
            attributes["tokenward.cost_usd"] = plain(event.cost_usd)
        for meter, amount in event.charged.items():
            attributes[f"tokenward.charged.{meter}"] = plain(amount)
        if event.metadata.get("clamped_by"):
            attributes["tokenward.budget.clamped_by"] = str(event.metadata["clamped_by"])
        error_type = None if event.status in ("ok", "replayed", "cut_off") else event.status
        if error_type is not None:
            attributes["error.type"] = error_type
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error_type))
        span.set_attributes(attributes)
        span.end(end_time=None if opened is not None else int(event.at.timestamp() * 1e9))

        metric_attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
        }
        if served:
            metric_attributes["gen_ai.response.model"] = str(served)
        if usage.input_tokens is not None:
            self.token_usage.record(usage.input_tokens, {**metric_attributes, "gen_ai.token.type": "input"})
        if usage.output_tokens is not None:
            self.token_usage.record(usage.output_tokens, {**metric_attributes, "gen_ai.token.type": "output"})
        if started is not None:
            duration_attributes = dict(metric_attributes)
            if error_type is not None:
                duration_attributes["error.type"] = error_type
            self.duration.record(time.monotonic() - started, duration_attributes)
