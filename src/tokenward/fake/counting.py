"""The fake provider's own token arithmetic: its reply text and its prompt count.

Reply text: the word ``hello`` repeated, ``"hello"`` followed by ``k - 1`` copies of ``" hello"``.
That string is exactly ``k`` tokens in tiktoken's ``o200k_base`` and ``cl100k_base``, so a
client that counts the streamed text with a real tokenizer gets the fake's own figure.

Prompt count (deliberately *not* a real tokenizer, and not tokenward's estimator, so tests can
tell a provider-reported count from a locally estimated one): the number of matches of the regex
``\\w+|[^\\w\\s]`` (a run of word characters, or one punctuation character; whitespace is free)
over all the text in the request, plus 4 per message. The text is:

* each message's content: a string, or the text of its parts (OpenAI ``text`` and ``refusal``
  parts; Anthropic ``text`` and ``thinking`` blocks, ``tool_use`` blocks as their ``name`` plus the
  JSON of their ``input``, ``tool_result`` blocks as their content, recursively);
* OpenAI assistant ``tool_calls``: each function's ``name`` and ``arguments`` string;
* the Anthropic ``system`` prompt (a string or a list of text blocks; it is not a message, so it
  adds no 4);
* each tool definition in ``tools``, as its JSON text (``json.dumps(tool, ensure_ascii=False)``;
  separators do not matter since whitespace is not counted).

The other endpoints apply the same rule to their own fields (Responses input items and
``instructions``, completion prompts, embedding inputs, Gemini contents and
``systemInstruction``); each endpoint's module lists what it counts. Images, audio, documents
and other non-text parts count nothing. Example: one user message
``"Hello, world!"`` is ``Hello`` ``,`` ``world`` ``!`` = 4 pieces, plus 4: 8 prompt tokens.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

__all__ = [
    "MESSAGE_OVERHEAD",
    "count_pieces",
    "first_pieces",
    "json_pieces",
    "piece_chunks",
    "reply_chunks",
    "reply_text",
]

MESSAGE_OVERHEAD = 4
"""Prompt tokens added per message, on top of its text."""

_PIECE = re.compile(r"\w+|[^\w\s]")


def count_pieces(text: str) -> int:
    """Number of matches of ``\\w+|[^\\w\\s]`` in ``text`` (the fake's "tokens")."""
    return sum(1 for _ in _PIECE.finditer(text))


def json_pieces(value: Any) -> int:
    """Pieces in the JSON text of ``value`` (non-ASCII kept as is, so it is not inflated by escapes)."""
    return count_pieces(json.dumps(value, ensure_ascii=False))


def reply_text(tokens: int) -> str:
    """The fake reply of ``tokens`` tokens: ``"hello"`` then ``tokens - 1`` times ``" hello"`` ("" for 0)."""
    return "".join(reply_chunks(tokens, tokens or 1))


def reply_chunks(tokens: int, per_chunk: int) -> list[str]:
    """The reply text of ``tokens`` tokens cut into streamed pieces of ``per_chunk`` words each.

    The last piece may be shorter; no pieces for 0 tokens. Joined, they give :func:`reply_text`.
    """
    words = ["hello" if i == 0 else " hello" for i in range(tokens)]
    return ["".join(words[i : i + per_chunk]) for i in range(0, tokens, per_chunk)]


def first_pieces(text: str, pieces: int) -> str:
    """``text`` up to the end of its ``pieces``-th piece ("" for 0; all of it when it has fewer)."""
    if pieces <= 0:
        return ""
    end = 0
    for index, match in enumerate(_PIECE.finditer(text)):
        if index == pieces:
            return text[:end]
        end = match.end()
    return text


def piece_chunks(text: str, per_chunk: int) -> list[str]:
    """``text`` cut into streamed pieces of ``per_chunk`` pieces each.

    Each cut falls right after a piece, so whitespace goes with the piece that follows it (as
    ``" hello"`` does in :func:`reply_chunks`) and trailing whitespace with the last chunk;
    joined, the chunks give ``text`` back. A text of no pieces (empty or blank) gives no chunks.
    """
    ends = [match.end() for match in _PIECE.finditer(text)]
    if not ends:
        return []
    cuts = ends[per_chunk - 1 : len(ends) - 1 : per_chunk]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]
