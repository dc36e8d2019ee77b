"""Anthropic Messages usage.

Provider facts (https://docs.anthropic.com/en/api/messages, field ``usage``; prompt caching:
https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching#tracking-cache-performance):

* ``input_tokens`` counts only the prompt tokens after the last cache breakpoint: it *excludes*
  ``cache_read_input_tokens`` and ``cache_creation_input_tokens``. The three add up to the prompt.
* ``cache_creation.ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens`` split the cache
  write by lifetime; the two are priced differently.
* ``output_tokens`` includes extended-thinking tokens (they are billed as output and not reported
  apart).
* ``server_tool_use.web_search_requests`` counts searches that ran (billed per search).
* Streaming (https://docs.anthropic.com/en/docs/build-with-claude/streaming): ``message_start``
  carries the opening usage; each ``message_delta.usage`` is *cumulative*: its fields replace the
  earlier ones, never add to them, and it may repeat or leave out the input fields.
* ``usage.service_tier`` (``standard``, ``priority``, ``batch``) names the tier that served the call.
* ``usage.speed`` (``"fast"``, ``"standard"``) names the speed that served it: fast mode is billed at
  its own rates, only when the response says it served fast
  (https://platform.claude.com/docs/en/build-with-claude/fast-mode, read 2026-12-07); streams may
  carry it in ``message_start`` and again in the cumulative ``message_delta`` usage.
* ``usage.inference_geo`` (``"us"``, ``"global"``) says where inference ran; US-only inference
  costs 1.1x on Claude 4.6 and later
  (https://platform.claude.com/docs/en/build-with-claude/data-residency, read 2026-12-07).
* Through Amazon Bedrock's ``InvokeModelWithResponseStream``
  (https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-anthropic-claude-messages.html)
  the same events arrive wrapped as ``{"chunk": {"bytes": "<base64 JSON event>"}}``, and the last
  one adds ``amazon-bedrock-invocationMetrics`` (``inputTokenCount``, ``outputTokenCount``,
  ``cacheReadInputTokenCount``, ``cacheWriteInputTokenCount``): used only when no
  ``message_delta`` usage arrived.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tokenward.core.dialects._fields import add, count
from tokenward.core.dialects.base import ResponseFacts, normalise_tier
from tokenward.core.modifiers import normalise_geo, normalise_speed
from tokenward.core.usage import Usage

__all__ = [
    "AnthropicMessagesStream",
    "response_facts_anthropic",
    "unwrap_bedrock_chunk",
    "usage_facts_anthropic",
    "usage_from_anthropic",
]


def usage_from_anthropic(raw: Mapping[str, Any] | None) -> Usage:
    """Normalise an Anthropic Messages ``usage`` object.

    ``input_tokens`` of the result is the whole prompt: Anthropic's ``input_tokens`` plus both
    cache counters.

    Raises:
        ValidationError: on a count that is not a whole number from 0 to ``MAX_COUNT`` (2**53 - 1).
    """
    if raw is None:
        return Usage(input_source="none", output_source="none")
    fresh = count(raw, "input_tokens")
    read = count(raw, "cache_read_input_tokens")
    write_5m = count(raw, "cache_creation", "ephemeral_5m_input_tokens")
    write_1h = count(raw, "cache_creation", "ephemeral_1h_input_tokens")
    write = count(raw, "cache_creation_input_tokens")
    if write is None:
        write = add(write_5m, write_1h)
    output = count(raw, "output_tokens")
    searches = count(raw, "server_tool_use", "web_search_requests")
    prompt = None if fresh is None else fresh + (read or 0) + (write or 0)
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        web_search_calls=searches,
        input_source="provider" if prompt is not None else "none",
        output_source="provider" if output is not None else "none",
    )


def usage_facts_anthropic(raw: Mapping[str, Any] | None) -> ResponseFacts:
    """Facts a Messages ``usage`` object carries by itself: the counts, and the tier, speed and
    inference geography that served the call (``service_tier``, ``speed``, ``inference_geo``).

    Raises:
        ValidationError: on a malformed count.
    """
    if not isinstance(raw, Mapping):
        return ResponseFacts(usage=None)
    return ResponseFacts(
        usage=usage_from_anthropic(raw),
        service_tier=normalise_tier(raw.get("service_tier")),
        speed=normalise_speed(raw.get("speed")),
        inference_geo=normalise_geo(raw.get("inference_geo")),
    )


def response_facts_anthropic(response: Mapping[str, Any]) -> ResponseFacts:
    """Facts of a whole Messages response (usage, served model; tier, speed and inference
    geography from ``usage``).

    Raises:
        ValidationError: on a malformed count.
    """
    facts = usage_facts_anthropic(response.get("usage"))
    return replace(
        facts,
        model=response.get("model") if isinstance(response.get("model"), str) else None,
        response_id=response.get("id") if isinstance(response.get("id"), str) else None,
        finish_reason=response.get("stop_reason") if isinstance(response.get("stop_reason"), str) else None,
    )


def unwrap_bedrock_chunk(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """The Anthropic event inside a Bedrock invoke-stream ``{"chunk": {"bytes": ...}}`` wrapper
    (``bytes`` as base64 text, raw bytes, or already-decoded JSON); other events unchanged."""
    chunk = event.get("chunk")
    if not isinstance(chunk, Mapping) or "type" in event:
        return event
    payload = chunk.get("bytes")
    if isinstance(payload, Mapping):
        return payload
    try:
        data = payload if isinstance(payload, bytes) else base64.b64decode(str(payload), validate=True)
        decoded = json.loads(data)
    except (binascii.Error, ValueError, TypeError):
        return event
    return decoded if isinstance(decoded, Mapping) else event


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Cumulative usage: every field present in ``update`` replaces the one before."""
    for key, value in update.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


