"""``POST /v1/responses`` (OpenAI Responses).

Request facts (https://platform.openai.com/docs/api-reference/responses/create): ``input`` is a
string or a list of items, ``instructions`` a system prompt, ``max_output_tokens`` the output
bound (reasoning included). Streams (https://platform.openai.com/docs/api-reference/responses-streaming)
carry usage only in the terminal ``response.completed`` / ``response.incomplete`` /
``response.failed`` event, and have no ``[DONE]``; a reply cut by its bound ends with
``response.incomplete`` whose ``incomplete_details.reason`` is ``max_output_tokens``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from tokenward.core.estimate import Estimate, estimate_openai_responses
from tokenward.core.modifiers import RequestFacts
from tokenward.guard.wire.endpoints.base import (
    Endpoint,
    StreamState,
    head,
    openai_may_write_cache,
    openai_request_facts,
    require,
    require_object_with_model,
    require_positive_int,
    require_stream_flag,
)
from tokenward.guard.wire.endpoints.billable import ContextRef
from tokenward.guard.wire.sse import format_event

__all__ = ["OpenAIResponses"]

_TERMINAL = ("response.completed", "response.incomplete", "response.failed")
_DELTAS = (
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


def conversation_id(body: Mapping[str, Any]) -> str | None:
    """The id of the ``conversation`` a request adds to (a string, or ``{"id": ...}``), or None."""
    value = body.get("conversation")
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


class OpenAIResponses(Endpoint):
    """The OpenAI Responses endpoint."""

    dialect = "openai-responses"
    family = "openai"
    path = "/v1/responses"

    def validate(self, body: Any) -> None:
        """Refuse a malformed body (names the field)."""
        require_object_with_model(body)
        value = body.get("input")
        require(
            isinstance(value, str | list) and bool(value), "input must be a non-empty string or list", "input"
        )
        require_positive_int(body, "max_output_tokens")
        require(
            body.get("background") in (None, False),
            "background responses are not supported through tokenward: their usage arrives after the call "
            "returns, so their cost could not be held or settled",
            "background",
        )
        require_stream_flag(body)
        previous = body.get("previous_response_id")
        require(
            previous is None or (isinstance(previous, str) and bool(previous)),
            "previous_response_id must be a response id (a non-empty string)",
            "previous_response_id",
        )
        conversation = body.get("conversation")
        require(
            conversation is None or conversation_id(body) is not None,
            'conversation must be a conversation id or {"id": <conversation id>}',
            "conversation",
        )

    def estimate(self, body: Mapping[str, Any], model: str) -> Estimate:
        """The prompt estimate (input items, instructions, tools)."""
        return estimate_openai_responses(body, model)

    def requested_max(self, body: Mapping[str, Any]) -> int | None:
        """``max_output_tokens``."""
        value = body.get("max_output_tokens")
        return value if isinstance(value, int) else None

    def with_bound(self, body: dict[str, Any], bound: int, provider: str) -> dict[str, Any]:
        """``max_output_tokens`` set to ``bound``."""
        return {**body, "max_output_tokens": bound}

    def may_write_cache(self, body: Mapping[str, Any]) -> bool:
        """Automatic prompt caching may write the cache (billed from GPT-5.6 on), unless the
        request asks for explicit caching and marks no breakpoint."""
        return openai_may_write_cache(body)

    def request_facts(self, body: Mapping[str, Any]) -> RequestFacts:
        """Cache writes, the service tier named (held at it; ``auto`` or none: at the upstream's
        configured tier, else the dearest), and web search (its fees and results)."""
        return openai_request_facts(body)

    def stored_context(self, body: Mapping[str, Any]) -> tuple[ContextRef, ...]:
        """``previous_response_id`` and ``conversation``: the provider adds their stored turns to
        the prompt and bills them as input."""
        refs = []
        previous = body.get("previous_response_id")
        if isinstance(previous, str) and previous:
            refs.append(ContextRef("previous_response_id", "response_id", previous))
        conversation = conversation_id(body)
        if conversation:
            refs.append(ContextRef("conversation", "conversation", conversation))
        return tuple(refs)

    def request_metadata(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The ``conversation`` the call adds to (its event then stands for the conversation's
        stored turns), and the response it continues."""
        out: dict[str, Any] = {}
        conversation = conversation_id(body)
        if conversation:
            out["conversation"] = conversation
        if isinstance(body.get("previous_response_id"), str):
            out["previous_response_id"] = body["previous_response_id"]
        return out

    def prepare_stream(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Responses streams always end with the usage; nothing to change."""
        return body, True

    def response_text(self, response: Mapping[str, Any]) -> str:
        """The generated text of every output item: message text and refusals, reasoning text
        and summaries, function, custom-tool and MCP call names and arguments, code written for
        the code interpreter."""
        pieces: list[str] = []
        output = response.get("output")
        for item in output if isinstance(output, list) else ():
            if not isinstance(item, Mapping):
                continue
            for key in ("content", "summary"):
                parts = item.get(key)
                for part in parts if isinstance(parts, list) else ():
                    if isinstance(part, Mapping):
                        pieces += [part[k] for k in ("text", "refusal") if isinstance(part.get(k), str)]
            pieces += [
                item[k] for k in ("name", "arguments", "input", "code") if isinstance(item.get(k), str)
            ]
        return "".join(pieces)

    def is_end(self, name: str | None, data: str, event: Mapping[str, Any] | None) -> bool:
        """A terminal event ends the stream."""
        return (event or {}).get("type") in _TERMINAL

    def relay(
        self, name: str | None, data: str, event: Mapping[str, Any], state: StreamState
    ) -> bytes | None:
        """Pass every event on (with its ``event:`` name)."""
        kind = event.get("type")
        return format_event(data, name or (kind if isinstance(kind, str) else None))

    def truncate(self, event: Mapping[str, Any], keep_tokens: int, encoding: str) -> Mapping[str, Any]:
        """Keep the first ``keep_tokens`` tokens of a delta event's text."""
        if event.get("type") not in _DELTAS or not isinstance(event.get("delta"), str):
            return event
        return {**event, "delta": head(event["delta"], keep_tokens, encoding)[0]}

    def encode(self, name: str | None, event: Mapping[str, Any]) -> bytes:
        """``event: <type>`` and ``data: <json>``."""
        kind = event.get("type")
        return format_event(
            json.dumps(event, separators=(",", ":")), name or (kind if isinstance(kind, str) else None)
        )

    def error_event(self, message: str) -> bytes:
        """An ``error`` event (``type``, ``code``, ``message``), which the OpenAI SDK raises."""
        return self.encode(
            None, {"type": "error", "code": "stream_broken", "message": message, "param": None}
        )

    def closing(self, state: StreamState, *, model: str, input_tokens: int, reason: str) -> list[bytes]:
        """``response.incomplete`` (reason ``max_output_tokens``) with our counts as its usage."""
        reader = state.reader
        response = {
            "id": reader.response_id or "resp_tokenward",
            "object": "response",
            "created_at": int(time.time()),
            "model": reader.model or model,
            "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"},
            "output": [],
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": state.counted,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + state.counted,
            },
            "tokenward": {"cut_off": True, "reason": reason},
        }
        return [self.encode(None, {"type": "response.incomplete", "response": response})]
