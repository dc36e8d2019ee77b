"""The fake's OpenAI Chat Completions endpoint (``POST /v1/chat/completions``).

Wire format (https://platform.openai.com/docs/api-reference/chat/object and
https://platform.openai.com/docs/api-reference/chat-streaming):

* a ``chat.completion`` object, or a stream of ``chat.completion.chunk`` objects as
  ``data: {...}`` events ending with ``data: [DONE]``: first a chunk whose delta carries the role,
  then text chunks, then a chunk with an empty delta and the ``finish_reason``;
* ``usage``: ``prompt_tokens`` (with ``prompt_tokens_details.cached_tokens`` and
  ``prompt_tokens_details.cache_write_tokens``, GPT-5.6's cache writes, inside it),
  ``completion_tokens`` (with ``completion_tokens_details.reasoning_tokens`` inside it),
  ``total_tokens``. In a stream, usage comes only with ``stream_options.include_usage``: a last
  chunk with ``choices: []``, every earlier chunk then carrying ``"usage": null``;
* the output bound is ``max_completion_tokens``, else ``max_tokens``; 0 or absent means none;
* a tool call (option ``tool_call``, see :mod:`tokenward.fake.tools`): ``message.content`` null
  and ``message.tool_calls`` holding one ``function`` call, ``finish_reason: "tool_calls"``
  (``"length"`` when cut); streamed as a first delta with the role and the call's ``index``,
  ``id``, ``type`` and ``function.name`` (``arguments: ""``), then deltas carrying only
  ``function.arguments`` pieces (``chunk_tokens`` pieces each), then the finish chunk;
* errors: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

from tokenward.errors import ValidationError
from tokenward.fake._validate import (
    json_type,
    optional_bool,
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
from tokenward.fake.reply import Reply, plan_reply, reported
from tokenward.fake.streaming import json_answer, sse_data, sse_response
from tokenward.fake.tools import ToolReply, plan_tool_call, serial, tools_offered

__all__ = ["ChatRequest", "error_response", "openai_usage", "parse_request", "replay", "respond"]

_FINGERPRINT = "fp_tokenward_fake"
_ERRORS = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What the fake needs from a validated chat request.

    Attributes:
        model: the requested model id (echoed).
        stream: whether an SSE stream was asked for.
        include_usage: ``stream_options.include_usage``.
        bound: the output bound in tokens (None: no bound).
        prompt_tokens: the fake's prompt count (see :mod:`tokenward.fake.counting`).
        tools_offered: ``tools`` is non-empty and ``tool_choice`` is not ``"none"``.
    """

    model: str
    stream: bool
    include_usage: bool
    bound: int | None
    prompt_tokens: int
    tools_offered: bool = False


