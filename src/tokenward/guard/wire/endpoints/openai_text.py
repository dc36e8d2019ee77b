"""OpenAI's plain-text endpoints: legacy ``POST /v1/completions`` and ``POST /v1/embeddings``.

Completions (https://platform.openai.com/docs/api-reference/completions/create): ``prompt``,
``max_tokens`` (16 when absent, as the API documents), ``n``; streamed chunks carry
``choices[].text`` and, with ``stream_options.include_usage``, a last usage chunk as chat does.
Embeddings (https://platform.openai.com/docs/api-reference/embeddings/create): ``input`` only,
usage ``{prompt_tokens, total_tokens}`` and no output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tokenward.core.estimate import Estimate, estimate_text_inputs
from tokenward.core.usage import Usage
from tokenward.guard.wire.endpoints.base import (
    NoOutput,
    head,
    require,
    require_positive_int,
    require_stream_flag,
)
from tokenward.guard.wire.endpoints.openai_chat import OpenAIChat

__all__ = ["OpenAICompletions", "OpenAIEmbeddings"]

LEGACY_DEFAULT_MAX_TOKENS = 16


def _check_text_input(body: Any, field: str) -> None:
    require(isinstance(body, dict), "the request body must be a JSON object", "body")
    require(
        isinstance(body.get("model"), str) and bool(body["model"]),
        "model must be a non-empty string",
        "model",
    )
    value = body.get(field)
    require(
        isinstance(value, str | list) and value != [], f"{field} must be a string or a non-empty list", field
    )


class OpenAICompletions(OpenAIChat):
    """The legacy completions endpoint: chat's wire rules, with a ``prompt`` and ``text`` choices."""

    dialect = "openai-chat"
    family = "openai"
    path = "/v1/completions"

    def validate(self, body: Any) -> None:
        """Refuse a malformed body (names the field)."""
        _check_text_input(body, "prompt")
        for name in ("max_tokens", "n", "best_of"):
            require_positive_int(body, name)
        require_stream_flag(body)

    def estimate(self, body: Mapping[str, Any], model: str) -> Estimate:
        """The prompt's tokens, no framing."""
        return estimate_text_inputs(body.get("prompt"), model)

    def requested_max(self, body: Mapping[str, Any]) -> int | None:
        """``max_tokens``."""
        value = body.get("max_tokens")
        return value if isinstance(value, int) else None

    def choices(self, body: Mapping[str, Any]) -> int:
        """The completions generated: ``best_of`` when larger than ``n`` (all are billed)."""
        counts = [
            v
            for v in (body.get("n", 1), body.get("best_of", 1))
            if isinstance(v, int) and not isinstance(v, bool)
        ]
        return max([1, *counts])

    def output_bound(self, body: Mapping[str, Any], default: int) -> int:
        """``max_tokens``, else the API's own default of 16."""
        requested = self.requested_max(body)
        return requested if requested is not None else LEGACY_DEFAULT_MAX_TOKENS

    def with_bound(self, body: dict[str, Any], bound: int, provider: str) -> dict[str, Any]:
        """``max_tokens`` set to ``bound``."""
        return {**body, "max_tokens": bound}

    def response_text(self, response: Mapping[str, Any]) -> str:
        """Every choice's text."""
        return "".join(
            c["text"]
            for c in response.get("choices") or ()
            if isinstance(c, Mapping) and isinstance(c.get("text"), str)
        )

    def truncate(self, event: Mapping[str, Any], keep_tokens: int, encoding: str) -> Mapping[str, Any]:
        """Keep the first ``keep_tokens`` tokens of the chunk's text."""
        left = keep_tokens
        choices = []
        for choice in event.get("choices") or ():
            text = choice.get("text") if isinstance(choice, Mapping) else None
            if isinstance(text, str):
                kept, used = head(text, left, encoding)
                choice = {**choice, "text": kept, "finish_reason": None}
                left -= used
            choices.append(choice)
        return {**event, "choices": choices}


class OpenAIEmbeddings(NoOutput, OpenAICompletions):
    """The embeddings endpoint: input tokens only, never streamed, no output."""

    path = "/v1/embeddings"

    def validate(self, body: Any) -> None:
        """Refuse a malformed body (names the field)."""
        _check_text_input(body, "input")
        require(body.get("stream") in (None, False), "embeddings are not streamed", "stream")

    def estimate(self, body: Mapping[str, Any], model: str) -> Estimate:
        """The input's tokens, no framing."""
        return estimate_text_inputs(body.get("input"), model, what="embedding input")

    def usage(self, response: Mapping[str, Any]) -> Usage | None:
        """``prompt_tokens``, and a known zero output."""
        usage = super().usage(response)
        if usage is None:
            return None
        return replace(usage, output_tokens=0, output_source="provider")
