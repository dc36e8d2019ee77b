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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tokenward.core.dialects._fields import add, count
from tokenward.core.usage import Usage

__all__ = ["AnthropicMessagesStream", "usage_from_anthropic"]


def usage_from_anthropic(raw: Mapping[str, Any] | None) -> Usage:
    """Normalise an Anthropic Messages ``usage`` object.

    ``input_tokens`` of the result is the whole prompt: Anthropic's ``input_tokens`` plus both
    cache counters.

    Raises:
        ValidationError: on a count that is not a non-negative whole number.
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

    def feed(self, event: Mapping[str, Any]) -> str:
        """Take one event; return the generated text it carries (text, thinking, tool input)."""
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
        if self.raw_usage is None:
            return None
        usage = usage_from_anthropic(self.raw_usage)
        if not self.delta_seen:
            usage = replace(usage, output_tokens=None, reasoning_tokens=None, output_source="none")
        return usage
