"""Amazon Bedrock Converse / ConverseStream usage.

Provider facts (TokenUsage: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_TokenUsage.html;
prompt caching: https://docs.aws.amazon.com/bedrock/latest/userguide/prompt-caching.html;
CacheDetail: https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_CacheDetail.html):

* ``inputTokens`` counts the prompt tokens that were neither read from nor written to the cache;
  ``cacheReadInputTokens`` and ``cacheWriteInputTokens`` are reported beside it (as Anthropic's
  own API does for the Claude models Bedrock serves): the prompt is their sum, and
  ``totalTokens`` = input + output + cache read + cache write. Should a model ever report an
  inclusive ``inputTokens`` (``totalTokens`` = input + output while cache counts are non-zero and
  fit inside it), that reading is taken instead; the totals decide.
* ``cacheDetails`` (``[{"inputTokens": N, "ttl": "5m" | "1h"}]``) splits the cache write by
  lifetime; the two are priced differently.
* ``outputTokens`` includes reasoning (Bedrock does not report reasoning apart).
* ConverseStream ends with a ``metadata`` event carrying ``usage``; text arrives in
  ``contentBlockDelta`` events (``delta.text``, ``delta.reasoningContent.text``,
  ``delta.toolUse.input``); ``messageStop.stopReason`` says why it ended. Events are read as the
  SDKs decode them: one key naming the event (``{"metadata": {...}}``).
* The response does not name the model; ``serviceTier`` (``{"type": "flex"}``), where present,
  names the tier that served the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenward.core.dialects._fields import count
from tokenward.core.dialects.base import ResponseFacts, normalise_tier, text_of
from tokenward.core.usage import Usage

__all__ = ["BedrockConverseStream", "response_facts_bedrock_converse", "usage_from_bedrock_converse"]


def _write_split(raw: Mapping[str, Any]) -> tuple[int | None, int | None]:
    details = raw.get("cacheDetails")
    if not isinstance(details, list):
        return None, None
    five = one = 0
    for item in details:
        if not isinstance(item, Mapping):
            continue
        tokens = count(item, "inputTokens") or 0
        if item.get("ttl") == "1h":
            one += tokens
        else:
            five += tokens
    return five, one


def usage_from_bedrock_converse(raw: Mapping[str, Any] | None) -> Usage:
    """Normalise a Converse ``usage`` object (``inputTokens``, ``outputTokens``, cache counts).

    Raises:
        ValidationError: on a count that is not a whole number from 0 to ``MAX_COUNT`` (2**53 - 1).
    """
    if raw is None:
        return Usage(input_source="none", output_source="none")
    fresh = count(raw, "inputTokens")
    output = count(raw, "outputTokens")
    read = count(raw, "cacheReadInputTokens")
    write = count(raw, "cacheWriteInputTokens")
    total = count(raw, "totalTokens")
    five, one = _write_split(raw)
    cached = (read or 0) + (write or 0)
    prompt: int | None = None
    if fresh is not None:
        inclusive = (
            cached > 0
            and total is not None
            and output is not None
            and total == fresh + output
            and cached <= fresh
        )
        prompt = fresh if inclusive else fresh + cached
    if write is None and (five or one):
        write = (five or 0) + (one or 0)
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        cache_read_tokens=read,
        cache_write_tokens=write,
        cache_write_5m_tokens=five if (five or one) else None,
        cache_write_1h_tokens=one if (five or one) else None,
        input_source="provider" if prompt is not None else "none",
        output_source="provider" if output is not None else "none",
    )


def response_facts_bedrock_converse(response: Mapping[str, Any]) -> ResponseFacts:
    """Facts of a whole Converse response (usage, stop reason, service tier).

    Raises:
        ValidationError: on a malformed count.
    """
    raw = response.get("usage")
    return ResponseFacts(
        usage=usage_from_bedrock_converse(raw) if isinstance(raw, Mapping) else None,
        service_tier=normalise_tier(response.get("serviceTier")),
        finish_reason=response.get("stopReason") if isinstance(response.get("stopReason"), str) else None,
    )


class BedrockConverseStream:
    """Reads a ConverseStream (events decoded as the AWS SDKs give them: ``{"eventName": {...}}``).

    Attributes:
        finish_reason: ``messageStop.stopReason``.
        raw_usage: the ``metadata`` event's usage, or None before it arrived.
    """

    def __init__(self) -> None:
        self.model: str | None = None
        self.response_id: str | None = None
        self.finish_reason: str | None = None
        self.service_tier: str | None = None
        self.reported_cost_usd = None
        self.raw_usage: Mapping[str, Any] | None = None

    def feed(self, event: Mapping[str, Any]) -> str:
        """Take one event; return the generated text it carries."""
        delta_event = event.get("contentBlockDelta")
        if isinstance(delta_event, Mapping):
            delta = delta_event.get("delta")
            if not isinstance(delta, Mapping):
                return ""
            reasoning = delta.get("reasoningContent")
            tool = delta.get("toolUse")
            return (
                text_of(delta.get("text"))
                + (text_of(reasoning.get("text")) if isinstance(reasoning, Mapping) else "")
                + (text_of(tool.get("input")) if isinstance(tool, Mapping) else "")
            )
        start = event.get("contentBlockStart")
        if isinstance(start, Mapping):
            tool = (
                (start.get("start") or {}).get("toolUse") if isinstance(start.get("start"), Mapping) else None
            )
            return text_of(tool.get("name")) if isinstance(tool, Mapping) else ""
        stop = event.get("messageStop")
        if isinstance(stop, Mapping) and isinstance(stop.get("stopReason"), str):
            self.finish_reason = stop["stopReason"]
        metadata = event.get("metadata")
        if isinstance(metadata, Mapping):
            if isinstance(metadata.get("usage"), Mapping):
                self.raw_usage = metadata["usage"]
            tier = normalise_tier(metadata.get("serviceTier"))
            self.service_tier = tier or self.service_tier
        return ""

    @property
    def usage(self) -> Usage | None:
        """The ``metadata`` event's usage, or None."""
        return None if self.raw_usage is None else usage_from_bedrock_converse(self.raw_usage)
