"""Ollama's native API (``/api/chat``, ``/api/generate``).

Provider facts (https://github.com/ollama/ollama/blob/main/docs/api.md, "Response" fields):

* There is no usage object: the final response (``"done": true``; the last line of a stream)
  carries ``prompt_eval_count`` (prompt tokens evaluated) and ``eval_count`` (tokens generated).
* When the prompt came from Ollama's cache, ``prompt_eval_count`` is left out or is ``0``: the
  prompt's size is then *unknown*, never zero (a prompt always has tokens).
* A stream is newline-delimited JSON: each line has ``message.content`` (chat; ``message.thinking``
  for thinking models) or ``response`` (generate); only the last line has the counts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tokenward.core.dialects._fields import count
from tokenward.core.dialects.base import ResponseFacts, text_of
from tokenward.core.usage import Usage

__all__ = ["OllamaStream", "response_facts_ollama", "usage_from_ollama"]


def usage_from_ollama(raw: Mapping[str, Any] | None) -> Usage:
    """Normalise the counts of Ollama's final response object.

    A missing or zero ``prompt_eval_count`` is an unknown prompt size; a missing ``eval_count``
    an unknown output.

    Raises:
        ValidationError: on a count that is not a whole number from 0 to ``MAX_COUNT`` (2**53 - 1).
    """
    if raw is None:
        return Usage(input_source="none", output_source="none")
    prompt = count(raw, "prompt_eval_count")
    if prompt == 0:
        prompt = None
    output = count(raw, "eval_count")
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        input_source="provider" if prompt is not None else "none",
        output_source="provider" if output is not None else "none",
    )


def _text(line: Mapping[str, Any]) -> str:
    message = line.get("message")
    pieces = [text_of(line.get("response")), text_of(line.get("thinking"))]
    if isinstance(message, Mapping):
        pieces += [text_of(message.get("content")), text_of(message.get("thinking"))]
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, Mapping) else None
            if isinstance(function, Mapping):
                pieces.append(text_of(function.get("name")))
                if function.get("arguments") is not None:
                    pieces.append(json.dumps(function["arguments"], separators=(",", ":")))
    return "".join(pieces)


def response_facts_ollama(response: Mapping[str, Any]) -> ResponseFacts:
    """Facts of a final (``done``) response object.

    Raises:
        ValidationError: on a malformed count.
    """
    has_counts = "prompt_eval_count" in response or "eval_count" in response
    return ResponseFacts(
        usage=usage_from_ollama(response) if has_counts or response.get("done") else None,
        model=response.get("model") if isinstance(response.get("model"), str) else None,
        finish_reason=response.get("done_reason") if isinstance(response.get("done_reason"), str) else None,
    )


class OllamaStream:
    """Reads an Ollama NDJSON stream, line by line (each line decoded).

    Attributes:
        model: the lines' ``model``.
        finish_reason: the final line's ``done_reason``.
        raw_usage: the final (``done``) line, or None before it arrived.
    """

    def __init__(self) -> None:
        self.model: str | None = None
        self.response_id: str | None = None
        self.finish_reason: str | None = None
        self.service_tier: str | None = None
        self.reported_cost_usd = None
        self.raw_usage: Mapping[str, Any] | None = None

    def feed(self, line: Mapping[str, Any]) -> str:
        """Take one line; return the generated text it carries."""
        if isinstance(line.get("model"), str):
            self.model = line["model"]
        if line.get("done") is True:
            self.raw_usage = line
            if isinstance(line.get("done_reason"), str):
                self.finish_reason = line["done_reason"]
        return _text(line)

    @property
    def usage(self) -> Usage | None:
        """The final line's counts, or None when the stream never finished."""
        return None if self.raw_usage is None else usage_from_ollama(self.raw_usage)
