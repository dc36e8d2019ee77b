"""Gemini ``POST /v1beta/cachedContents``: creating a context cache, charged and recorded.

Request facts (https://ai.google.dev/api/caching#CachedContent, read 2026-12-08): the body is a
``CachedContent``: ``model`` (``models/<id>``), ``contents``, ``systemInstruction``, ``tools``,
``ttl`` or ``expireTime``, ``displayName``. The answer is the resource with its ``name``
(``cachedContents/<id>``) and ``usageMetadata.totalTokenCount``, the cached prompt's size.

The call is held like an embedding (its prompt estimate, no output) and charged the cached
tokens at the input rate: Google bills "the input tokens used to create the cache at the
standard input token price" (https://cloud.google.com/vertex-ai/generative-ai/docs/context-cache/context-cache-overview,
read 2026-12-08); the storage fee per token-hour is not metered. Its event keeps the cache's
name (``metadata.cached_content``) and size (its input tokens), so a later ``generateContent``
naming it in ``cachedContent`` is held for those tokens (:mod:`tokenward.guard.context`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenward.core.estimate import Estimate, estimate_gemini
from tokenward.core.modifiers import RequestFacts
from tokenward.core.usage import Usage
from tokenward.guard.wire.endpoints.base import NoOutput, require
from tokenward.guard.wire.endpoints.gemini import Gemini

__all__ = ["GeminiCachedContents"]


class GeminiCachedContents(NoOutput, Gemini):
    """Creating a Gemini context cache: held as a prompt with no output, charged its size."""

    path = "/v1beta/cachedContents"

    def validate(self, body: Any) -> None:
        """Refuse a malformed body (names the field)."""
        require(isinstance(body, dict), "the request body must be a JSON object", "body")
        model = body.get("model")
        require(
            isinstance(model, str) and model.startswith("models/") and len(model) > len("models/"),
            "model must name the model as models/<model id>",
            "model",
        )
        contents = body.get("contents")
        require(contents is None or isinstance(contents, list), "contents must be a list", "contents")
        require(body.get("stream") in (None, False), "cachedContents.create is not streamed", "stream")

    def estimate(self, body: Mapping[str, Any], model: str) -> Estimate:
        """The cached prompt (contents, system instruction, tools), as a Gemini prompt."""
        return estimate_gemini(body, model.removeprefix("models/"))

    def request_facts(self, body: Mapping[str, Any]) -> RequestFacts:
        """Nothing changes the rate of a cache's creation (its tools are not run)."""
        return RequestFacts()

    def stored_context(self, body: Mapping[str, Any]) -> tuple[()]:
        """A new cache continues nothing."""
        return ()

    def upstream_path(self, body: Mapping[str, Any]) -> str:
        """``/v1beta/cachedContents``."""
        return self.path

    def usage(self, response: Mapping[str, Any]) -> Usage | None:
        """``usageMetadata.totalTokenCount`` as the input, and a known zero output."""
        meta = response.get("usageMetadata")
        total = meta.get("totalTokenCount") if isinstance(meta, Mapping) else None
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            return None
        return Usage(input_tokens=total, output_tokens=0, input_source="provider", output_source="provider")

    def response_metadata(self, response: Mapping[str, Any]) -> dict[str, Any]:
        """The cache's ``name``, which later calls name in ``cachedContent``."""
        name = response.get("name")
        return {"cached_content": name} if isinstance(name, str) and name else {}
