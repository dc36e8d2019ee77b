"""The fake's Gemini endpoints: ``POST /v1beta/models/{model}:generateContent`` and
``:streamGenerateContent``.

Wire format (https://ai.google.dev/api/generate-content):

* request: ``contents`` (a non-empty array of ``{"role", "parts": [...]}``), ``systemInstruction``
  (a content), ``tools``, ``generationConfig.maxOutputTokens`` (the output bound; none when
  absent). Field names are accepted in lowerCamelCase or snake_case, as Google's JSON parser does;
* answer: a ``GenerateContentResponse``: ``candidates[0]`` with ``content: {"role": "model",
  "parts": [{"text"}]}`` (no ``parts`` when the text is empty), ``finishReason`` ``"STOP"`` or
  ``"MAX_TOKENS"`` (the bound cut the reply) and ``index: 0``; ``usageMetadata``;
  ``modelVersion`` (the model of the path) and ``responseId``;
* ``usageMetadata`` (https://ai.google.dev/api/generate-content#UsageMetadata):
  ``promptTokenCount`` (with ``cachedContentTokenCount`` inside it, from ``cache_read_tokens``),
  ``candidatesTokenCount`` (the visible text only), ``thoughtsTokenCount`` (from
  ``reasoning_tokens``: *not* inside ``candidatesTokenCount``), ``totalTokenCount`` (prompt plus
  candidates plus thoughts). As in Google's JSON, a cached or thoughts count of 0 is left out;
  ``usage: "null_prompt"`` leaves out ``promptTokenCount`` and ``totalTokenCount``;
* ``maxOutputTokens`` covers thoughts and text: past it the thoughts are kept first;
* ``streamGenerateContent?alt=sse``: ``data: {...}`` events (CRLF line ends, no ``[DONE]``), one
  ``GenerateContentResponse`` per ``chunk_tokens`` words, each with the running ``usageMetadata``
  (the last one is the total: take it, do not add); the last chunk carries the
  ``finishReason``. Without ``alt=sse`` the same objects come as one streamed JSON array;
* errors: ``{"error": {"code", "message", "status"}}`` (``INVALID_ARGUMENT``, ``NOT_FOUND``...).

Prompt count: 4 per content plus its parts' text (``text``; ``functionCall`` as its ``name`` plus
the JSON of its ``args``; ``functionResponse`` as the JSON of its ``response``), plus the text of
``systemInstruction`` (no overhead), plus each tool's JSON text. The ``tool_call`` option does
not apply here (always a text reply).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

from tokenward.errors import ValidationError
from tokenward.fake._validate import json_type
from tokenward.fake.counting import MESSAGE_OVERHEAD, count_pieces, json_pieces, reply_chunks
from tokenward.fake.options import FakeOptions
from tokenward.fake.reply import plan_reply, reported
from tokenward.fake.streaming import json_answer, sse_response

__all__ = ["METHODS", "GeminiRequest", "error_response", "parse_request", "replay", "respond"]

METHODS = ("generateContent", "streamGenerateContent")
"""The model methods the fake serves."""

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


@dataclass(frozen=True, slots=True)
class GeminiRequest:
    """What the fake needs from a validated Gemini request.

    Attributes:
        model: the model of the path (echoed as ``modelVersion``).
        stream: ``streamGenerateContent`` was called.
        sse: the stream was asked for as SSE (``alt=sse``), not as a JSON array.
        bound: ``generationConfig.maxOutputTokens`` (None: no bound).
        prompt_tokens: the fake's prompt count.
    """

    model: str
    stream: bool
    sse: bool
    bound: int | None
    prompt_tokens: int


def error_response(
    status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """A Google-shaped error: ``{"error": {"code", "message", "status"}}`` (``param`` unused)."""
    name = _STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
    body = {"error": {"code": status, "message": message, "status": name}}
    return JSONResponse(body, status_code=status, headers=headers)


def _get(value: dict[str, Any], camel: str) -> Any:
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in camel)
    return value.get(camel, value.get(snake))


def _parts_pieces(content: Any, where: str) -> int:
    if not isinstance(content, dict):
        raise ValidationError(f"{where}: expected a content object, got {json_type(content)}", field=where)
    parts = content.get("parts")
    if not isinstance(parts, list):
        raise ValidationError(f"{where}.parts: expected an array of parts", field=where)
    total = 0
    for index, part in enumerate(parts):
        if not isinstance(part, dict):
            raise ValidationError(f"{where}.parts[{index}]: expected a part object", field=where)
        if isinstance(part.get("text"), str):
            total += count_pieces(part["text"])
        call = _get(part, "functionCall")
        if isinstance(call, dict):
            total += count_pieces(str(call.get("name", ""))) + json_pieces(call.get("args", {}))
        result = _get(part, "functionResponse")
        if isinstance(result, dict):
            total += json_pieces(result.get("response", {}))
    return total


def parse_request(body: dict[str, Any], model: str, method: str, alt: str | None) -> GeminiRequest:
    """Validate a generateContent body and count its prompt.

    Args:
        body: the JSON body (``fake`` key already removed).
        model: the model named in the path.
        method: ``generateContent`` or ``streamGenerateContent``.
        alt: the ``alt`` query parameter (``"sse"`` for an SSE stream).

    Raises:
        ValidationError: a missing or mistyped field (``field`` names it).
    """
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise ValidationError("contents: must not be empty", field="contents")
    prompt = 0
    for index, content in enumerate(contents):
        where = f"contents[{index}]"
        role = content.get("role") if isinstance(content, dict) else None
        if role not in (None, "user", "model", "function"):
            raise ValidationError(f"{where}.role: expected 'user' or 'model'", field=where)
        prompt += MESSAGE_OVERHEAD + _parts_pieces(content, where)
    system = _get(body, "systemInstruction")
    if system is not None:
        prompt += _parts_pieces(system, "systemInstruction")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise ValidationError("tools: expected an array", field="tools")
    prompt += sum(json_pieces(tool) for tool in tools or [])
    config = _get(body, "generationConfig")
    config = {} if config is None else config
    if not isinstance(config, dict):
        raise ValidationError("generationConfig: expected an object", field="generationConfig")
    bound = _get(config, "maxOutputTokens")
    if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int) or bound < 1):
        raise ValidationError(
            "generationConfig.maxOutputTokens: expected an integer >= 1",
            field="generationConfig.maxOutputTokens",
        )
    return GeminiRequest(
        model=model,
        stream=method == "streamGenerateContent",
        sse=alt == "sse",
        bound=bound,
        prompt_tokens=prompt,
    )


def _usage_metadata(
    request: GeminiRequest, options: FakeOptions, candidates: int, thoughts: int
) -> dict[str, Any] | None:
    counts = reported(
        options.usage,
        {
            "prompt": request.prompt_tokens,
            "cached": options.cache_read_tokens,
            "candidates": candidates,
            "thoughts": thoughts,
        },
    )
    if counts is None:
        return None
    meta: dict[str, Any] = {}
    if options.usage != "null_prompt":
        meta["promptTokenCount"] = counts["prompt"]
    meta["candidatesTokenCount"] = counts["candidates"]
    if options.usage != "null_prompt":
        meta["totalTokenCount"] = counts["prompt"] + counts["candidates"] + counts["thoughts"]
    if counts["cached"]:
        meta["cachedContentTokenCount"] = counts["cached"]
    if counts["thoughts"]:
        meta["thoughtsTokenCount"] = counts["thoughts"]
    return meta


def _chunk(
    request: GeminiRequest, text: str, finish: str | None, usage: dict[str, Any] | None, rid: str
) -> dict[str, Any]:
    content: dict[str, Any] = {"parts": [{"text": text}], "role": "model"} if text else {"role": "model"}
    candidate: dict[str, Any] = {"content": content}
    if finish is not None:
        candidate["finishReason"] = finish
    candidate["index"] = 0
    chunk: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        chunk["usageMetadata"] = usage
    return {**chunk, "modelVersion": request.model, "responseId": rid}


def _stream_body(objects: list[dict[str, Any]], sse: bool) -> list[bytes]:
    texts = [json.dumps(obj, separators=(",", ":"), ensure_ascii=False) for obj in objects]
    if sse:
        return [f"data: {text}\r\n\r\n".encode() for text in texts]
    last = len(texts) - 1
    return [
        (("[" if i == 0 else ",\r\n") + text + ("]" if i == last else "")).encode()
        for i, text in enumerate(texts)
    ]


def respond(request: GeminiRequest, options: FakeOptions, response_id: str) -> Response:
    """The reply to a validated request: one response, or the stream of them.

    Raises:
        ValidationError: ``cache_read_tokens`` larger than the prompt.
    """
    if options.cache_read_tokens > request.prompt_tokens:
        raise ValidationError(
            f"fake option 'cache_read_tokens' ({options.cache_read_tokens}) exceeds the prompt's "
            f"{request.prompt_tokens} tokens",
            field="cache_read_tokens",
        )
    reply = plan_reply(options, request.bound, reasoning=options.reasoning_tokens)
    finish = "MAX_TOKENS" if reply.truncated else "STOP"
    thoughts = reply.reasoning_tokens
    pieces = reply_chunks(reply.text_tokens, options.chunk_tokens)
    if not request.stream:
        usage = _usage_metadata(request, options, reply.text_tokens, thoughts)
        return json_answer(
            _chunk(request, "".join(pieces), finish, usage, response_id), options, None, reply.output_tokens
        )
    objects, sent, outputs = [], 0, []
    for index, piece in enumerate(pieces or [""]):
        sent += count_pieces(piece)
        outputs.append(thoughts + sent)  # thoughts come first
        usage = _usage_metadata(request, options, sent, thoughts)
        last = index == max(len(pieces), 1) - 1
        objects.append(_chunk(request, piece, finish if last else None, usage, response_id))
    media = "text/event-stream" if request.sse else "application/json"
    return sse_response(_stream_body(objects, request.sse), options, {}, media_type=media, outputs=outputs)


def replay(options: FakeOptions, response_id: str) -> Response:
    """The ``events`` option: each object sent verbatim as a ``data:`` event (CRLF line ends)."""
    return sse_response(_stream_body(list(options.events or ()), sse=True), options, {})
