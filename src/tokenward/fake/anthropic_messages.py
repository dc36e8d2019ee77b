"""The fake's Anthropic Messages endpoint (``POST /v1/messages``).

Wire format (https://docs.anthropic.com/en/api/messages and
https://docs.anthropic.com/en/docs/build-with-claude/streaming):

* a ``message`` object with ``content: [{"type": "text", "text": ...}]``, or a stream of named
  events: ``message_start`` (the message with empty content and the input usage, with
  ``output_tokens: 1``), ``content_block_start``, ``ping``, ``content_block_delta`` events with
  ``text_delta``, ``content_block_stop``, ``message_delta`` (``delta.stop_reason`` and the
  cumulative ``usage.output_tokens``), ``message_stop``;
* ``usage``: ``input_tokens`` *excludes* ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens``; the three add up to the prompt
  (https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching#tracking-cache-performance).
  ``cache_creation`` splits the write by lifetime (all of it is reported as 5-minute writes);
  ``speed`` and ``inference_geo`` are reported back (in ``message_start`` and, for ``speed``, in
  the ``message_delta`` usage too) when the request sets them, as the speed and geography that
  served it (https://platform.claude.com/docs/en/build-with-claude/fast-mode,
  https://platform.claude.com/docs/en/build-with-claude/data-residency); the request may only
  name ``speed`` ``standard``/``fast`` and ``inference_geo`` ``global``/``us``;
* ``max_tokens`` is required (at least 1); ``stop_reason`` is ``max_tokens`` when it cut the
  reply, else ``end_turn``;
* a tool call (option ``tool_call``, see :mod:`tokenward.fake.tools`): ``content`` holds one
  ``tool_use`` block (``id``, ``name``, ``input``) and ``stop_reason`` is ``tool_use``
  (``max_tokens`` when cut, the block's ``input`` then ``{}``); streamed as
  ``content_block_start`` with the block and ``input: {}``, then ``content_block_delta`` events
  with ``input_json_delta`` pieces of the arguments' JSON text (``chunk_tokens`` pieces each);
* errors: ``{"type": "error", "error": {"type", "message"}}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

from tokenward.errors import ValidationError
from tokenward.fake._validate import (
    json_type,
    optional_bool,
    optional_choice,
    optional_int,
    optional_list,
    optional_object,
    required_str,
)
from tokenward.fake.counting import (
    MESSAGE_OVERHEAD,
    count_pieces,
    json_pieces,
    piece_chunks,
    reply_chunks,
    reply_text,
)
from tokenward.fake.options import FakeOptions
from tokenward.fake.reply import plan_reply, reported
from tokenward.fake.streaming import json_answer, sse_event, sse_response
from tokenward.fake.tools import plan_tool_call, serial, tools_offered

__all__ = ["MessagesRequest", "count_prompt", "error_response", "parse_request", "replay", "respond"]

_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """What the fake needs from a validated Messages request.

    Attributes:
        model: the requested model id (echoed).
        stream: whether an SSE stream was asked for.
        max_tokens: the output bound in tokens.
        prompt_tokens: the fake's prompt count (see :mod:`tokenward.fake.counting`).
        tools_offered: ``tools`` is non-empty and ``tool_choice`` is not ``{"type": "none"}``.
        speed / inference_geo: the speed and geography asked for (reported back as served).
    """

    model: str
    stream: bool
    max_tokens: int
    prompt_tokens: int
    tools_offered: bool = False
    speed: str | None = None
    inference_geo: str | None = None


def error_response(
    status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """An Anthropic-shaped error: ``{"type": "error", "error": {"type", "message"}}`` (``param`` unused)."""
    kind = _ERRORS.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return JSONResponse(
        {"type": "error", "error": {"type": kind, "message": message}}, status_code=status, headers=headers
    )


def _content_pieces(content: Any, where: str) -> int:
    if isinstance(content, str):
        return count_pieces(content)
    if not isinstance(content, list):
        raise ValidationError(
            f"{where}: Input should be a valid string or list, got {json_type(content)}", field=where
        )
    total = 0
    for index, block in enumerate(content):
        spot = f"{where}.{index}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise ValidationError(f"{spot}: expected a content block object with a 'type'", field=spot)
        kind = block["type"]
        if kind in ("text", "thinking"):
            text = block.get(kind)
            if not isinstance(text, str):
                raise ValidationError(f"{spot}.{kind}: Field required (a string)", field=spot)
            total += count_pieces(text)
        elif kind == "tool_use":
            total += count_pieces(str(block.get("name", ""))) + json_pieces(block.get("input", {}))
        elif kind == "tool_result" and block.get("content") is not None:
            total += _content_pieces(block["content"], f"{spot}.content")
    return total


def count_prompt(body: dict[str, Any]) -> int:
    """Validate the prompt part of a Messages body (``system``, ``messages``, ``tools``) and count it.

    Raises:
        ValidationError: a missing or mistyped field (``field`` names it).
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValidationError("messages: at least one message is required", field="messages")
    prompt = 0
    system = body.get("system")
    if system is not None:
        prompt += _content_pieces(system, "system")
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise ValidationError(f"{where}.role: Input should be 'user' or 'assistant'", field=where)
        if "content" not in message:
            raise ValidationError(f"{where}.content: Field required", field=where)
        prompt += MESSAGE_OVERHEAD + _content_pieces(message["content"], f"{where}.content")
    for index, tool in enumerate(optional_list(body, "tools") or []):
        if not isinstance(tool, dict):
            raise ValidationError(f"tools.{index}: Input should be an object", field="tools")
        prompt += json_pieces(tool)
    return prompt


