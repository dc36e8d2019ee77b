"""A deterministic fake LLM provider speaking the OpenAI (Chat Completions, Responses, legacy
Completions, Embeddings), Anthropic (Messages, token counting) and Gemini (generateContent) wire
formats, JSON and SSE streams, for testing agents and gateways offline.

Run it with ``tokenward fake-provider`` (or :func:`serve`), or in-process with :func:`create_app`
and ``httpx.ASGITransport``; point the OpenAI SDK at ``http://host:port/v1``, the Anthropic SDK
at ``http://host:port`` and google-genai at ``http://host:port`` (``base_url``). Any model id
is accepted and echoed.

Endpoints (each module documents its wire format and usage semantics):

==========================================================  =====================================
``POST /v1/chat/completions``                               :mod:`~tokenward.fake.openai_chat`
``POST /v1/responses``                                      :mod:`~tokenward.fake.openai_responses`
``POST /v1/completions``                                    :mod:`~tokenward.fake.openai_completions`
``POST /v1/embeddings``                                     :mod:`~tokenward.fake.openai_embeddings`
``POST /v1/images/generations``, ``/v1/images/edits``       :mod:`~tokenward.fake.openai_media`
``POST /v1/audio/transcriptions``, ``/v1/audio/speech``     :mod:`~tokenward.fake.openai_media`
``POST /v1/messages``                                       :mod:`~tokenward.fake.anthropic_messages`
``POST /v1/messages/count_tokens``                          :mod:`~tokenward.fake.anthropic_count_tokens`
``POST /v1beta/models/{model}:generateContent``             :mod:`~tokenward.fake.gemini` (also
``POST /v1beta/models/{model}:streamGenerateContent``       under ``/v1/models/``)
``/v1beta/cachedContents[/{id}]`` (any method)              :mod:`~tokenward.fake.gemini_caches`
``/v1/conversations[/{id}[/items]]`` (any method)           :mod:`~tokenward.fake.conversations`
``GET /v1/models``, ``GET /healthz``, ``/_fake/requests``   :mod:`~tokenward.fake.provider`
==========================================================  =====================================

Replies are ``"hello"`` followed by ``k - 1`` copies of ``" hello"``: exactly ``k`` tokens in
``o200k_base`` and ``cl100k_base``. ``k`` is the ``reply_tokens`` option (server default 20),
capped by the request's output bound (OpenAI chat ``max_completion_tokens``, else
``max_tokens``, 0 or absent meaning none; Responses ``max_output_tokens``; legacy completions
``max_tokens``, default 16; Anthropic ``max_tokens``, required; Gemini
``generationConfig.maxOutputTokens``). A capped reply ends with ``finish_reason: "length"`` /
``status: "incomplete"`` / ``stop_reason: "max_tokens"`` / ``finishReason: "MAX_TOKENS"``.

Prompt counts are the fake's own, on purpose not a real tokenizer: matches of ``\\w+|[^\\w\\s]``
over all the text of the request (message contents, system prompts and instructions, tool calls
and results, tool definitions' JSON) plus 4 per message (Responses: per input item; Gemini: per
content; none for completion prompts and embedding inputs); :mod:`tokenward.fake.counting`
states the rule in full; stored context is billed as the providers bill it (a Responses
``previous_response_id`` or ``conversation`` adds the stored turns, a Gemini ``cachedContent`` its
cached tokens: :mod:`tokenward.fake.stored`). Usage is reported as each provider documents it: OpenAI
``cached_tokens`` inside ``prompt_tokens``/``input_tokens`` and ``reasoning_tokens`` inside
``completion_tokens``/``output_tokens``; Anthropic ``input_tokens`` excluding the cache reads and
writes; Gemini ``cachedContentTokenCount`` inside ``promptTokenCount`` and
``thoughtsTokenCount`` outside ``candidatesTokenCount``.

Per-request options, from the body key ``"fake"`` (removed before anything is echoed or
recorded) or the JSON header ``x-fake-options`` (merged key by key, the body winning); unknown
names or wrong types are a 400:

=====================  ==========================================================================
``reply_tokens``       int >= 0: reply length before the output bound.
``chunk_tokens``       int >= 1: words (pieces, for tool-call arguments) per streamed chunk.
``latency_ms``         number: wait before answering (before the first byte).
``chunk_delay_ms``     number: wait between two stream events.
``ignore_max_tokens``  bool: ignore the output bound (reply and report the full length).
``usage``              ``"normal"``; ``"omit"`` (no usage anywhere: no ``usage`` /
                       ``usageMetadata`` key, no usage chunk; count_tokens answers ``{}``);
                       ``"zero"`` (every count 0); ``"under"`` (every count halved, rounded down;
                       totals are the sums of the halved parts); ``"null_prompt"`` (OpenAI
                       ``prompt_tokens``/``input_tokens`` and ``total_tokens`` null, Anthropic
                       ``input_tokens`` null, Gemini ``promptTokenCount`` and ``totalTokenCount``
                       left out).
``running_usage``      bool, OpenAI chat and completions streams: every chunk carries the
                       cumulative usage (as vLLM and llama.cpp do), whatever ``include_usage``
                       says. (Gemini streams always carry running totals.)
``break_after_chunks`` int: after that many stream events the connection is dropped mid-body (no
                       final chunk, no ``[DONE]``); a shorter stream ends normally.
``break_after_bytes``  int: the body (a JSON answer after its 200, or a stream) is cut after that
                       many bytes and the connection dropped; a shorter body ends normally.
``events``             list of objects replayed verbatim as the SSE stream (even for a request
                       that did not ask to stream); Anthropic and Responses events are named by
                       their ``type``, OpenAI chat/completions ones are followed by
                       ``data: [DONE]`` unless ``done`` is false, Gemini ones are bare ``data:``.
                       A 400 on embeddings and count_tokens.
``response``           object replayed verbatim as the JSON answer (status 200), whatever the
                       request asked: a provider's whole response, usage and all, for tests that
                       need its exact fields. Not with ``events``.
``done``               bool, OpenAI chat/completions streams (default true): false leaves out
                       ``data: [DONE]``.
``status``             int 400-599: answer with that status and a provider-shaped error body.
``cache_read_tokens``  int: prompt tokens reported as read from cache (OpenAI ``cached_tokens``,
                       Anthropic ``cache_read_input_tokens``, Gemini
                       ``cachedContentTokenCount``); at most the prompt count.
``cache_write_tokens`` int: Anthropic ``cache_creation_input_tokens`` (5-minute writes), Responses
                       ``input_tokens_details.cache_write_tokens`` and chat
                       ``prompt_tokens_details.cache_write_tokens`` (inside the prompt count, as
                       GPT-5.6 reports them); reads plus writes at most the prompt count. Legacy
                       completions and Gemini ignore it.
``reasoning_tokens``   int: hidden output tokens, counted in the output (OpenAI
                       ``completion_tokens``/``output_tokens`` and ``reasoning_tokens``, with a
                       ``reasoning`` output item on Responses; Anthropic ``output_tokens``, like
                       thinking; Gemini ``thoughtsTokenCount``) but absent from the text. The
                       output bound covers them: past it they are kept first and the text gets
                       what is left.
``tool_call``          ``{"name": str, "arguments": object or its JSON text}``: when the request
                       offers tools (non-empty ``tools``, ``tool_choice`` not none), the reply is
                       this call instead of text: chat ``tool_calls`` with ``finish_reason:
                       "tool_calls"``, Responses a ``function_call`` item, Anthropic a
                       ``tool_use`` block with ``stop_reason: "tool_use"``. Its output tokens are
                       the pieces of the name plus those of the arguments' JSON text (see
                       :mod:`tokenward.fake.tools`). Ignored without tools, and on Gemini.
``prompt_factor``      number > 0: the prompt is counted as the fake's count times this factor
                       (rounded up), as an upstream whose tokenizer differs from tokenward's
                       estimate would count it (a mismatched tokenizer).
=====================  ==========================================================================

The fake is also a referee: it tallies per request the tokens it generated, what a provider would
bill (``app.state.tally``, ``GET /_fake/tally``; :mod:`tokenward.fake.tally`): a whole JSON
answer, or the events of a stream delivered before the client went away. In process,
:class:`tokenward.fake.transport.FakeTransport` serves it generating a stream only as it is read.

Server settings (:class:`FakeSettings`) add ``api_key`` (OpenAI and Anthropic endpoints take it
as ``Authorization: Bearer`` or ``x-api-key``, Gemini ones as ``x-goog-api-key`` or ``?key=``) and
``embedding_dimensions`` (default vector length, 1536).
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
