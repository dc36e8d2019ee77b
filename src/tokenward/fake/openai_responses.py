"""The fake's OpenAI Responses endpoint (``POST /v1/responses``): request, reply and JSON answer.

Wire format (https://platform.openai.com/docs/api-reference/responses/create and
https://platform.openai.com/docs/api-reference/responses/object):

* request: ``model``; ``input``, a string (one user message) or an array of input items
  (messages with string or part-array ``content``, ``function_call`` and
  ``function_call_output`` items); ``instructions``; ``max_output_tokens``; ``tools``;
  ``tool_choice``; ``stream``. ``previous_response_id`` (echoed) and ``conversation`` add the
  stored turns to the prompt (:mod:`tokenward.fake.stored`);
* answer: a ``response`` object whose ``output`` holds, in order, a ``reasoning`` item (only
  when reasoning tokens were spent; its ``summary`` is empty), then a ``message`` item with one
  ``output_text`` part, or a ``function_call`` item (option ``tool_call``, see
  :mod:`tokenward.fake.tools`) with ``call_id``, ``name`` and ``arguments``;
* ``status: "completed"``, or ``"incomplete"`` with ``incomplete_details.reason:
  "max_output_tokens"`` when the bound cut the reply (the cut item's ``status`` is then
  ``"incomplete"``; a reply whose text got no token at all has no message item);
* ``usage``: ``input_tokens`` (with ``input_tokens_details.cached_tokens`` and
  ``cache_write_tokens`` inside it), ``output_tokens`` (with
  ``output_tokens_details.reasoning_tokens`` inside it), ``total_tokens``. The options
  ``cache_read_tokens`` and ``cache_write_tokens`` fill the two details (together at most the
  prompt); ``usage: "null_prompt"`` makes ``input_tokens`` and ``total_tokens`` null;
* the stream (``stream: true``) is described in :mod:`tokenward.fake.openai_responses_stream`.

Prompt count: the pieces of ``instructions`` (no overhead: not an item), plus for each input item
4 and its text: message content (a string, or its ``input_text``/``output_text`` texts and
``refusal`` strings), a ``function_call``'s ``name`` and ``arguments``, a
``function_call_output``'s ``output`` (a string or text parts); plus each tool's JSON text.
``max_output_tokens`` is accepted from 1 (the real API wants at least 16).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from tokenward.errors import ValidationError
from tokenward.fake._validate import json_type, optional_bool, optional_int, optional_list, required_str
from tokenward.fake.counting import MESSAGE_OVERHEAD, count_pieces, json_pieces, reply_text
from tokenward.fake.openai_responses_stream import stream_events, stream_outputs
from tokenward.fake.options import FakeOptions
from tokenward.fake.reply import Reply, plan_reply, reported
from tokenward.fake.streaming import json_answer, sse_event, sse_response
from tokenward.fake.tools import ToolReply, plan_tool_call, serial, tools_offered

__all__ = [
    "ResponsesRequest",
    "Turn",
    "item_pieces",
    "parse_request",
    "plan_turn",
    "replay",
    "respond",
    "response_object",
]

_ROLES = ("user", "assistant", "system", "developer")


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """What the fake needs from a validated Responses request.

    Attributes:
        model: the requested model id (echoed).
        stream: whether an SSE stream was asked for.
        bound: ``max_output_tokens`` (None: no bound).
        prompt_tokens: the fake's prompt count.
        tools_offered: ``tools`` is non-empty and ``tool_choice`` is not ``"none"``.
        echo: request fields echoed in the response object (``instructions``, ``tools``...).
    """

    model: str
    stream: bool
    bound: int | None
    prompt_tokens: int
    tools_offered: bool
    echo: dict[str, Any] = field(default_factory=dict)


def _text_parts(content: Any, where: str) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count_pieces(content)
    if not isinstance(content, list):
        raise ValidationError(
            f"{where}: expected a string or an array, got {json_type(content)}", field=where
        )
    total = 0
    for index, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ValidationError(f"{where}[{index}]: expected an object with a 'type'", field=where)
        for key in ("text", "refusal"):
            if isinstance(part.get(key), str):
                total += count_pieces(part[key])
    return total


def item_pieces(item: Any, where: str) -> int:
    """The pieces of one input item's text (without the 4 per item), as the module docstring counts.

    Raises:
        ValidationError: an item that is not an object, or a message without role or content.
    """
    if not isinstance(item, dict):
        raise ValidationError(f"{where}: expected an input item object", field=where)
    kind = item.get("type", "message")
    if kind == "message":
        if item.get("role") not in _ROLES:
            raise ValidationError(f"{where}.role: expected one of {', '.join(_ROLES)}", field=where)
        if "content" not in item:
            raise ValidationError(f"{where}.content: missing", field=where)
        return _text_parts(item["content"], f"{where}.content")
    if kind == "function_call":
        return sum(count_pieces(item[key]) for key in ("name", "arguments") if isinstance(item.get(key), str))
    if kind == "function_call_output":
        return _text_parts(item.get("output"), f"{where}.output")
    return 0


def parse_request(body: dict[str, Any]) -> ResponsesRequest:
    """Validate a Responses body (``fake`` key already removed) and count its prompt.

    Raises:
        ValidationError: a missing or mistyped field; ``field`` is the OpenAI ``param``.
    """
    model = required_str(body, "model", "you must provide a model parameter")
    items = body.get("input")
    if isinstance(items, str):
        prompt = MESSAGE_OVERHEAD + count_pieces(items)
    elif isinstance(items, list) and items:
        prompt = sum(MESSAGE_OVERHEAD + item_pieces(item, f"input[{i}]") for i, item in enumerate(items))
    else:
        raise ValidationError("input: expected a string or a non-empty array of input items", field="input")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise ValidationError(
            f"instructions: expected a string, got {json_type(instructions)}", field="instructions"
        )
    prompt += count_pieces(instructions or "")
    tools = optional_list(body, "tools")
    for index, tool in enumerate(tools or []):
        if not isinstance(tool, dict):
            raise ValidationError(f"tools[{index}]: expected an object", field="tools")
        prompt += json_pieces(tool)
    bound = optional_int(body, "max_output_tokens", 1)
    echo = {
        "instructions": instructions,
        "max_output_tokens": bound,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": tools or [],
        "top_p": body.get("top_p", 1.0),
        "metadata": body.get("metadata") or {},
    }
    return ResponsesRequest(
        model=model,
        stream=bool(optional_bool(body, "stream")),
        bound=bound,
        prompt_tokens=prompt,
        tools_offered=tools_offered(tools, body.get("tool_choice") == "none"),
        echo=echo,
    )


@dataclass(frozen=True, slots=True)
class Turn:
    """The planned reply: the text or tool call, and the final output items.

    Attributes:
        reply: the text reply or the tool call.
        items: the final ``output`` items, in order.
        status: ``"completed"`` or ``"incomplete"``.
    """

    reply: Reply | ToolReply
    items: list[dict[str, Any]]
    status: str


def plan_turn(request: ResponsesRequest, options: FakeOptions, response_id: str) -> Turn:
    """Plan the reply of a validated request and build its output items.

    Raises:
        ValidationError: cache reads plus writes larger than the prompt.
    """
    read, write = options.cache_read_tokens, options.cache_write_tokens
    if read + write > request.prompt_tokens:
        raise ValidationError(
            f"fake options 'cache_read_tokens' + 'cache_write_tokens' ({read} + {write}) exceed the prompt's "
            f"{request.prompt_tokens} tokens",
            field="cache_read_tokens",
        )
    number = serial(response_id)
    reply: Reply | ToolReply
    items: list[dict[str, Any]] = []
    if options.tool_call is not None and request.tools_offered:
        reply = plan_tool_call(options, request.bound)
    else:
        reply = plan_reply(options, request.bound, reasoning=options.reasoning_tokens)
    status = "incomplete" if reply.truncated else "completed"
    if reply.reasoning_tokens:
        items.append({"id": f"rs_fake_{number}", "type": "reasoning", "summary": []})
    if isinstance(reply, ToolReply):
        items.append(
            {
                "id": f"fc_fake_{number}",
                "type": "function_call",
                "status": status,
                "call_id": f"call_fake_{number}",
                "name": reply.name,
                "arguments": reply.arguments,
            }
        )
    elif reply.text_tokens or not reply.truncated:
        part = {
            "type": "output_text",
            "text": reply_text(reply.text_tokens),
            "annotations": [],
            "logprobs": [],
        }
        items.append(
            {
                "id": f"msg_fake_{number}",
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": [part],
            }
        )
    return Turn(reply, items, status)


def _usage(
    request: ResponsesRequest, options: FakeOptions, reply: Reply | ToolReply
) -> dict[str, Any] | None:
    counts = reported(
        options.usage,
        {
            "input": request.prompt_tokens,
            "cached": options.cache_read_tokens,
            "written": options.cache_write_tokens,
            "output": reply.output_tokens,
            "reasoning": reply.reasoning_tokens,
        },
    )
    if counts is None:
        return None
    prompt = None if options.usage == "null_prompt" else counts["input"]
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": counts["cached"], "cache_write_tokens": counts["written"]},
        "output_tokens": counts["output"],
        "output_tokens_details": {"reasoning_tokens": counts["reasoning"]},
        "total_tokens": None if prompt is None else prompt + counts["output"],
    }


def response_object(
    request: ResponsesRequest,
    options: FakeOptions,
    response_id: str,
    created: int,
    turn: Turn | None,
) -> dict[str, Any]:
    """The ``response`` object: final when ``turn`` is given, else as first streamed (in progress).

    With ``usage: "omit"`` it has no ``usage`` key; in progress, ``usage`` is null.
    """
    status = turn.status if turn else "in_progress"
    body: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": request.model,
        "output": turn.items if turn else [],
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "user": None,
        **request.echo,
    }
    if options.usage != "omit":
        body["usage"] = _usage(request, options, turn.reply) if turn else None
    return body


def respond(request: ResponsesRequest, options: FakeOptions, response_id: str) -> Response:
    """The reply to a validated request, as JSON or as an SSE stream.

    Raises:
        ValidationError: cache reads plus writes larger than the prompt.
    """
    created = int(time.time())
    turn = plan_turn(request, options, response_id)
    final = response_object(request, options, response_id, created, turn)
    headers = {"x-request-id": f"req_{response_id}"}
    if not request.stream:
        return json_answer(final, options, headers, turn.reply.output_tokens)
    initial = response_object(request, options, response_id, created, None)
    outputs = stream_outputs(
        initial, final, options.chunk_tokens, turn.reply.reasoning_tokens, turn.reply.output_tokens
    )
    return sse_response(
        stream_events(initial, final, options.chunk_tokens), options, headers, outputs=outputs
    )


def replay(options: FakeOptions, response_id: str) -> Response:
    """The ``events`` option: each object sent verbatim as ``event: <its type>`` plus ``data:``."""
    events = [sse_event(event) for event in options.events or ()]
    return sse_response(events, options, {"x-request-id": f"req_{response_id}"})