def error_response(
    status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """An OpenAI-shaped error: ``{"error": {"message", "type", "param", "code"}}``."""
    kind, code = _ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _content_pieces(content: Any, where: str) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count_pieces(content)
    if not isinstance(content, list):
        raise ValidationError(
            f"{where}.content: expected a string or an array, got {json_type(content)}", field=where
        )
    total = 0
    for index, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ValidationError(f"{where}.content[{index}]: expected an object with a 'type'", field=where)
        for key in ("text", "refusal"):
            if part["type"] == key:
                text = part.get(key)
                if not isinstance(text, str):
                    raise ValidationError(f"{where}.content[{index}].{key}: expected a string", field=where)
                total += count_pieces(text)
    return total


def _tool_call_pieces(calls: Any, where: str) -> int:
    if calls is None:
        return 0
    if not isinstance(calls, list):
        raise ValidationError(f"{where}.tool_calls: expected an array, got {json_type(calls)}", field=where)
    total = 0
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            raise ValidationError(f"{where}.tool_calls: each call needs a 'function' object", field=where)
        for key in ("name", "arguments"):
            if isinstance(function.get(key), str):
                total += count_pieces(function[key])
    return total


def parse_request(body: dict[str, Any]) -> ChatRequest:
    """Validate a chat-completions body (``fake`` key already removed) and count its prompt.

    Raises:
        ValidationError: a missing or mistyped field; ``field`` is the OpenAI ``param``.
    """
    model = required_str(body, "model", "you must provide a model parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValidationError("messages: expected a non-empty array of message objects", field="messages")
    prompt = 0
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ValidationError(f"{where}: expected an object with a string 'role'", field=where)
        prompt += MESSAGE_OVERHEAD + _content_pieces(message.get("content"), where)
        prompt += _tool_call_pieces(message.get("tool_calls"), where)
    tools = optional_list(body, "tools")
    for index, tool in enumerate(tools or []):
        if not isinstance(tool, dict):
            raise ValidationError(f"tools[{index}]: expected an object", field="tools")
        prompt += json_pieces(tool)
    choices = optional_int(body, "n", 1)
    if choices not in (None, 1):
        raise ValidationError("n: the fake provider only produces one choice", field="n")
    stream_options = optional_object(body, "stream_options") or {}
    include_usage = optional_bool(stream_options, "include_usage")
    completion_bound = optional_int(body, "max_completion_tokens", 0)
    legacy_bound = optional_int(body, "max_tokens", 0)
    bound = completion_bound or legacy_bound or None
    return ChatRequest(
        model=model,
        stream=bool(optional_bool(body, "stream")),
        include_usage=bool(include_usage),
        bound=bound,
        prompt_tokens=prompt,
        tools_offered=tools_offered(tools, body.get("tool_choice") == "none"),
    )


def openai_usage(
    prompt_tokens: int, options: FakeOptions, completion: int, reasoning: int, *, writes: bool = False
) -> dict[str, Any] | None:
    """Chat and legacy-completions ``usage`` as the ``usage`` option reports it (None: omitted);
    with ``writes`` (chat) and a ``cache_write_tokens`` option, ``prompt_tokens_details`` has
    ``cache_write_tokens`` too (models before GPT-5.6 do not send the field)."""
    counts = reported(
        options.usage,
        {
            "prompt": prompt_tokens,
            "completion": completion,
            "cached": options.cache_read_tokens,
            "written": options.cache_write_tokens,
            "reasoning": reasoning,
        },
    )
    if counts is None:
        return None
    prompt = None if options.usage == "null_prompt" else counts["prompt"]
    details = {"cached_tokens": counts["cached"]}
    if writes and options.cache_write_tokens:
        details["cache_write_tokens"] = counts["written"]
    return {
        "prompt_tokens": prompt,
        "completion_tokens": counts["completion"],
        "total_tokens": None if prompt is None else prompt + counts["completion"],
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": counts["reasoning"]},
    }


def _check_cache(request: ChatRequest, options: FakeOptions) -> None:
    read, write = options.cache_read_tokens, options.cache_write_tokens
    if read + write > request.prompt_tokens:
        raise ValidationError(
            f"fake options 'cache_read_tokens' + 'cache_write_tokens' ({read} + {write}) exceed the prompt's "
            f"{request.prompt_tokens} tokens",
            field="cache_read_tokens",
        )


_Delta = tuple[dict[str, Any], int]  # a delta and the visible output tokens sent once it is


def _text_reply(request: ChatRequest, options: FakeOptions) -> tuple[Reply, dict[str, Any], list[_Delta]]:
    reply = plan_reply(options, request.bound, reasoning=options.reasoning_tokens)
    message = {"role": "assistant", "content": reply_text(reply.text_tokens), "refusal": None}
    deltas: list[_Delta] = [({"role": "assistant", "content": "", "refusal": None}, 0)]
    sent = 0
    for piece in reply_chunks(reply.text_tokens, options.chunk_tokens):
        sent += count_pieces(piece)
        deltas.append(({"content": piece}, sent))
    return reply, message, deltas


def _tool_reply(
    request: ChatRequest, options: FakeOptions, response_id: str
) -> tuple[ToolReply, dict[str, Any], list[_Delta]]:
    call = plan_tool_call(options, request.bound)
    call_id = f"call_fake_{serial(response_id)}"
    function = {"name": call.name, "arguments": call.arguments}
    message = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [{"id": call_id, "type": "function", "function": function}],
    }
    opening = {"index": 0, "id": call_id, "type": "function", "function": {**function, "arguments": ""}}
    deltas: list[_Delta] = [
        ({"role": "assistant", "content": None, "refusal": None, "tool_calls": [opening]}, call.name_tokens)
    ]
    sent = call.name_tokens
    for piece in piece_chunks(call.arguments, options.chunk_tokens):
        sent += count_pieces(piece)
        deltas.append(({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, sent))
    return call, message, deltas


def respond(request: ChatRequest, options: FakeOptions, response_id: str, created: int) -> Response:
    """The reply to a validated request (text, or a tool call), as JSON or as an SSE stream.

    Raises:
        ValidationError: ``cache_read_tokens`` plus ``cache_write_tokens`` larger than the prompt.
    """
    _check_cache(request, options)
    reply: Reply | ToolReply
    if options.tool_call is not None and request.tools_offered:
        reply, message, deltas = _tool_reply(request, options, response_id)
        finish = "length" if reply.truncated else "tool_calls"
    else:
        reply, message, deltas = _text_reply(request, options)
        finish = "length" if reply.truncated else "stop"
    headers = {"x-request-id": f"req_{response_id}"}
    usage = openai_usage(
        request.prompt_tokens, options, reply.output_tokens, reply.reasoning_tokens, writes=True
    )
    if not request.stream:
        body: dict[str, Any] = {
            "id": response_id,
            "object": "chat.completion",
            "created": created,
            "model": request.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "system_fingerprint": _FINGERPRINT,
        }
        if usage is not None:
            body["usage"] = usage
        return json_answer(body, options, headers, reply.output_tokens)

    base = {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": request.model}
    steps: list[tuple[dict[str, Any], str | None, int]] = [
        (delta, None, visible) for delta, visible in deltas
    ] + [({}, finish, deltas[-1][1])]
    events, outputs = [], []
    for delta, finish_reason, visible in steps:
        outputs.append(reply.reasoning_tokens + visible)  # hidden reasoning comes first
        chunk: dict[str, Any] = {
            **base,
            "system_fingerprint": _FINGERPRINT,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if options.usage != "omit" and options.running_usage:
            chunk["usage"] = openai_usage(
                request.prompt_tokens,
                options,
                reply.reasoning_tokens + visible,
                reply.reasoning_tokens,
                writes=True,
            )
        elif options.usage != "omit" and request.include_usage:
            chunk["usage"] = None
        events.append(sse_data(chunk))
    if usage is not None and request.include_usage:
        events.append(sse_data({**base, "system_fingerprint": _FINGERPRINT, "choices": [], "usage": usage}))
    if options.done:
        events.append(sse_data("[DONE]"))
    outputs += [reply.output_tokens] * (len(events) - len(outputs))
    return sse_response(events, options, headers, outputs=outputs)


def replay(options: FakeOptions, response_id: str) -> Response:
    """The ``events`` option: each object sent as ``data:``, then ``[DONE]`` unless ``done`` is false."""
    events = [sse_data(event) for event in options.events or ()]
    if options.done:
        events.append(sse_data("[DONE]"))
    return sse_response(events, options, {"x-request-id": f"req_{response_id}"})
