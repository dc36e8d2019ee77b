"""``POST /v1/messages`` (Anthropic Messages).

Request facts (https://docs.anthropic.com/en/api/messages): ``max_tokens`` is required and bounds
the output (extended thinking included); prompt caching is asked for with ``cache_control``
markers, and a write is billed above the input rate: 1.25x for the default 5-minute lifetime, 2x
for ``"ttl": "1h"`` (https://platform.claude.com/docs/en/build-with-claude/prompt-caching, read
2026-12-07). ``speed: "fast"`` asks for fast mode (its own, higher rates;
https://platform.claude.com/docs/en/build-with-claude/fast-mode) and ``inference_geo: "us"`` for
US-only inference (1.1x on Claude 4.6 and later;
https://platform.claude.com/docs/en/build-with-claude/data-residency); both read 2026-12-07. The
call is held at the rates the request asks for. Streams always carry usage
(``message_start`` and cumulative ``message_delta``); a stream that reached its bound ends with
``message_delta`` ``stop_reason: "max_tokens"`` then ``message_stop``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tokenward.core.estimate import Estimate, estimate_anthropic_messages
from tokenward.core.modifiers import RequestFacts, normalise_geo, normalise_speed
from tokenward.guard.wire.endpoints.base import (
    Endpoint,
    StreamState,
    head,
    require_messages,
    require_object_with_model,
    require_positive_int,
    require_stream_flag,
    values_under,
)
from tokenward.guard.wire.endpoints.billable import anthropic_server_tools, requested_tier
from tokenward.guard.wire.sse import format_event

__all__ = ["AnthropicMessages"]

_TEXT_KEYS = ("text", "thinking", "partial_json")
_MIN_THINKING = 1024  # the smallest thinking budget Anthropic accepts


class AnthropicMessages(Endpoint):
    """The Anthropic Messages endpoint."""

    dialect = "anthropic-messages"
    family = "anthropic"
    path = "/v1/messages"

    def validate(self, body: Any) -> None:
        """Refuse a malformed body (names the field)."""
        require_object_with_model(body)
        require_messages(body)
        require_positive_int(body, "max_tokens", required=True)
        require_stream_flag(body)

    def estimate(self, body: Mapping[str, Any], model: str) -> Estimate:
        """The prompt estimate (``o200k_base`` times the safety factor: Claude's tokenizer is not
        public)."""
        return estimate_anthropic_messages(body, model)

    def requested_max(self, body: Mapping[str, Any]) -> int | None:
        """``max_tokens``."""
        value = body.get("max_tokens")
        return value if isinstance(value, int) else None

    def with_bound(self, body: dict[str, Any], bound: int, provider: str) -> dict[str, Any]:
        """``max_tokens`` set to ``bound``. Extended thinking must stay below ``max_tokens`` and at
        least 1,024 tokens (https://docs.anthropic.com/en/docs/build-with-claude/extended-thinking),
        so a clamped bound lowers ``thinking.budget_tokens`` to fit, or turns thinking off when the
        bound leaves no room for it."""
        out = {**body, "max_tokens": bound}
        thinking = body.get("thinking")
        budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
        if (
            isinstance(thinking, dict)
            and thinking.get("type") == "enabled"
            and isinstance(budget, int)
            and budget >= bound
        ):
            if bound > _MIN_THINKING:
                out["thinking"] = {**thinking, "budget_tokens": max(_MIN_THINKING, bound // 2)}
            else:
                out["thinking"] = {"type": "disabled"}
        return out

    def may_write_cache(self, body: Mapping[str, Any]) -> bool:
        """True when any ``cache_control`` marker appears in the request."""
        return bool(values_under(body, "cache_control"))

    def request_facts(self, body: Mapping[str, Any]) -> RequestFacts:
        """``speed``, ``inference_geo``, ``service_tier`` (``auto``: held at the dearest tier
        unless the upstream's is configured), web search and web fetch tools (their fees and
        results, up to ``max_uses``), and the cache writes the ``cache_control`` markers ask
        for: the lifetime is ``"1h"`` when any marker asks for an hour, else ``"5m"`` (the
        default); None without markers, or when a marker names a lifetime Anthropic does not
        price (the upstream refuses it)."""
        markers = [m for m in values_under(body, "cache_control") if isinstance(m, Mapping)]
        ttls = {str(m.get("ttl", "5m")).lower() for m in markers}
        ttl = None
        if markers and ttls <= {"5m", "1h"}:
            ttl = "1h" if "1h" in ttls else "5m"
        return RequestFacts(
            speed=normalise_speed(body.get("speed")),
            inference_geo=normalise_geo(body.get("inference_geo")),
            may_write_cache=bool(markers),
            cache_write_ttl=ttl,
            service_tier=requested_tier(body.get("service_tier")),
            server_tools=anthropic_server_tools(body),
        )

    def prepare_stream(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Anthropic streams always carry usage; nothing to change."""
        return body, True

    def response_text(self, response: Mapping[str, Any]) -> str:
        """Text, thinking and tool input of every content block."""
        pieces: list[str] = []
        for block in response.get("content") or ():
            if not isinstance(block, Mapping):
                continue
            for key in ("text", "thinking", "name"):
                if isinstance(block.get(key), str):
                    pieces.append(block[key])
            if block.get("input") is not None:  # tool input, as compact as the model may write it
                pieces.append(json.dumps(block["input"], separators=(",", ":"), ensure_ascii=False))
        return "".join(pieces)

    def is_end(self, name: str | None, data: str, event: Mapping[str, Any] | None) -> bool:
        """``message_stop`` ends the stream."""
        return (event or {}).get("type") == "message_stop"

    def relay(
        self, name: str | None, data: str, event: Mapping[str, Any], state: StreamState
    ) -> bytes | None:
        """Pass every event on, tracking the open content block."""
        kind = event.get("type")
        if kind == "content_block_start" and isinstance(event.get("index"), int):
            state.open_block = event["index"]
        elif kind == "content_block_stop":
            state.open_block = None
        return format_event(data, name or (kind if isinstance(kind, str) else None))

    def truncate(self, event: Mapping[str, Any], keep_tokens: int, encoding: str) -> Mapping[str, Any]:
        """Keep the first ``keep_tokens`` tokens of a ``content_block_delta``'s text."""
        delta = event.get("delta")
        if not isinstance(delta, Mapping):
            return event
        out = dict(delta)
        for key in _TEXT_KEYS:
            if isinstance(out.get(key), str):
                out[key], _ = head(out[key], keep_tokens, encoding)
        return {**event, "delta": out}

    def encode(self, name: str | None, event: Mapping[str, Any]) -> bytes:
        """``event: <type>`` and ``data: <json>``."""
        kind = event.get("type")
        return format_event(
            json.dumps(event, separators=(",", ":")), name or (kind if isinstance(kind, str) else None)
        )

    def error_event(self, message: str) -> bytes:
        """``event: error`` with ``{"type": "error", "error": {...}}``, as Anthropic sends mid-stream
        errors (https://docs.anthropic.com/en/docs/build-with-claude/streaming#error-events)."""
        return self.encode("error", {"type": "error", "error": {"type": "api_error", "message": message}})

    def closing(self, state: StreamState, *, model: str, input_tokens: int, reason: str) -> list[bytes]:
        """Close any open block, then ``message_delta`` with ``stop_reason: "max_tokens"`` and the
        output count, then ``message_stop``."""
        out = []
        if state.open_block is not None:
            out.append(self.encode(None, {"type": "content_block_stop", "index": state.open_block}))
            state.open_block = None
        out.append(
            self.encode(
                None,
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                    "usage": {"output_tokens": state.counted},
                    "tokenward": {"cut_off": True, "reason": reason},
                },
            )
        )
        out.append(self.encode(None, {"type": "message_stop"}))
        return out
