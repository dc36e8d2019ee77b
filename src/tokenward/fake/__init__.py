"""A deterministic fake LLM provider speaking the OpenAI Chat Completions and Anthropic Messages
wire formats (JSON and SSE streams), for testing agents and gateways offline.

Run it with ``tokenward fake-provider`` (or :func:`serve`), or in-process with :func:`create_app`
and ``httpx.ASGITransport``; point the OpenAI SDK at ``http://host:port/v1`` and the Anthropic
SDK at ``http://host:port``. Any model id is accepted and echoed.

Replies are ``"hello"`` followed by ``k - 1`` copies of ``" hello"``: exactly ``k`` tokens in
``o200k_base`` and ``cl100k_base``. ``k`` is the ``reply_tokens`` option (server default 20),
capped by the request's output bound (OpenAI ``max_completion_tokens``, else ``max_tokens``, 0 or
absent meaning none; Anthropic ``max_tokens``, required). A capped reply ends with
``finish_reason: "length"`` / ``stop_reason: "max_tokens"``, else ``"stop"`` / ``"end_turn"``.

Prompt counts are the fake's own, on purpose not a real tokenizer: matches of ``\\w+|[^\\w\\s]``
over all the text of the request (message contents, the Anthropic ``system``, tool calls, tool
definitions' JSON) plus 4 per message; :mod:`tokenward.fake.counting` states the rule in full.
Usage is reported as each provider documents it: OpenAI ``cached_tokens`` inside
``prompt_tokens`` and ``reasoning_tokens`` inside ``completion_tokens``; Anthropic
``input_tokens`` excluding the cache reads and writes.

Per-request options, from the body key ``"fake"`` (removed before anything is echoed or
recorded) or the JSON header ``x-fake-options`` (merged key by key, the body winning); unknown
names or wrong types are a 400:

=====================  ==========================================================================
``reply_tokens``       int >= 0: reply length before the output bound.
``chunk_tokens``       int >= 1: words per streamed text chunk.
``latency_ms``         number: wait before answering (before the first byte).
``chunk_delay_ms``     number: wait between two stream events.
``ignore_max_tokens``  bool: ignore the output bound (reply and report the full length).
``usage``              ``"normal"``; ``"omit"`` (no usage anywhere: no ``usage`` key, no usage
                       chunk); ``"zero"`` (every count 0); ``"under"`` (every count halved, rounded
                       down; OpenAI ``total_tokens`` is the sum of the halved parts);
                       ``"null_prompt"`` (OpenAI ``prompt_tokens`` and ``total_tokens`` null,
                       Anthropic ``input_tokens`` null).
``running_usage``      bool, OpenAI streams: every chunk carries the cumulative usage (as vLLM
                       and llama.cpp do), whatever ``include_usage`` says.
``break_after_chunks`` int: after that many SSE events the connection is dropped mid-body (no
                       final chunk, no ``[DONE]``); a shorter stream ends normally.
``events``             list of objects replayed verbatim as the SSE stream (even for a request
                       that did not ask to stream); Anthropic events are named by their ``type``,
                       OpenAI ones are followed by ``data: [DONE]`` unless ``done`` is false.
``done``               bool, OpenAI streams (default true): false leaves out ``data: [DONE]``.
``status``             int 400-599: answer with that status and a provider-shaped error body.
``cache_read_tokens``  int: prompt tokens reported as read from cache (OpenAI ``cached_tokens``,
                       Anthropic ``cache_read_input_tokens``); at most the prompt count.
``cache_write_tokens`` int, Anthropic: ``cache_creation_input_tokens`` (5-minute writes); reads
                       plus writes at most the prompt count. OpenAI ignores it.
``reasoning_tokens``   int: hidden output tokens, counted in the output (OpenAI
                       ``completion_tokens`` and ``reasoning_tokens``; Anthropic
                       ``output_tokens``, like thinking) but absent from the text. The output bound
                       covers them: past it they are kept first and the text gets what is left.
=====================  ==========================================================================

Server endpoints besides the two APIs: ``GET /healthz``, ``GET /v1/models``, and the record of
received requests at ``GET``/``DELETE /_fake/requests`` (see :mod:`tokenward.fake.provider`).
"""

from __future__ import annotations

from tokenward.fake.counting import reply_text
from tokenward.fake.options import OPTION_HEADER, OPTION_KEY, FakeSettings
from tokenward.fake.provider import MODEL_IDS, create_app, serve
from tokenward.fake.streaming import FakeStreamCut

__all__ = [
    "MODEL_IDS",
    "OPTION_HEADER",
    "OPTION_KEY",
    "FakeSettings",
    "FakeStreamCut",
    "create_app",
    "reply_text",
    "serve",
]