class AnthropicMessagesStream:
    """Reads an Anthropic Messages event stream (decoded ``data:`` JSON bodies, name in ``type``).

    Attributes:
        model, response_id: from ``message_start``.
        finish_reason: the ``stop_reason`` of the last ``message_delta``.
        raw_usage: the usage so far, merged cumulatively, or None before any arrived.
    """

    def __init__(self) -> None:
        self.model: str | None = None
        self.response_id: str | None = None
        self.finish_reason: str | None = None
        self.raw_usage: dict[str, Any] | None = None
        self.delta_seen = False
        self.reported_cost_usd = None
        self.bedrock_metrics: Mapping[str, Any] | None = None

    @property
    def service_tier(self) -> str | None:
        """The tier named in the usage (``usage.service_tier``), normalised."""
        return normalise_tier((self.raw_usage or {}).get("service_tier"))

    @property
    def speed(self) -> str | None:
        """The speed named in the usage (``usage.speed``, from ``message_start`` or a later
        ``message_delta``), normalised."""
        return normalise_speed((self.raw_usage or {}).get("speed"))

    @property
    def inference_geo(self) -> str | None:
        """Where inference ran, as the usage says (``usage.inference_geo``), normalised."""
        return normalise_geo((self.raw_usage or {}).get("inference_geo"))

    def feed(self, event: Mapping[str, Any]) -> str:
        """Take one event; return the generated text it carries (text, thinking, tool input)."""
        event = unwrap_bedrock_chunk(event)
        metrics = event.get("amazon-bedrock-invocationMetrics")
        if isinstance(metrics, Mapping):
            self.bedrock_metrics = metrics
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            if isinstance(message, Mapping):
                self.model = message.get("model") if isinstance(message.get("model"), str) else self.model
                self.response_id = message.get("id") if isinstance(message.get("id"), str) else None
                usage = message.get("usage")
                if isinstance(usage, Mapping):
                    self.raw_usage = {}
                    _merge(self.raw_usage, usage)
            return ""
        if kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, Mapping) and delta.get("stop_reason"):
                self.finish_reason = str(delta["stop_reason"])
            usage = event.get("usage")
            if isinstance(usage, Mapping):
                self.delta_seen = True
                if self.raw_usage is None:
                    self.raw_usage = {}
                _merge(self.raw_usage, usage)
            return ""
        if kind == "content_block_start":
            block = event.get("content_block")
            if isinstance(block, Mapping) and isinstance(block.get("name"), str):
                return str(block["name"])
            return ""
        if kind == "content_block_delta":
            delta = event.get("delta")
            if isinstance(delta, Mapping):
                for key in ("text", "thinking", "partial_json"):
                    if isinstance(delta.get(key), str):
                        return str(delta[key])
        return ""

    @property
    def usage(self) -> Usage | None:
        """The provider's final usage, or None when the stream ended before ``message_delta``.

        Only ``message_start`` having arrived means the output count is the opening one (usually
        1), not the final one: the output is then reported as unknown.
        """
        if not self.delta_seen and self.bedrock_metrics is not None:
            metrics = self.bedrock_metrics
            return usage_from_anthropic(
                {
                    "input_tokens": metrics.get("inputTokenCount"),
                    "output_tokens": metrics.get("outputTokenCount"),
                    "cache_read_input_tokens": metrics.get("cacheReadInputTokenCount"),
                    "cache_creation_input_tokens": metrics.get("cacheWriteInputTokenCount"),
                }
            )
        if self.raw_usage is None:
            return None
        usage = usage_from_anthropic(self.raw_usage)
        if not self.delta_seen:
            usage = replace(usage, output_tokens=None, reasoning_tokens=None, output_source="none")
        return usage
