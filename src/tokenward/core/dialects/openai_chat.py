"""OpenAI Chat Completions usage, and the OpenAI-compatible servers that speak it.

Provider facts (https://platform.openai.com/docs/api-reference/chat/object, field ``usage``):

* ``prompt_tokens`` counts the whole prompt; ``prompt_tokens_details.cached_tokens`` is inside it.
* ``completion_tokens`` counts the whole output; ``completion_tokens_details.reasoning_tokens``
  is inside it.
* Streaming (https://platform.openai.com/docs/api-reference/chat-streaming): usage arrives only in
  a last chunk with empty ``choices``, and only when the request sets
  ``stream_options.include_usage``. An interrupted stream may never deliver it.
* vLLM and llama.cpp (``continuous_usage_stats``) put running totals on every chunk: the last one
  is the total, they must not be summed.
* OpenAI-compatible servers that reused their prompt cache may report ``prompt_tokens: 0``
  (Ollama's OpenAI endpoint): a prompt cannot have zero tokens, so that is read as unknown.
* ``prompt_tokens_details.cache_write_tokens`` (GPT-5.6 and later; OpenRouter for other models)
  counts the prompt tokens written to the cache, inside ``prompt_tokens`` like ``cached_tokens``;
  GPT-5.6 bills them at 1.25x the input rate
  (https://developers.openai.com/api/docs/guides/prompt-caching, read 2026-12-07).
* DeepSeek also sends ``prompt_cache_hit_tokens``; it equals ``cached_tokens`` and is used when
  ``cached_tokens`` is absent.
* Rows whose ``reasoning_tokens`` exceed ``completion_tokens`` cannot have reasoning inside the
  completion: those servers (Gemini behind some proxies) report it beside the completion, as
  Gemini's native ``thoughtsTokenCount`` is, so output is completion plus reasoning.
* ``prompt_tokens_details.audio_tokens`` and ``completion_tokens_details.audio_tokens`` are the
  audio shares of the prompt and the completion (audio models price them apart).
* The response's ``service_tier`` names the tier that served the call (``default``, ``flex``,
  ``priority``), which may differ from the one requested; OpenRouter adds ``usage.cost``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenward.core.dialects._fields import count, dig
from tokenward.core.dialects.base import ResponseFacts, normalise_tier, reported_cost
from tokenward.core.usage import Usage

__all__ = ["OpenAIChatStream", "delta_text", "response_facts_openai_chat", "usage_from_openai_chat"]


def usage_from_openai_chat(raw: Mapping[str, Any] | None) -> Usage:
    """Normalise an OpenAI chat-completions ``usage`` object.

    Args:
        raw: the ``usage`` object as sent (None when the response had none).

    Returns:
        The usage; fields the provider did not send are None.

    Raises:
        ValidationError: on a count that is not a whole number from 0 to ``MAX_COUNT`` (2**53 - 1).
    """
    if raw is None:
        return Usage(input_tokens=None, output_tokens=None, input_source="none", output_source="none")
    prompt = count(raw, "prompt_tokens")
    completion = count(raw, "completion_tokens")
    cached = count(raw, "prompt_tokens_details", "cached_tokens")
    if cached is None:
        cached = count(raw, "prompt_cache_hit_tokens")
    cache_write = count(raw, "prompt_tokens_details", "cache_write_tokens")
    reasoning = count(raw, "completion_tokens_details", "reasoning_tokens")
    audio_in = count(raw, "prompt_tokens_details", "audio_tokens")
    audio_out = count(raw, "completion_tokens_details", "audio_tokens")

    if prompt == 0 and ((completion or 0) > 0 or cached):
        prompt = None  # a zero-token prompt is impossible: the server left the count out
    output = completion
    if reasoning is not None and completion is not None and reasoning > completion:
        output = completion + reasoning  # reasoning reported beside, not inside, the completion
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        cache_read_tokens=cached,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
        input_audio_tokens=audio_in if prompt is None or (audio_in or 0) <= prompt else None,
        output_audio_tokens=audio_out if output is None or (audio_out or 0) <= output else None,
        input_source="provider" if prompt is not None else "none",
        output_source="provider" if output is not None else "none",
    )


def _choices_finish(response: Mapping[str, Any]) -> str | None:
    reason = None
    for choice in response.get("choices") or ():
        if isinstance(choice, Mapping) and choice.get("finish_reason"):
            reason = str(choice["finish_reason"])
    return reason


def response_facts_openai_chat(response: Mapping[str, Any]) -> ResponseFacts:
    """Facts of a whole chat-completions response (usage, served model, service tier, cost).

    Raises:
        ValidationError: on a malformed count.
    """
    raw = response.get("usage")
    return ResponseFacts(
        usage=usage_from_openai_chat(raw) if isinstance(raw, Mapping) else None,
        model=response.get("model") if isinstance(response.get("model"), str) else None,
        service_tier=normalise_tier(response.get("service_tier")),
        response_id=response.get("id") if isinstance(response.get("id"), str) else None,
        finish_reason=_choices_finish(response),
        reported_cost_usd=reported_cost(raw),
    )


_DELTA_TEXT_KEYS = ("content", "reasoning_content", "reasoning", "refusal")


def delta_text(delta: Mapping[str, Any]) -> str:
    """The generated text a chat message or stream delta carries: its content, reasoning and
    refusal, the names and arguments of its tool calls and of a legacy ``function_call``, and the
    transcript of its audio (``audio.transcript``; the audio itself is billed as audio tokens,
    which the transcript only bounds from below)."""
    pieces = [text for key in _DELTA_TEXT_KEYS if isinstance(text := delta.get(key), str)]
    calls = delta.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        pieces += [
            text for key in ("name", "arguments") if isinstance(text := dig(call, "function", key), str)
        ]
    pieces += [
        text for key in ("name", "arguments") if isinstance(text := dig(delta, "function_call", key), str)
    ]
    transcript = dig(delta, "audio", "transcript")
    if isinstance(transcript, str):
        pieces.append(transcript)
    return "".join(pieces)


class OpenAIChatStream:
    """Reads an OpenAI chat-completions stream, chunk by chunk (decoded ``data:`` JSON bodies).

    Attributes:
        model: the model named by the chunks, if any.
        response_id: the chunks' ``id``.
        finish_reason: the last non-null ``finish_reason`` seen.
        raw_usage: the last ``usage`` object seen (running totals are replaced, never summed).
    """

    def __init__(self) -> None:
        self.model: str | None = None
        self.response_id: str | None = None
        self.finish_reason: str | None = None
        self.service_tier: str | None = None
        self.raw_usage: Mapping[str, Any] | None = None

    @property
    def reported_cost_usd(self) -> Any:
        """A cost the server reported in its usage (``usage.cost``), or None."""
        return reported_cost(self.raw_usage)

    def feed(self, chunk: Mapping[str, Any]) -> str:
        """Take one chunk; return the generated text it carries (:func:`delta_text` of each
        choice's delta, or a legacy completion choice's ``text``), for counting output."""
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if self.response_id is None and isinstance(chunk.get("id"), str):
            self.response_id = chunk["id"]
        tier = normalise_tier(chunk.get("service_tier"))
        self.service_tier = tier or self.service_tier
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            self.raw_usage = usage
        pieces: list[str] = []
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, Mapping):
                continue
            if choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
            if isinstance(choice.get("text"), str):  # legacy completions: choices[].text
                pieces.append(choice["text"])
            delta = choice.get("delta")
            if isinstance(delta, Mapping):
                pieces.append(delta_text(delta))
        return "".join(pieces)

    @property
    def usage(self) -> Usage | None:
        """The provider's usage, or None when no chunk carried one."""
        return None if self.raw_usage is None else usage_from_openai_chat(self.raw_usage)