def parse_request(body: dict[str, Any]) -> MessagesRequest:
    """Validate a Messages body (``fake`` key already removed) and count its prompt.

    Raises:
        ValidationError: a missing or mistyped field (``field`` names it).
    """
    model = required_str(body, "model", "model: Field required")
    max_tokens = optional_int(body, "max_tokens", 1)
    if max_tokens is None:
        raise ValidationError("max_tokens: Field required", field="max_tokens")
    prompt = count_prompt(body)
    choice = optional_object(body, "tool_choice") or {}
    return MessagesRequest(
        model=model,
        stream=bool(optional_bool(body, "stream")),
        max_tokens=max_tokens,
        prompt_tokens=prompt,
        tools_offered=tools_offered(body.get("tools"), choice.get("type") == "none"),
        speed=optional_choice(body, "speed", ("standard", "fast")),
        inference_geo=optional_choice(body, "inference_geo", ("global", "us")),
    )


def _usage(
    counts: dict[str, int] | None, options: FakeOptions, request: MessagesRequest
) -> dict[str, Any] | None:
    if counts is None:
        return None
    usage: dict[str, Any] = {
        "input_tokens": None if options.usage == "null_prompt" else counts["input"],
        "cache_creation_input_tokens": counts["write"],
        "cache_read_input_tokens": counts["read"],
        "cache_creation": {"ephemeral_5m_input_tokens": counts["write"], "ephemeral_1h_input_tokens": 0},
        "output_tokens": counts["output"],
    }
    if request.speed is not None:
        usage["speed"] = request.speed
    if request.inference_geo is not None:
        usage["inference_geo"] = request.inference_geo
    return usage


def _content(
    request: MessagesRequest, options: FakeOptions, response_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]], int, bool]:
    """The one content block, its streamed deltas, the output tokens and whether it was cut."""
    if options.tool_call is not None and request.tools_offered:
        call = plan_tool_call(options, request.max_tokens)
        block = {"type": "tool_use", "id": f"toolu_fake_{serial(response_id)}", "name": call.name}
        deltas = [
            {"type": "input_json_delta", "partial_json": piece}
            for piece in piece_chunks(call.arguments, options.chunk_tokens)
        ]
        return {**block, "input": call.input}, deltas, call.output_tokens, call.truncated
    reply = plan_reply(options, request.max_tokens, reasoning=options.reasoning_tokens)
    deltas = [
        {"type": "text_delta", "text": piece}
        for piece in reply_chunks(reply.text_tokens, options.chunk_tokens)
    ]
    block = {"type": "text", "text": reply_text(reply.text_tokens)}
    return block, deltas, reply.output_tokens, reply.truncated


