"""The fake's Anthropic token counting endpoint (``POST /v1/messages/count_tokens``).

Wire format (https://docs.anthropic.com/en/api/messages-count-tokens): the body of a Messages
request without ``max_tokens`` (``model`` and ``messages`` required; ``system`` and ``tools``
counted); the answer is ``{"input_tokens": <n>}``, here the fake's own prompt count, the same
figure a Messages call with that prompt reports as its whole prompt (input plus cache reads
and writes). Errors are Anthropic-shaped.

Options that apply: ``usage`` (``omit`` answers ``{}``, ``zero`` 0, ``under`` the count halved,
``null_prompt`` null), ``status`` and ``latency_ms``. ``events`` does not apply (a 400).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

from tokenward.fake._validate import required_str
from tokenward.fake.anthropic_messages import count_prompt
from tokenward.fake.options import FakeOptions
from tokenward.fake.reply import reported

__all__ = ["CountRequest", "parse_request", "respond"]


@dataclass(frozen=True, slots=True)
class CountRequest:
    """A validated count request: its prompt count."""

    prompt_tokens: int


def parse_request(body: dict[str, Any]) -> CountRequest:
    """Validate a count-tokens body and count its prompt.

    Raises:
        ValidationError: a missing or mistyped field (``field`` names it).
    """
    required_str(body, "model", "model: Field required")
    return CountRequest(count_prompt(body))


def respond(request: CountRequest, options: FakeOptions, response_id: str) -> Response:
    """``{"input_tokens": n}`` as the ``usage`` option reports it."""
    counts = reported(options.usage, {"input": request.prompt_tokens})
    headers = {"request-id": f"req_{response_id}"}
    if counts is None:
        return JSONResponse({}, headers=headers)
    value = None if options.usage == "null_prompt" else counts["input"]
    return JSONResponse({"input_tokens": value}, headers=headers)
