"""Google Gemini ``generateContent`` / ``streamGenerateContent`` usage (``usageMetadata``).

Provider facts (https://ai.google.dev/api/generate-content#UsageMetadata; prices:
https://ai.google.dev/gemini-api/docs/pricing):

* ``promptTokenCount`` is the whole prompt; with cached content it *includes*
  ``cachedContentTokenCount``.
* ``candidatesTokenCount`` is the generated answer; ``thoughtsTokenCount`` (thinking) is *not*
  inside it and is billed as output ("output price, including thinking tokens"), so output =
  candidates + thoughts and reasoning = thoughts.
* ``toolUsePromptTokenCount`` (prompts of server-side tools, e.g. search results fed back) is not
  inside ``promptTokenCount`` and is billed as input: input = prompt + tool-use prompt.
  ``totalTokenCount`` = prompt + tool-use prompt + candidates + thoughts.
* ``promptTokensDetails``, ``cacheTokensDetails``, ``candidatesTokensDetails`` and
  ``toolUsePromptTokensDetails`` split each count by ``modality`` (TEXT, IMAGE, AUDIO, VIDEO,
  DOCUMENT); audio input is priced apart on several models.
* The JSON omits zero-valued fields (proto3): a missing ``candidatesTokenCount`` next to a
  ``totalTokenCount`` is derived from the total; a missing prompt count stays unknown.
* Streams carry *running totals* in every chunk's ``usageMetadata``: each field takes its latest
  value, never a sum.
* Grounding with Google Search is billed per search query on Gemini 3 and per grounded prompt on
  Gemini 2.x (https://ai.google.dev/gemini-api/docs/pricing, read 2026-12-07). The queries that
  ran are ``groundingMetadata.webSearchQueries``; the list may repeat a query and hold empty
  strings, and Google counts unique queries, ignoring empty ones
  (https://ai.google.dev/gemini-api/docs/google-search, read 2026-12-07). ``web_search_calls``
  is therefore the number of distinct non-empty queries of the response (all candidates, and in a
  stream all chunks, together); the per-prompt rule of Gemini 2.x is applied when pricing
  (:func:`~tokenward.core.modifiers.billable_searches`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tokenward.core.dialects._fields import add, count
from tokenward.core.dialects.base import ResponseFacts, normalise_tier, text_of
from tokenward.core.usage import Usage
from tokenward.errors import ValidationError

__all__ = ["GeminiStream", "generated_text", "response_facts_gemini", "usage_from_gemini"]


def _modality(details: Any, modality: str, where: str) -> int | None:
    """The count for ``modality`` in a ``*TokensDetails`` list (None when the list is absent)."""
    if not isinstance(details, list):
        return None
    total = 0
    for i, item in enumerate(details):
        if isinstance(item, Mapping) and str(item.get("modality", "")).upper() == modality:
            value = count(item, "tokenCount")
            if value is None:
                continue
            total += value
        elif not isinstance(item, Mapping):
            raise ValidationError(f"{where}[{i}] must be an object", field=where)
    return total


def usage_from_gemini(raw: Mapping[str, Any] | None) -> Usage:
    """Normalise a Gemini ``usageMetadata`` object.

    Returns:
        input = prompt + tool-use prompt; cache reads = cached content; output = candidates +
        thoughts; reasoning = thoughts; audio and image shares from the modality details.

    Raises:
        ValidationError: on a count that is not a whole number from 0 to ``MAX_COUNT`` (2**53 - 1).
    """
    if raw is None:
        return Usage(input_source="none", output_source="none")
    prompt = count(raw, "promptTokenCount")
    cached = count(raw, "cachedContentTokenCount")
    candidates = count(raw, "candidatesTokenCount")
    tool_prompt = count(raw, "toolUsePromptTokenCount")
    thoughts = count(raw, "thoughtsTokenCount")
    total = count(raw, "totalTokenCount")
    if candidates is None and total is not None and prompt is not None:
        derived = total - prompt - (tool_prompt or 0) - (thoughts or 0)
        candidates = derived if derived >= 0 else None
    input_tokens = None if prompt is None else prompt + (tool_prompt or 0)
    output_tokens = None if candidates is None else candidates + (thoughts or 0)
    prompt_details = raw.get("promptTokensDetails")
    tool_details = raw.get("toolUsePromptTokensDetails")
    cache_details = raw.get("cacheTokensDetails")
    out_details = raw.get("candidatesTokensDetails")
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cached,
        reasoning_tokens=thoughts,
        input_audio_tokens=add(
            _modality(prompt_details, "AUDIO", "promptTokensDetails"),
            _modality(tool_details, "AUDIO", "toolUsePromptTokensDetails"),
        ),
        cache_read_audio_tokens=_modality(cache_details, "AUDIO", "cacheTokensDetails"),
        output_audio_tokens=_modality(out_details, "AUDIO", "candidatesTokensDetails"),
        input_image_tokens=add(
            _modality(prompt_details, "IMAGE", "promptTokensDetails"),
            _modality(tool_details, "IMAGE", "toolUsePromptTokensDetails"),
        ),
        cache_read_image_tokens=_modality(cache_details, "IMAGE", "cacheTokensDetails"),
        output_image_tokens=_modality(out_details, "IMAGE", "candidatesTokensDetails"),
        input_source="provider" if input_tokens is not None else "none",
        output_source="provider" if output_tokens is not None else "none",
    )


def _search_queries(response: Mapping[str, Any]) -> set[str] | None:
    """The distinct non-empty ``webSearchQueries`` of every candidate, or None when no candidate
    has grounding metadata with a query list."""
    candidates = response.get("candidates")
    if not isinstance(candidates, list):
        return None
    found: set[str] | None = None
    for candidate in candidates:
        grounding = candidate.get("groundingMetadata") if isinstance(candidate, Mapping) else None
        if isinstance(grounding, Mapping) and isinstance(grounding.get("webSearchQueries"), list):
            found = found or set()
            found.update(q.strip() for q in grounding["webSearchQueries"] if isinstance(q, str) and q.strip())
    return found


def generated_text(response: Mapping[str, Any]) -> tuple[str, str | None]:
    """(the generated text of every candidate: answer and thought parts, code written for code
    execution, function-call names and arguments; the last finish reason)."""
    pieces: list[str] = []
    reason: str | None = None
    candidates = response.get("candidates")
    for candidate in candidates if isinstance(candidates, list) else ():
        if not isinstance(candidate, Mapping):
            continue
        if candidate.get("finishReason"):
            reason = str(candidate["finishReason"])
        content = candidate.get("content")
        parts = content.get("parts") if isinstance(content, Mapping) else None
        for part in parts if isinstance(parts, list) else ():
            if not isinstance(part, Mapping):
                continue
            pieces.append(text_of(part.get("text")))  # answer and thought parts alike
            code = part.get("executableCode")
            if isinstance(code, Mapping):
                pieces.append(text_of(code.get("code")))  # code the model wrote for code execution
            call = part.get("functionCall")
            if isinstance(call, Mapping):
                pieces.append(text_of(call.get("name")))
                if call.get("args") is not None:
                    pieces.append(json.dumps(call.get("args"), separators=(",", ":")))
    return "".join(pieces), reason


def response_facts_gemini(response: Mapping[str, Any]) -> ResponseFacts:
    """Facts of a whole ``GenerateContentResponse`` (usage, ``modelVersion``, searches run).

    Raises:
        ValidationError: on a malformed count.
    """
    raw = response.get("usageMetadata")
    usage = usage_from_gemini(raw) if isinstance(raw, Mapping) else None
    searches = _search_queries(response)
    if usage is not None and searches is not None:
        usage = replace(usage, web_search_calls=len(searches))
    _, reason = generated_text(response)
    model = response.get("modelVersion")
    return ResponseFacts(
        usage=usage,
        model=model if isinstance(model, str) else None,
        service_tier=normalise_tier(response.get("serviceTier")),
        response_id=response.get("responseId") if isinstance(response.get("responseId"), str) else None,
        finish_reason=reason,
    )


class GeminiStream:
    """Reads a ``streamGenerateContent`` stream: one ``GenerateContentResponse`` per chunk.

    Attributes:
        model, response_id, finish_reason: the latest the chunks named.
        raw_usage: ``usageMetadata`` merged field by field, each field's latest value (running
            totals, never summed), or None before any arrived.
        queries: the distinct non-empty grounding search queries seen in any chunk, or None.
    """

    def __init__(self) -> None:
        self.model: str | None = None
        self.response_id: str | None = None
        self.finish_reason: str | None = None
        self.service_tier: str | None = None
        self.reported_cost_usd = None
        self.raw_usage: dict[str, Any] | None = None
        self.queries: set[str] | None = None

    def feed(self, chunk: Mapping[str, Any]) -> str:
        """Take one chunk; return the generated text it carries (answer, thoughts, call args)."""
        if isinstance(chunk.get("modelVersion"), str):
            self.model = chunk["modelVersion"]
        if isinstance(chunk.get("responseId"), str):
            self.response_id = chunk["responseId"]
        usage = chunk.get("usageMetadata")
        if isinstance(usage, Mapping):
            self.raw_usage = {**(self.raw_usage or {}), **{k: v for k, v in usage.items() if v is not None}}
        queries = _search_queries(chunk)
        if queries is not None:
            self.queries = (self.queries or set()) | queries
        text, reason = generated_text(chunk)
        if reason:
            self.finish_reason = reason
        return text

    @property
    def usage(self) -> Usage | None:
        """The running totals as of the last chunk, or None."""
        if self.raw_usage is None:
            return None
        usage = usage_from_gemini(self.raw_usage)
        if self.queries is not None:
            usage = replace(usage, web_search_calls=len(self.queries))
        return usage
