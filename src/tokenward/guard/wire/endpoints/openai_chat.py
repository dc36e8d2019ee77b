"""``POST /v1/chat/completions`` (OpenAI Chat Completions, and OpenAI-compatible servers).

Request facts (https://platform.openai.com/docs/api-reference/chat/create): the output bound is
``max_completion_tokens`` (``max_tokens`` is its deprecated alias, still the only one many
OpenAI-compatible servers know); ``n`` completions may each use the whole bound; streamed usage
needs ``stream_options.include_usage``, and then arrives in a last chunk with empty ``choices``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from tokenward.core.dialects.openai_chat import delta_text
from tokenward.core.estimate import Estimate, estimate_openai_chat
from tokenward.core.modifiers import RequestFacts
from tokenward.guard.wire.endpoints.base import (
    Endpoint,
    StreamState,
    head,
    openai_may_write_cache,
    openai_request_facts,
    require,
    require_messages,
    require_object_with_model,
    require_positive_int,
    require_stream_flag,
)
from tokenward.guard.wire.sse import format_event

__all__ = ["OpenAIChat"]

_TEXT_KEYS = ("content", "reasoning_content", "reasoning", "refusal")


class OpenAIChat(Endpoint):
    """The OpenAI chat-completions endpoint."""

    dialect = "openai-chat"
    family = "openai"
    path = "/v1/chat/completions"

    def validate(self, body: Any) -> None:
        """Refuse a malformed body (names the field)."""
        require_object_with_model(body)
        require_messages(body)
        for name in ("max_tokens", "max_completion_tokens", "n"):
            require_positive_int(body, name)
        require_stream_flag(body)
        options = body.get("stream_options")
        require(
            options is None or isinstance(options, dict), "stream_options must be an object", "stream_options"
        )
        tools = body.get("tools")
        require(tools is None or isinstance(tools, list), "tools must be a list", "tools")

    def estimate(self, body: Mapping[str, Any], model: str) -> Estimate:
        """The prompt estimate (the model's own encoding plus OpenAI's documented framing)."""
        return estimate_openai_chat(body, model)

    def requested_max(self, body: Mapping[str, Any]) -> int | None:
        """``max_completion_tokens``, else ``max_tokens``, else None."""
        value = body.get("max_completion_tokens", body.get("max_tokens"))
        return value if isinstance(value, int) else None

    def choices(self, body: Mapping[str, Any]) -> int:
        """``n`` (1 by default)."""
        n = body.get("n", 1)
        return n if isinstance(n, int) and n >= 1 else 1

    def with_bound(self, body: dict[str, Any], bound: int, provider: str) -> dict[str, Any]:
        """Set the bound in the field the client used; when it used none, ``max_completion_tokens``
        for OpenAI itself and ``max_tokens`` for compatible servers."""
        out = dict(body)
        if "max_completion_tokens" in out or ("max_tokens" not in out and provider in ("openai", "azure")):
            out["max_completion_tokens"] = bound
            out.pop("max_tokens", None)
        else:
            out["max_tokens"] = bound
        return out

    def may_write_cache(self, body: Mapping[str, Any]) -> bool:
        """Automatic prompt caching may write the cache (billed from GPT-5.6 on), unless the
        request asks for explicit caching and marks no breakpoint."""
        return openai_may_write_cache(body)

    def request_facts(self, body: Mapping[str, Any]) -> RequestFacts:
        """Cache writes, the service tier named (held at it; ``auto`` or none: at the upstream's
        configured tier, else the dearest), and web search (its fees and results)."""
        return openai_request_facts(body)

    def prepare_stream(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Ask the upstream for usage in the stream; remember whether the client asked."""
        options = dict(body.get("stream_options") or {})
        wanted = options.get("include_usage") is True
        options["include_usage"] = True
        return {**body, "stream_options": options}, wanted

    def response_text(self, response: Mapping[str, Any]) -> str:
        """Every choice's generated text: content, reasoning, refusal, tool-call and legacy
        ``function_call`` names and arguments, audio transcript (:func:`delta_text`)."""
        pieces: list[str] = []
        choices = response.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            message = choice.get("message") if isinstance(choice, Mapping) else None
            if isinstance(message, Mapping):
                pieces.append(delta_text(message))
        return "".join(pieces)

    def is_end(self, name: str | None, data: str, event: Mapping[str, Any] | None) -> bool:
        """``data: [DONE]`` ends the stream."""
        return data.strip() == "[DONE]"

    def relay(
        self, name: str | None, data: str, event: Mapping[str, Any], state: StreamState
    ) -> bytes | None:
        """Pass chunks on; hide usage the client did not ask for (a usage-only chunk is dropped, not
        turned into an empty delta)."""
        if state.client_wants_usage or event.get("usage") is None:
            return format_event(data)
        if not event.get("choices"):
            return None
        return self.encode(None, {k: v for k, v in event.items() if k != "usage"})

    def truncate(self, event: Mapping[str, Any], keep_tokens: int, encoding: str) -> Mapping[str, Any]:
        """Keep the first ``keep_tokens`` tokens of the chunk's text, field by field."""
        left = keep_tokens
        choices = []
        for choice in event.get("choices") or ():
            delta = dict(choice.get("delta") or {})
            for key in _TEXT_KEYS:
                text = delta.get(key)
                if isinstance(text, str):
                    delta[key], used = head(text, left, encoding)
                    left -= used
            calls = []
            for call in delta.get("tool_calls") or ():
                call = dict(call)
                function = dict(call.get("function") or {})
                if isinstance(function.get("arguments"), str):
                    function["arguments"], used = head(function["arguments"], left, encoding)
                    left -= used
                call["function"] = function
                calls.append(call)
            if calls:
                delta["tool_calls"] = calls
            for key, field in (("function_call", "arguments"), ("audio", "transcript")):
                part = delta.get(key)
                if isinstance(part, Mapping) and isinstance(part.get(field), str):
                    kept, used = head(part[field], left, encoding)
                    delta[key] = {**part, field: kept}
                    left -= used
            choices.append({**choice, "delta": delta, "finish_reason": None})
        return {**event, "choices": choices}

    def encode(self, name: str | None, event: Mapping[str, Any]) -> bytes:
        """``data: <json>``."""
        return format_event(json.dumps(event, separators=(",", ":")))

    def error_event(self, message: str) -> bytes:
        """``data: {"error": {...}}``, which the OpenAI SDK raises as an ``APIError``."""
        return self.encode(
            None, {"error": {"message": message, "type": "api_error", "code": "stream_broken", "param": None}}
        )

    def closing(self, state: StreamState, *, model: str, input_tokens: int, reason: str) -> list[bytes]:
        """A last chunk with ``finish_reason: "length"`` for every choice, the usage chunk when the
        client asked for usage (our counts), then ``[DONE]``."""
        reader = state.reader
        base = {
            "id": reader.response_id or "chatcmpl-tokenward",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": reader.model or model,
        }
        finish = {
            **base,
            "choices": [{"index": i, "delta": {}, "finish_reason": "length"} for i in range(state.choices)],
            "tokenward": {"cut_off": True, "reason": reason},
        }
        out = [self.encode(None, finish)]
        if state.client_wants_usage:
            usage = {
                "prompt_tokens": input_tokens,
                "completion_tokens": state.counted,
                "total_tokens": input_tokens + state.counted,
            }
            out.append(self.encode(None, {**base, "choices": [], "usage": usage}))
        out.append(format_event("[DONE]"))
        return out
