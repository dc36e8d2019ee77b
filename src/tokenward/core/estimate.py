"""Counting a request's input tokens before the call.

OpenAI chat requests are counted with the model's own encoding plus the message framing OpenAI
documents in its cookbook ("How to count tokens with tiktoken"): 3 tokens per message, 1 more
when a message has a ``name``, and 3 that prime the reply. Images follow OpenAI's tile rule
(https://platform.openai.com/docs/guides/images-vision#calculating-costs): 85 tokens at ``low``
detail, else 85 + 170 per 512-pixel tile; without the image's size the largest tiling (8 tiles)
is assumed. Tool definitions are counted as their JSON text plus a small framing per function
(OpenAI does not document it; the JSON text over-counts its internal format).

Anthropic, Gemini and open models have no public offline tokenizer: their prompts are counted
with ``o200k_base`` and multiplied by a safety factor (default 1.2), and the estimate is marked
approximate. Images in Anthropic requests are counted as their documented maximum
(https://docs.anthropic.com/en/docs/build-with-claude/vision: about 1,600 tokens for an image at
the size limit) when the size is unknown.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

from tokenward.core.tokenizers import encoding, encoding_for_model

__all__ = [
    "DEFAULT_APPROXIMATION_FACTOR",
    "Estimate",
    "count_tokens",
    "estimate_anthropic_messages",
    "estimate_openai_chat",
]

DEFAULT_APPROXIMATION_FACTOR = Decimal("1.2")
"""Safety factor over ``o200k_base`` for models without an offline tokenizer."""

_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3
_TOKENS_PER_FUNCTION = 12
_IMAGE_LOW = 85
_IMAGE_MAX_HIGH = 85 + 170 * 8
_ANTHROPIC_IMAGE_MAX = 1600
_ANTHROPIC_TOKENS_PER_MESSAGE = 4


@dataclass(frozen=True, slots=True)
class Estimate:
    """A pre-flight count of a request's prompt.

    Attributes:
        input_tokens: the estimate, in tokens (already multiplied by any safety factor).
        encoding: the tiktoken encoding used.
        approximate: True unless the model's own tokenizer and documented framing were used.
        basis: a short human-readable account of how the figure was made.
    """

    input_tokens: int
    encoding: str
    approximate: bool
    basis: str


def count_tokens(text: str, encoding_name: str = "o200k_base") -> int:
    """Tokens in ``text`` under the given encoding (special-token text counted as ordinary text)."""
    if not text:
        return 0
    return len(encoding(encoding_name).encode_ordinary(text))


def _text_of(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _openai_part(part: Any, enc: str) -> int:
    if isinstance(part, str):
        return count_tokens(part, enc)
    if not isinstance(part, Mapping):
        return count_tokens(_text_of(part), enc)
    kind = part.get("type")
    if kind in ("text", "input_text", "output_text"):
        return count_tokens(_text_of(part.get("text")), enc)
    if kind in ("image_url", "input_image"):
        nested = part.get("image_url")  # an object in chat, a plain URL string in Responses
        detail = part.get("detail") or (nested.get("detail") if isinstance(nested, Mapping) else None)
        return _IMAGE_LOW if detail == "low" else _IMAGE_MAX_HIGH
    return count_tokens(_text_of(part), enc)


def _openai_content(content: Any, enc: str) -> int:
    if isinstance(content, list):
        return sum(_openai_part(part, enc) for part in content)
    return count_tokens(_text_of(content), enc) if content is not None else 0


def _openai_tools(tools: Any, enc: str) -> int:
    if not isinstance(tools, list) or not tools:
        return 0
    total = 0
    for tool in tools:
        spec = tool.get("function", tool) if isinstance(tool, Mapping) else tool
        total += _TOKENS_PER_FUNCTION + count_tokens(_text_of(spec), enc)
    return total


def estimate_openai_chat(
    body: Mapping[str, Any], model: str | None = None, *, factor: Decimal = DEFAULT_APPROXIMATION_FACTOR
) -> Estimate:
    """Estimate the prompt tokens of an OpenAI chat-completions request body.

    Args:
        body: the request JSON (``messages``, optional ``tools``/``functions``).
        model: the model id (defaults to ``body["model"]``); picks the encoding.
        factor: safety factor applied (rounding up) when the model has no known tokenizer (a Claude,
            Gemini or open model behind an OpenAI-compatible endpoint); exact counts are not scaled.
    """
    model = model or str(body.get("model") or "")
    enc, exact = encoding_for_model(model)
    total = _REPLY_PRIMING
    for message in body.get("messages") or ():
        if not isinstance(message, Mapping):
            continue
        total += _TOKENS_PER_MESSAGE + count_tokens(_text_of(message.get("role")), enc)
        total += _openai_content(message.get("content"), enc)
        if message.get("name"):
            total += _TOKENS_PER_NAME + count_tokens(_text_of(message.get("name")), enc)
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                total += count_tokens(_text_of(function.get("name")), enc)
                total += count_tokens(_text_of(function.get("arguments")), enc)
    total += _openai_tools(body.get("tools"), enc) + _openai_tools(body.get("functions"), enc)
    if exact:
        return Estimate(total, enc, False, f"{enc} + OpenAI chat framing")
    scaled = int((Decimal(total) * factor).to_integral_value(rounding=ROUND_CEILING))
    return Estimate(scaled, enc, True, f"{enc} x {factor} (no tokenizer known for {model!r})")


def _anthropic_block(block: Any, enc: str) -> int:
    if isinstance(block, str):
        return count_tokens(block, enc)
    if not isinstance(block, Mapping):
        return count_tokens(_text_of(block), enc)
    kind = block.get("type")
    if kind == "text":
        return count_tokens(_text_of(block.get("text")), enc)
    if kind == "image":
        return _ANTHROPIC_IMAGE_MAX
    if kind == "tool_use":
        return count_tokens(_text_of(block.get("name")), enc) + count_tokens(
            _text_of(block.get("input")), enc
        )
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            return sum(_anthropic_block(b, enc) for b in content)
        return count_tokens(_text_of(content), enc)
    if kind in ("thinking", "redacted_thinking"):
        return count_tokens(_text_of(block.get("thinking") or block.get("data")), enc)
    return count_tokens(_text_of(block), enc)


def estimate_anthropic_messages(
    body: Mapping[str, Any], model: str | None = None, *, factor: Decimal = DEFAULT_APPROXIMATION_FACTOR
) -> Estimate:
    """Estimate the prompt tokens of an Anthropic Messages request body.

    Claude's tokenizer is not public, so the count is ``o200k_base`` times ``factor`` (rounded up)
    and always approximate.
    """
    enc = "o200k_base"
    raw = 0
    system = body.get("system")
    if isinstance(system, list):
        raw += sum(_anthropic_block(b, enc) for b in system)
    elif system is not None:
        raw += count_tokens(_text_of(system), enc)
    for message in body.get("messages") or ():
        if not isinstance(message, Mapping):
            continue
        raw += _ANTHROPIC_TOKENS_PER_MESSAGE
        content = message.get("content")
        if isinstance(content, list):
            raw += sum(_anthropic_block(b, enc) for b in content)
        else:
            raw += count_tokens(_text_of(content), enc)
    for tool in body.get("tools") or ():
        raw += _TOKENS_PER_FUNCTION + count_tokens(_text_of(tool), enc)
    scaled = int((Decimal(raw) * factor).to_integral_value(rounding=ROUND_CEILING))
    return Estimate(scaled, enc, True, f"{enc} x {factor} (Claude's tokenizer is not public)")
