"""Gemini ``models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse``.

Request facts (https://ai.google.dev/api/generate-content): ``contents``, ``systemInstruction``,
``tools``, and the output bound ``generationConfig.maxOutputTokens``; the model and whether to
stream are in the URL, so the gateway puts them in the body as ``model`` and ``stream`` before
checking it, and they are taken out again before it is sent. Streams (``alt=sse``) are plain
``data:`` lines of ``GenerateContentResponse`` objects carrying running usage totals; the last one
has a ``finishReason`` (``MAX_TOKENS`` when the bound cut the reply).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from tokenward.core.dialects.gemini import generated_text
from tokenward.core.estimate import Estimate, estimate_gemini
from tokenward.core.modifiers import RequestFacts
from tokenward.guard.wire.endpoints.base import Endpoint, StreamState, head, require
from tokenward.guard.wire.endpoints.billable import ContextRef, gemini_server_tools, positive_int
from tokenward.guard.wire.sse import format_event

__all__ = ["Gemini"]


def _config(body: Mapping[str, Any]) -> Mapping[str, Any]:
    config = body.get("generationConfig", body.get("generation_config"))
    return config if isinstance(config, Mapping) else {}


def _cached_content(body: Mapping[str, Any]) -> Any:
    return body.get("cachedContent", body.get("cached_content"))


class Gemini(Endpoint):
    """The Gemini generateContent endpoints."""

    dialect = "gemini"
    family = "gemini"
    path = "/v1beta/models/{target}"

    def validate(self, body: Any) -> None:
        """Refuse a malformed body (names the field)."""
        require(isinstance(body, dict), "the request body must be a JSON object", "body")
        require(isinstance(body.get("model"), str) and bool(body["model"]), "the URL names no model", "model")
        contents = body.get("contents")
        require(
            isinstance(contents, list) and bool(contents), "contents must be a non-empty list", "contents"
        )
        config = _config(body)
        bound = config.get("maxOutputTokens", config.get("max_output_tokens"))
        require(
            bound is None or positive_int(bound) is not None,
            "generationConfig.maxOutputTokens must be a positive integer",
            "generationConfig.maxOutputTokens",
        )
        count = config.get("candidateCount", config.get("candidate_count"))
        require(
            count is None or positive_int(count) is not None,
            "generationConfig.candidateCount must be a positive integer",
            "generationConfig.candidateCount",
        )
        cached = _cached_content(body)
        require(
            cached is None or (isinstance(cached, str) and bool(cached)),
            "cachedContent must be the name of a cached content (cachedContents/...)",
            "cachedContent",
        )

    def estimate(self, body: Mapping[str, Any], model: str) -> Estimate:
        """The prompt estimate (``o200k_base`` times the safety factor: Gemini's tokenizer is not
        available offline)."""
        return estimate_gemini(body, model)

    def requested_max(self, body: Mapping[str, Any]) -> int | None:
        """``generationConfig.maxOutputTokens``."""
        config = _config(body)
        return positive_int(config.get("maxOutputTokens", config.get("max_output_tokens")))

    def with_bound(self, body: dict[str, Any], bound: int, provider: str) -> dict[str, Any]:
        """The body as Gemini wants it: ``maxOutputTokens`` set, our ``model``/``stream`` keys gone."""
        out = {k: v for k, v in body.items() if k not in ("model", "stream", "generation_config")}
        out["generationConfig"] = {**_config(body), "maxOutputTokens": bound}
        out["generationConfig"].pop("max_output_tokens", None)
        return out

    def choices(self, body: Mapping[str, Any]) -> int:
        """``generationConfig.candidateCount`` (1 by default): each candidate may use the bound.
        An int32 in proto3 JSON may be written as a number or as its decimal string (``"8"``),
        and Google's parser takes both (https://protobuf.dev/programming-guides/json/, read
        2026-12-08): both count."""
        config = _config(body)
        return positive_int(config.get("candidateCount", config.get("candidate_count"))) or 1

    def request_facts(self, body: Mapping[str, Any]) -> RequestFacts:
        """Grounding with Google Search and URL context (their fees and results)."""
        return RequestFacts(server_tools=gemini_server_tools(body))

    def stored_context(self, body: Mapping[str, Any]) -> tuple[ContextRef, ...]:
        """``cachedContent``: its tokens are part of the prompt the provider bills."""
        cached = _cached_content(body)
        return (ContextRef("cachedContent", "cached_content", cached),) if isinstance(cached, str) else ()

    def upstream_path(self, body: Mapping[str, Any]) -> str:
        """``/v1beta/models/{model}:generateContent`` or ``:streamGenerateContent?alt=sse``, the
        model percent-encoded as one path segment (a ``?``, ``#`` or ``/`` in it stays part of
        the name rather than starting a query, a fragment or another segment)."""
        method = "streamGenerateContent?alt=sse" if body.get("stream") is True else "generateContent"
        return f"/v1beta/models/{quote(str(body['model']), safe='')}:{method}"

    def prepare_stream(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Gemini streams always carry usage."""
        return body, True

    def response_text(self, response: Mapping[str, Any]) -> str:
        """The text of every candidate: answer and thought parts, code written for code
        execution, function-call names and arguments."""
        return generated_text(response)[0]

    def is_end(self, name: str | None, data: str, event: Mapping[str, Any] | None) -> bool:
        """The chunk whose candidate has a ``finishReason`` is the last."""
        for candidate in (event or {}).get("candidates") or ():
            if isinstance(candidate, Mapping) and candidate.get("finishReason"):
                return True
        return False

    def relay(
        self, name: str | None, data: str, event: Mapping[str, Any], state: StreamState
    ) -> bytes | None:
        """Pass every chunk on."""
        return format_event(data)

    def truncate(self, event: Mapping[str, Any], keep_tokens: int, encoding: str) -> Mapping[str, Any]:
        """Keep the first ``keep_tokens`` tokens of the chunk's text."""
        left = keep_tokens
        candidates = []
        for candidate in event.get("candidates") or ():
            content = dict(candidate.get("content") or {})
            parts = []
            for part in content.get("parts") or ():
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    text, used = head(part["text"], left, encoding)
                    part = {**part, "text": text}
                    left -= used
                parts.append(part)
            content["parts"] = parts
            candidates.append({**candidate, "content": content})
        return {**event, "candidates": candidates}

    def encode(self, name: str | None, event: Mapping[str, Any]) -> bytes:
        """``data: <json>``."""
        return format_event(json.dumps(event, separators=(",", ":")))

    def error_event(self, message: str) -> bytes:
        """``data: {"error": {...}}`` in Google's error shape."""
        return self.encode(None, {"error": {"code": 502, "message": message, "status": "UNAVAILABLE"}})

    def closing(self, state: StreamState, *, model: str, input_tokens: int, reason: str) -> list[bytes]:
        """A last chunk with ``finishReason: "MAX_TOKENS"`` and our counts as its usage."""
        chunk = {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": ""}]},
                    "finishReason": "MAX_TOKENS",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": input_tokens,
                "candidatesTokenCount": state.counted,
                "totalTokenCount": input_tokens + state.counted,
            },
            "modelVersion": state.reader.model or model,
            "tokenward": {"cut_off": True, "reason": reason},
        }
        return [self.encode(None, chunk)]
