"""The fake's OpenAI Embeddings endpoint (``POST /v1/embeddings``).

Wire format (https://platform.openai.com/docs/api-reference/embeddings):

* ``input``: a non-empty string, or a non-empty array of non-empty strings, of token ids, or of
  token-id arrays; ``dimensions`` (optional, at least 1; the server's ``embedding_dimensions``
  otherwise); ``encoding_format``: ``"float"`` (default) or ``"base64"`` (the little-endian
  float32 bytes, base64-encoded);
* the answer: ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}...],
  "model", "usage": {"prompt_tokens", "total_tokens"}}``: embeddings produce no output tokens,
  so ``total_tokens`` equals ``prompt_tokens``.

Prompt count: the pieces of each input string, or the number of ids of a token array, summed
(no per-input overhead). Vectors are deterministic: the SHAKE-256 digest of the input (the
string's UTF-8 bytes, or the token ids' compact JSON) read as ``dimensions`` unsigned 32-bit
little-endian integers, each mapped to ``[-1, 1)``, then scaled to unit length; the same input
and dimension give the same vector, whatever else is in the batch.

Options that apply: ``usage`` (``omit``: no ``usage`` key; ``zero``; ``under``; ``null_prompt``:
both counts null), ``status``, ``latency_ms``. ``events`` does not apply (a 400).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

from tokenward.errors import ValidationError
from tokenward.fake._validate import optional_int, required_str
from tokenward.fake.counting import count_pieces
from tokenward.fake.options import FakeOptions
from tokenward.fake.reply import reported

__all__ = ["EmbeddingsRequest", "embedding", "parse_request", "respond"]


@dataclass(frozen=True, slots=True)
class EmbeddingsRequest:
    """A validated embeddings request.

    Attributes:
        model: the requested model id (echoed).
        inputs: each input (a string, or a tuple of token ids).
        dimensions: the requested vector length (None: the server default).
        base64: ``encoding_format`` is ``"base64"``.
        prompt_tokens: the fake's count over all the inputs.
    """

    model: str
    inputs: tuple[str | tuple[int, ...], ...]
    dimensions: int | None
    base64: bool
    prompt_tokens: int


def _tokens(value: Any) -> tuple[int, ...] | None:
    if (
        isinstance(value, list)
        and value
        and all(isinstance(x, int) and not isinstance(x, bool) for x in value)
    ):
        return tuple(value)
    return None


def _inputs(value: Any) -> tuple[str | tuple[int, ...], ...]:
    if isinstance(value, str) and value:
        return (value,)
    tokens = _tokens(value)
    if tokens is not None:
        return (tokens,)
    if isinstance(value, list) and value:
        if all(isinstance(item, str) and item for item in value):
            return tuple(value)
        batch = [_tokens(item) for item in value]
        if all(item is not None for item in batch):
            return tuple(item for item in batch if item is not None)
    raise ValidationError(
        "input: expected a non-empty string, or a non-empty array of non-empty strings, of token ids "
        "or of token arrays",
        field="input",
    )


def parse_request(body: dict[str, Any]) -> EmbeddingsRequest:
    """Validate an embeddings body and count its inputs.

    Raises:
        ValidationError: a missing or mistyped field; ``field`` is the OpenAI ``param``.
    """
    model = required_str(body, "model", "you must provide a model parameter")
    inputs = _inputs(body.get("input"))
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ValidationError("encoding_format: expected 'float' or 'base64'", field="encoding_format")
    prompt = sum(count_pieces(item) if isinstance(item, str) else len(item) for item in inputs)
    return EmbeddingsRequest(
        model=model,
        inputs=inputs,
        dimensions=optional_int(body, "dimensions", 1),
        base64=encoding == "base64",
        prompt_tokens=prompt,
    )


def embedding(item: str | tuple[int, ...], dimensions: int) -> list[float]:
    """The fake's unit vector of ``dimensions`` numbers for one input (see the module docstring)."""
    data = item.encode() if isinstance(item, str) else json.dumps(list(item), separators=(",", ":")).encode()
    digest = hashlib.shake_256(data).digest(4 * dimensions)
    raw = [value / 2**31 - 1 for value in struct.unpack(f"<{dimensions}I", digest)]
    norm = math.sqrt(sum(value * value for value in raw)) or 1.0
    return [value / norm for value in raw]


def respond(request: EmbeddingsRequest, options: FakeOptions, response_id: str, dimensions: int) -> Response:
    """The embeddings of a validated request; ``dimensions`` is the server default."""
    size = request.dimensions or dimensions
    data = []
    for index, item in enumerate(request.inputs):
        vector = embedding(item, size)
        encoded: Any = (
            base64.b64encode(struct.pack(f"<{size}f", *vector)).decode() if request.base64 else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    body: dict[str, Any] = {"object": "list", "data": data, "model": request.model}
    counts = reported(options.usage, {"prompt": request.prompt_tokens})
    if counts is not None:
        prompt = None if options.usage == "null_prompt" else counts["prompt"]
        body["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
    return JSONResponse(body, headers={"x-request-id": f"req_{response_id}"})
