"""The Responses stream: the SSE events of one ``response``, built from its final object.

Wire format (https://platform.openai.com/docs/api-reference/responses-streaming): each event is
``event: <type>`` plus ``data: {...}`` whose ``type`` repeats the name and whose
``sequence_number`` counts from 0; there is no ``[DONE]``. In order:

1. ``response.created`` and ``response.in_progress``, carrying the response in progress
   (``status: "in_progress"``, ``output: []``, ``usage: null``);
2. per output item, with its ``output_index``:

   * ``message``: ``response.output_item.added`` (the item in progress, no content),
     ``response.content_part.added`` (an empty ``output_text`` part),
     ``response.output_text.delta`` events (``chunk_tokens`` pieces each),
     ``response.output_text.done`` (the whole text), ``response.content_part.done``,
     ``response.output_item.done`` (the final item);
   * ``function_call``: ``response.output_item.added`` (the item in progress, ``arguments: ""``),
     ``response.function_call_arguments.delta`` events, ``response.function_call_arguments.done``
     (the whole arguments), ``response.output_item.done``;
   * ``reasoning``: ``response.output_item.added`` then ``response.output_item.done``;
3. ``response.completed``, or ``response.incomplete`` when the bound cut the reply, carrying the
   final response with its ``usage`` (the only place a stream reports usage).
"""

from __future__ import annotations

from typing import Any

from tokenward.fake.counting import count_pieces, piece_chunks
from tokenward.fake.streaming import sse_event

__all__ = ["stream_events", "stream_outputs"]

_Events = list[dict[str, Any]]


def _message(item: dict[str, Any], index: int, per_chunk: int) -> _Events:
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    part = item["content"][0]
    empty = {**part, "text": ""}
    events: _Events = [
        {
            "type": "response.output_item.added",
            "output_index": index,
            "item": {**item, "status": "in_progress", "content": []},
        },
        {"type": "response.content_part.added", **where, "part": empty},
    ]
    for piece in piece_chunks(part["text"], per_chunk):
        events.append({"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []})
    events += [
        {"type": "response.output_text.done", **where, "text": part["text"], "logprobs": []},
        {"type": "response.content_part.done", **where, "part": part},
    ]
    return events


def _function_call(item: dict[str, Any], index: int, per_chunk: int) -> _Events:
    where = {"item_id": item["id"], "output_index": index}
    opening = {**item, "status": "in_progress", "arguments": ""}
    events: _Events = [{"type": "response.output_item.added", "output_index": index, "item": opening}]
    for piece in piece_chunks(item["arguments"], per_chunk):
        events.append({"type": "response.function_call_arguments.delta", **where, "delta": piece})
    events.append({"type": "response.function_call_arguments.done", **where, "arguments": item["arguments"]})
    return events


def stream_events(initial: dict[str, Any], final: dict[str, Any], per_chunk: int) -> list[bytes]:
    """The stream of a response, from its in-progress and final objects.

    Args:
        initial: the response as created (in progress, no output).
        final: the finished response (``status`` ``"completed"`` or ``"incomplete"``).
        per_chunk: pieces per text or arguments delta.
    """
    return [sse_event(payload) for payload in _payloads(initial, final, per_chunk)]


def stream_outputs(
    initial: dict[str, Any], final: dict[str, Any], per_chunk: int, reasoning: int, total: int
) -> list[int]:
    """The output generated once each event of :func:`stream_events` is delivered: the hidden
    ``reasoning`` from the first event, a function call's name when its item is added, each
    delta's pieces as it is sent, and the ``total`` by the terminal event."""
    done, outputs = reasoning, []
    for payload in _payloads(initial, final, per_chunk):
        kind, item = payload["type"], payload.get("item") or {}
        if kind == "response.output_item.added" and item.get("type") == "function_call":
            done += count_pieces(item.get("name", ""))
        elif kind.endswith(".delta"):
            done += count_pieces(payload.get("delta", ""))
        outputs.append(done)
    return [*outputs[:-1], total]


def _payloads(initial: dict[str, Any], final: dict[str, Any], per_chunk: int) -> _Events:
    payloads: _Events = [
        {"type": "response.created", "response": initial},
        {"type": "response.in_progress", "response": initial},
    ]
    for index, item in enumerate(final["output"]):
        if item["type"] == "message":
            payloads += _message(item, index, per_chunk)
        elif item["type"] == "function_call":
            payloads += _function_call(item, index, per_chunk)
        else:
            payloads.append({"type": "response.output_item.added", "output_index": index, "item": item})
        payloads.append({"type": "response.output_item.done", "output_index": index, "item": item})
    ending = "response.completed" if final["status"] == "completed" else "response.incomplete"
    payloads.append({"type": ending, "response": final})
    return [{**payload, "sequence_number": number} for number, payload in enumerate(payloads)]
