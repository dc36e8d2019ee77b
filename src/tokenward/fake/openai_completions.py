"""The fake's OpenAI legacy Completions endpoint (``POST /v1/completions``).

Wire format (https://platform.openai.com/docs/api-reference/completions):

* ``prompt``: a string, an array of strings, an array of token ids, or an array of token-id
  arrays. An array of strings or of token arrays is a batch: one choice per prompt, in order,
  each the same fake reply; usage adds them all up;
* a ``text_completion`` object with ``choices[].text``, or a stream of ``text_completion``
  objects as ``data: {...}`` events ending with ``data: [DONE]``: per prompt its text chunks, then
  a chunk with ``text: ""`` and the ``finish_reason``;
* ``max_tokens`` bounds each choice and defaults to 16 when absent or null, as documented;
  ``finish_reason`` is ``"length"`` when it cut the reply, else ``"stop"``;
* ``usage`` as in chat (:func:`tokenward.fake.openai_chat.openai_usage`); in a stream only with
  ``stream_options.include_usage`` (a last chunk with ``choices: []``, earlier ones carrying
  ``"usage": null``), or on every chunk with the ``running_usage`` option.

Prompt count: the pieces of each prompt string (no per-message overhead: there are no
messages), or the number of ids of a token array. ``n`` above 1 is a 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from tokenward.errors import ValidationError
from tokenward.fake._validate import optional_bool, optional_int, optional_object, required_str
from tokenward.fake.counting import count_pieces, reply_chunks, reply_text
from tokenward.fake.openai_chat import openai_usage
from tokenward.fake.options import FakeOptions
from tokenward.fake.reply import plan_reply
from tokenward.fake.streaming import json_answer, sse_data, sse_response

__all__ = ["DEFAULT_MAX_TOKENS", "CompletionsRequest", "parse_request", "respond"]

DEFAULT_MAX_TOKENS = 16
"""The legacy endpoint's documented default for ``max_tokens``."""

_FINGERPRINT = "fp_tokenward_fake"


@dataclass(frozen=True, slots=True)
class CompletionsRequest:
    """What the fake needs from a validated completions request.

    Attributes:
        model: the requested model id (echoed).
        stream: whether an SSE stream was asked for.
        include_usage: ``stream_options.include_usage``.
        bound: ``max_tokens`` (16 when absent), per choice.
        prompts: the prompt count of each prompt of the batch (one entry for a single prompt).
    """

    model: str
    stream: bool
    include_usage: bool
    bound: int
    prompts: tuple[int, ...]


def _is_tokens(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in value)


def _prompt_counts(prompt: Any) -> tuple[int, ...]:
    if isinstance(prompt, str):
        return (count_pieces(prompt),)
    if isinstance(prompt, list) and prompt:
        if _is_tokens(prompt):
            return (len(prompt),)
        if all(isinstance(item, str) for item in prompt):
            return tuple(count_pieces(item) for item in prompt)
        if all(_is_tokens(item) and item for item in prompt):
            return tuple(len(item) for item in prompt)
    raise ValidationError(
        "prompt: expected a string, an array of strings, an array of token ids or an array of token arrays",
        field="prompt",
    )


def parse_request(body: dict[str, Any]) -> CompletionsRequest:
    """Validate a completions body (``fake`` key already removed) and count its prompts.

    Raises:
        ValidationError: a missing or mistyped field; ``field`` is the OpenAI ``param``.
    """
    model = required_str(body, "model", "you must provide a model parameter")
    if "prompt" not in body or body["prompt"] is None:
        raise ValidationError("prompt: you must provide a prompt", field="prompt")
    prompts = _prompt_counts(body["prompt"])
    if optional_int(body, "n", 1) not in (None, 1):
        raise ValidationError("n: the fake provider only produces one choice per prompt", field="n")
    bound = optional_int(body, "max_tokens", 0)
    stream_options = optional_object(body, "stream_options") or {}
    return CompletionsRequest(
        model=model,
        stream=bool(optional_bool(body, "stream")),
        include_usage=bool(optional_bool(stream_options, "include_usage")),
        bound=DEFAULT_MAX_TOKENS if bound is None else bound,
        prompts=prompts,
    )


def respond(request: CompletionsRequest, options: FakeOptions, response_id: str, created: int) -> Response:
    """The reply to a validated request, as JSON or as an SSE stream.

    Raises:
        ValidationError: ``cache_read_tokens`` larger than the batch's prompt count.
    """
    prompt_tokens = sum(request.prompts)
    if options.cache_read_tokens > prompt_tokens:
        raise ValidationError(
            f"fake option 'cache_read_tokens' ({options.cache_read_tokens}) exceeds the prompt's "
            f"{prompt_tokens} tokens",
            field="cache_read_tokens",
        )
    reply = plan_reply(options, request.bound, reasoning=options.reasoning_tokens)
    batch = len(request.prompts)
    finish = "length" if reply.truncated else "stop"
    headers = {"x-request-id": f"req_{response_id}"}
    usage = openai_usage(prompt_tokens, options, batch * reply.output_tokens, batch * reply.reasoning_tokens)
    base = {
        "id": response_id,
        "object": "text_completion",
        "created": created,
        "model": request.model,
        "system_fingerprint": _FINGERPRINT,
    }
    if not request.stream:
        text = reply_text(reply.text_tokens)
        choices = [
            {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
            for index in range(batch)
        ]
        return json_answer(
            {**base, "choices": choices, **({} if usage is None else {"usage": usage})},
            options,
            headers,
            batch * reply.output_tokens,
        )

    steps: list[tuple[int, str, str | None, int]] = []  # choice, text, finish reason, output so far
    for index in range(batch):
        done = index * reply.output_tokens + reply.reasoning_tokens
        for piece in reply_chunks(reply.text_tokens, options.chunk_tokens):
            done += count_pieces(piece)
            steps.append((index, piece, None, done))
        steps.append((index, "", finish, done))
    events, outputs = [], []
    for index, text, finish_reason, output in steps:
        outputs.append(output)
        chunk: dict[str, Any] = {
            **base,
            "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}],
        }
        if options.usage != "omit" and options.running_usage:
            chunk["usage"] = openai_usage(
                prompt_tokens, options, output, (index + 1) * reply.reasoning_tokens
            )
        elif options.usage != "omit" and request.include_usage:
            chunk["usage"] = None
        events.append(sse_data(chunk))
    if usage is not None and request.include_usage:
        events.append(sse_data({**base, "choices": [], "usage": usage}))
    if options.done:
        events.append(sse_data("[DONE]"))
    outputs += [batch * reply.output_tokens] * (len(events) - len(outputs))
    return sse_response(events, options, headers, outputs=outputs)
