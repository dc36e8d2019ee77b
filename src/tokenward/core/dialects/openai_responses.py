"""OpenAI Responses API usage (``POST /v1/responses``).

Provider facts (https://platform.openai.com/docs/api-reference/responses/object, field ``usage``;
streaming events: https://platform.openai.com/docs/api-reference/responses-streaming):

* ``input_tokens`` counts the whole prompt; ``input_tokens_details.cached_tokens`` is inside it,
  and so is ``input_tokens_details.cache_write_tokens``: the prompt tokens written to the cache,
  which GPT-5.6 and later bill at 1.25x the input rate (earlier models report no writes and bill
  none; https://developers.openai.com/api/docs/guides/prompt-caching, read 2026-12-07).
* ``output_tokens`` counts the whole output; ``output_tokens_details.reasoning_tokens`` is inside it.
* Streams carry the usage only on the terminal event: ``response.completed``,
  ``response.incomplete`` (e.g. ``max_output_tokens`` reached) or ``response.failed``, each with the
  whole ``response`` object; ``response.created``/``response.in_progress`` carry ``usage: null``.
* Generated text arrives as ``response.output_text.delta``, ``response.refusal.delta``,
  ``response.reasoning_text.delta``/``response.reasoning_summary_text.delta``,
  ``response.function_call_arguments.delta``, ``response.custom_tool_call_input.delta``,
  ``response.mcp_call_arguments.delta``, ``response.code_interpreter_call_code.delta`` (code the
  model writes for the code interpreter) and ``response.audio.transcript.delta`` (``delta`` holds
  the text).
* Web search is billed per call that ran (https://platform.openai.com/docs/pricing, "Built-in
  tools"): a call is a ``web_search_call`` item in the response's ``output``. Offering the tool in
  the request costs nothing by itself.
* The response's ``service_tier`` names the tier that actually served the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tokenward.core.dialects._fields import count
from tokenward.core.dialects.base import ResponseFacts, normalise_tier, text_of
from tokenward.core.usage import Usage

__all__ = ["OpenAIResponsesStream", "response_facts_openai_responses", "usage_from_openai_responses"]

_TERMINAL = ("response.completed", "response.incomplete", "response.failed")
_TEXT_EVENTS = (
    "response.output_text.delta",
    "response.refusal.delta",
    "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
    "response.function_call_arguments.delta",
    "response.custom_tool_call_input.delta",
    "response.mcp_call_arguments.delta",
    "response.code_interpreter_call_code.delta",
    "response.audio.transcript.delta",
)


def usage_from_openai_responses(raw: Mapping[str, Any] | None) -> Usage:
    """Normalise a Responses ``usage`` object.

    Args:
        raw: the ``usage`` object as sent (None when the response had none).

    Returns:
        The usage; fields the provider did not send are None.

    Raises:
        ValidationError: on a count that is not a whole number from 0 to ``MAX_COUNT`` (2**53 - 1).
    """
    if raw is None:
        return Usage(input_source="none", output_source="none")
    prompt = count(raw, "input_tokens")
    output = count(raw, "output_tokens")
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        cache_read_tokens=count(raw, "input_tokens_details", "cached_tokens"),
        cache_write_tokens=count(raw, "input_tokens_details", "cache_write_tokens"),
        reasoning_tokens=count(raw, "output_tokens_details", "reasoning_tokens"),
        input_source="provider" if prompt is not None else "none",
        output_source="provider" if output is not None else "none",
    )


def web_search_calls(output: Any) -> int | None:
    """How many ``web_search_call`` items an ``output`` list holds (None without a list)."""
    if not isinstance(output, list):
        return None
    return sum(1 for item in output if isinstance(item, Mapping) and item.get("type") == "web_search_call")


def response_facts_openai_responses(response: Mapping[str, Any]) -> ResponseFacts:
    """Facts of a whole Responses ``response`` object (usage, served model, tier, searches run).

    Raises:
        ValidationError: on a malformed count.
    """
    raw = response.get("usage")
    usage = usage_from_openai_responses(raw) if isinstance(raw, Mapping) else None
    searches = web_search_calls(response.get("output"))
    if usage is not None and searches is not None:
        usage = replace(usage, web_search_calls=searches)
    status = response.get("status")
    details = response.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, Mapping) else None
    return ResponseFacts(
        usage=usage,
        model=response.get("model") if isinstance(response.get("model"), str) else None,
        service_tier=normalise_tier(response.get("service_tier")),
        response_id=response.get("id") if isinstance(response.get("id"), str) else None,
        finish_reason=str(reason or status) if (reason or status) else None,
    )


class OpenAIResponsesStream:
    """Reads a Responses event stream (decoded ``data:`` JSON bodies, name in ``type``).

    Attributes:
        model, response_id, service_tier: from the ``response`` objects the events carry.
        finish_reason: ``completed``, ``incomplete`` (with its reason) or ``failed``.
        raw_usage: the terminal event's usage, or None before it arrived.
        web_searches: ``web_search_call`` items seen finishing (``response.output_item.done``).
    """

    def __init__(self) -> None:
        self.model: str | None = None
        self.response_id: str | None = None
        self.finish_reason: str | None = None
        self.service_tier: str | None = None
        self.reported_cost_usd = None
        self.raw_usage: Mapping[str, Any] | None = None
        self.web_searches = 0
        self._final_output: list[Any] | None = None

    def feed(self, event: Mapping[str, Any]) -> str:
        """Take one event; return the generated text it carries (for counting output when the
        terminal usage never arrives)."""
        kind = event.get("type")
        response = event.get("response")
        if isinstance(response, Mapping):
            if isinstance(response.get("model"), str):
                self.model = response["model"]
            if isinstance(response.get("id"), str):
                self.response_id = response["id"]
            tier = normalise_tier(response.get("service_tier"))
            self.service_tier = tier or self.service_tier
            if kind in _TERMINAL:
                facts = response_facts_openai_responses(response)
                self.finish_reason = facts.finish_reason
                if isinstance(response.get("usage"), Mapping):
                    self.raw_usage = response["usage"]
                if isinstance(response.get("output"), list):
                    self._final_output = response["output"]
            return ""
        if kind == "response.output_item.done":
            item = event.get("item")
            if isinstance(item, Mapping) and item.get("type") == "web_search_call":
                self.web_searches += 1
            return ""
        if kind in _TEXT_EVENTS:
            return text_of(event.get("delta"))
        return ""

    @property
    def usage(self) -> Usage | None:
        """The terminal event's usage (with the searches that ran), or None."""
        if self.raw_usage is None:
            return None
        usage = usage_from_openai_responses(self.raw_usage)
        searches = web_search_calls(self._final_output)
        return replace(usage, web_search_calls=max(searches or 0, self.web_searches))
