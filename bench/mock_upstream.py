"""A fast mock OpenAI upstream for bench/gateway.py: raw ASGI, no framework, answers prepared once.

    uvicorn mock_upstream:app --loop uvloop --http httptools --no-access-log

``POST /v1/chat/completions``: 200 prompt / 50 completion tokens; with ``"stream": true`` a stream
of 22 content chunks, a final chunk with ``finish_reason`` and a usage chunk (OpenAI's
``stream_options.include_usage`` shape), then ``data: [DONE]``. The reply is 50 times " hello"
(one o200k token each), so the gateway's own count agrees with the usage reported. Anything else
(``/healthz``) answers 200 ``ok``.
"""

from __future__ import annotations

import json
import time
from typing import Any

PROMPT_TOKENS = 200
COMPLETION_TOKENS = 50
CHUNKS = 22

_WORDS = ["hello"] * COMPLETION_TOKENS
_TEXT = " ".join(_WORDS)
_USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": COMPLETION_TOKENS,
    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
    "prompt_tokens_details": {"cached_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0},
}
_CREATED = int(time.time())
_BASE = {"id": "chatcmpl-mock", "created": _CREATED, "model": "gpt-4o-mini", "system_fingerprint": "fp_mock"}

JSON_BODY = json.dumps(
    {
        **_BASE,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": _TEXT, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _USAGE,
    }
).encode()


def _chunk(delta: dict[str, Any], finish: str | None, usage: Any = None, choices: bool = True) -> bytes:
    body = {
        **_BASE,
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if choices
        else [],
        "usage": usage,
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _stream_chunks() -> list[bytes]:
    # 22 content chunks sharing the 50 words (the first with the role), one with finish_reason,
    # one with the usage, then [DONE]
    words = [(" " if i else "") + w for i, w in enumerate(_WORDS)]
    size, extra = divmod(len(words), CHUNKS)
    parts, at = [], 0
    for i in range(CHUNKS):
        n = size + (1 if i < extra else 0)
        parts.append("".join(words[at : at + n]))
        at += n
    out = [_chunk({"role": "assistant", "content": parts[0]}, None)]
    out += [_chunk({"content": p}, None) for p in parts[1:]]
    out.append(_chunk({}, "stop"))
    out.append(_chunk({}, None, _USAGE, choices=False))
    out.append(b"data: [DONE]\n\n")
    return out


STREAM_CHUNKS = _stream_chunks()

_JSON_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(JSON_BODY)).encode())]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The raw ASGI app."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] != "POST":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    # the flag is found without parsing the body: the mock must cost as little as possible
    stream = b'"stream":true' in body.replace(b" ", b"")
    if not stream:
        await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
        await send({"type": "http.response.body", "body": JSON_BODY})
        return
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    for chunk in STREAM_CHUNKS:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