def _opening(block: dict[str, Any]) -> dict[str, Any]:
    """The block as ``content_block_start`` announces it: no text, no input yet."""
    return {**block, "input": {}} if block["type"] == "tool_use" else {**block, "text": ""}


def respond(request: MessagesRequest, options: FakeOptions, response_id: str) -> Response:
    """The reply to a validated request (text, or a tool call), as JSON or as an SSE stream.

    Raises:
        ValidationError: ``cache_read_tokens`` plus ``cache_write_tokens`` larger than the prompt.
    """
    read, write = options.cache_read_tokens, options.cache_write_tokens
    if read + write > request.prompt_tokens:
        raise ValidationError(
            f"fake options 'cache_read_tokens' + 'cache_write_tokens' ({read} + {write}) exceed the prompt's "
            f"{request.prompt_tokens} tokens",
            field="cache_read_tokens",
        )
    block, deltas, output, truncated = _content(request, options, response_id)
    stop_reason = "max_tokens" if truncated else ("tool_use" if block["type"] == "tool_use" else "end_turn")
    true_counts = {"input": request.prompt_tokens - read - write, "read": read, "write": write}
    headers = {"request-id": f"req_{response_id}"}
    message: dict[str, Any] = {
        "id": response_id,
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": [block],
        "stop_reason": stop_reason,
        "stop_sequence": None,
    }
    final_usage = _usage(reported(options.usage, {**true_counts, "output": output}), options, request)
    if not request.stream:
        if final_usage is not None:
            message["usage"] = final_usage
        return json_answer(message, options, headers, output)

    start = {**message, "content": [], "stop_reason": None}
    start_usage = _usage(reported(options.usage, {**true_counts, "output": 1}), options, request)
    if start_usage is not None:
        start["usage"] = start_usage
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "content_block_start", "index": 0, "content_block": _opening(block)},
        {"type": "ping"},
    ]
    events += [{"type": "content_block_delta", "index": 0, "delta": delta} for delta in deltas]
    events.append({"type": "content_block_stop", "index": 0})
    ending: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
    }
    if final_usage is not None:
        ending["usage"] = {"output_tokens": final_usage["output_tokens"]}
        if request.speed is not None:
            ending["usage"]["speed"] = request.speed
    events += [ending, {"type": "message_stop"}]
    return sse_response(
        [sse_event(event) for event in events], options, headers, outputs=_outputs(deltas, output, block)
    )


def _outputs(deltas: list[dict[str, Any]], output: int, block: dict[str, Any]) -> list[int]:
    """The output generated once each event of the stream is delivered: hidden reasoning by
    ``message_start``, a tool's name by ``content_block_start``, then each delta's pieces."""
    pieces = [count_pieces(str(d.get("text", d.get("partial_json", "")))) for d in deltas]
    name = count_pieces(str(block.get("name", ""))) if block["type"] == "tool_use" else 0
    done = output - sum(pieces) - name
    outputs = [done, done + name, done + name]  # message_start, content_block_start, ping
    for count in pieces:
        outputs.append(outputs[-1] + count)
    return outputs + [output] * 3  # content_block_stop, message_delta, message_stop


def replay(options: FakeOptions, response_id: str) -> Response:
    """The ``events`` option: each object sent verbatim as ``event: <its type>`` plus ``data:``."""
    return sse_response(
        [sse_event(event) for event in options.events or ()], options, {"request-id": f"req_{response_id}"}
    )
