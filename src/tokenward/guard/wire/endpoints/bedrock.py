"""Amazon Bedrock Runtime: Converse / ConverseStream, and InvokeModel /
InvokeModelWithResponseStream for Anthropic models.

Request facts (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
and ``..._InvokeModelWithResponseStream.html``; Claude's body:
https://docs.aws.amazon.com/bedrock/latest/userguide/model-parameters-anthropic-claude-messages.html;
read 2026-12-07):

* Converse: ``POST /model/{modelId}/converse`` (``/converse-stream``), the model in the URL;
  ``messages`` of ``{role, content: [{text} | {toolUse} | {toolResult} | {image} ...]}``,
  ``system: [{text}]``, ``inferenceConfig.maxTokens`` bounds the output. Streams are Amazon event
  streams of ``messageStart``, ``contentBlockStart``, ``contentBlockDelta``, ``contentBlockStop``,
  ``messageStop`` (``stopReason``: ``max_tokens`` when the bound was reached) and ``metadata``
  (``usage``), the last event.
* InvokeModel for Claude: ``POST /model/{modelId}/invoke`` (``/invoke-with-response-stream``), the
  Messages API's body without ``model``, with ``anthropic_version: "bedrock-2023-05-31"``; streamed
  answers are event-stream ``chunk`` events whose payload ``{"bytes": <base64>}`` holds one
  Messages stream event.

Streamed calls are relayed, counted and cut at their hold, the ending written as Bedrock writes a
length-limited one. Non-streamed calls (:attr:`Endpoint.streams` is True) are bounded the same way
under ``bound_non_streamed: stream`` (:mod:`tokenward.guard.wire.bounded`): sent upstream as
ConverseStream / InvokeModelWithResponseStream and answered as the Converse / InvokeModel JSON
(:mod:`tokenward.guard.wire.assemble`), ``stopReason`` / ``stop_reason`` ``max_tokens`` when cut.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from tokenward.core.estimate import Estimate, estimate_anthropic_messages
from tokenward.guard.wire.endpoints.anthropic_messages import AnthropicMessages
from tokenward.guard.wire.endpoints.base import Endpoint, StreamState, head, require
from tokenward.guard.wire.eventstream import EventStreamParser, event_message, exception_message

__all__ = ["BEDROCK_ANTHROPIC_VERSION", "BedrockConverse", "BedrockInvoke"]

BEDROCK_ANTHROPIC_VERSION = "bedrock-2023-05-31"


class _Frames:
    """Event-stream messages as ``(event type, JSON data)`` pairs, the way the relay reads events."""

    def __init__(self, unwrap: Any) -> None:
        self._parser = EventStreamParser()
        self._unwrap = unwrap

    def feed(self, chunk: bytes) -> list[tuple[str | None, str]]:
        return [self._unwrap(kind, headers, payload) for kind, headers, payload in self._parser.feed(chunk)]

    def close(self) -> list[tuple[str | None, str]]:
        return []


def _converse_event(kind: str, headers: Mapping[str, Any], payload: bytes) -> tuple[str | None, str]:
    """``{"<event type>": payload}``, as the AWS SDKs hand ConverseStream events over; an
    exception is ``{"<exception type>": {...}, "exception": true}``."""
    try:
        body = json.loads(payload or b"{}")
    except ValueError:
        body = {}
    event: dict[str, Any] = {kind: body}
    if headers.get(":message-type") == "exception":
        event["exception"] = True
    return kind, json.dumps(event)


def _as_text(block: Any) -> dict[str, Any]:
    """A Converse content block as an Anthropic one, for estimating (what cannot be mapped is
    counted as its JSON text: an over-count, never an under-count)."""
    if isinstance(block, Mapping):
        if isinstance(block.get("text"), str):
            return {"type": "text", "text": block["text"]}
        use = block.get("toolUse")
        if isinstance(use, Mapping):
            return {"type": "tool_use", "id": str(use.get("toolUseId", "")), "name": str(use.get("name", "")),
                    "input": use.get("input") or {}}  # fmt: skip
        result = block.get("toolResult")
        if isinstance(result, Mapping):
            return {"type": "tool_result", "tool_use_id": str(result.get("toolUseId", "")),
                    "content": json.dumps(result.get("content"))}  # fmt: skip
    return {"type": "text", "text": json.dumps(block)}


def converse_as_messages(body: Mapping[str, Any]) -> dict[str, Any]:
    """A Converse request as a Messages one (for the prompt estimate)."""
    system = [
        b["text"]
        for b in body.get("system") or ()
        if isinstance(b, Mapping) and isinstance(b.get("text"), str)
    ]
    messages = [
        {"role": m.get("role"), "content": [_as_text(b) for b in m.get("content") or ()]}
        for m in body.get("messages") or ()
        if isinstance(m, Mapping)
    ]
    tools = []
    config = body.get("toolConfig")
    for tool in (config.get("tools") or ()) if isinstance(config, Mapping) else ():
        spec = tool.get("toolSpec") if isinstance(tool, Mapping) else None
        if isinstance(spec, Mapping):
            schema = spec.get("inputSchema")
            tools.append({"name": spec.get("name"), "description": spec.get("description", ""),
                          "input_schema": schema.get("json") if isinstance(schema, Mapping) else {}})  # fmt: skip
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = "\n".join(system)
    if tools:
        out["tools"] = tools
    return out


class BedrockConverse(Endpoint):
    """Bedrock's Converse and ConverseStream."""

    dialect = "bedrock-converse"
    family = "bedrock"
    path = "/model/{model_id}/converse"
    streams = True
    stream_media_type = "application/vnd.amazon.eventstream"
    error_shape = "bedrock"

    def upstream_path(self, body: Mapping[str, Any]) -> str:
        """``/model/{modelId}/converse`` or ``/converse-stream``."""
        from urllib.parse import quote

        op = "converse-stream" if body.get("stream") is True else "converse"
        return f"/model/{quote(str(body['model']), safe='')}/{op}"

    def validate(self, body: Any) -> None:
        """``messages``: a non-empty list of ``{role, content: [...]}``; ``inferenceConfig.maxTokens``
        a positive whole number when given."""
        require(isinstance(body, dict), "the request body must be a JSON object", "body")
        messages = body.get("messages")
        require(
            isinstance(messages, list) and bool(messages), "messages must be a non-empty list", "messages"
        )
        for i, message in enumerate(messages):
            require(
                isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), list),
                f"messages[{i}] must be an object with a role and a content list",
                "messages",
            )  # fmt: skip
        config = body.get("inferenceConfig", {})
        require(isinstance(config, dict), "inferenceConfig must be an object", "inferenceConfig")
        bound = config.get("maxTokens")
        ok = bound is None or (isinstance(bound, int) and not isinstance(bound, bool) and bound >= 1)
        require(ok, "inferenceConfig.maxTokens must be a positive integer", "inferenceConfig.maxTokens")

    def estimate(self, body: Mapping[str, Any], model: str) -> Estimate:
        """The prompt estimate, as for the same prompt sent to the Messages API (Claude's
        tokenizer is not public: ``o200k_base`` times the safety factor)."""
        return estimate_anthropic_messages(converse_as_messages(body), model)

    def requested_max(self, body: Mapping[str, Any]) -> int | None:
        """``inferenceConfig.maxTokens``."""
        config = body.get("inferenceConfig")
        value = config.get("maxTokens") if isinstance(config, Mapping) else None
        return value if isinstance(value, int) else None

    def with_bound(self, body: dict[str, Any], bound: int, provider: str) -> dict[str, Any]:
        """``inferenceConfig.maxTokens`` set; our ``model``/``stream`` keys gone (both are in the URL)."""
        out = {k: v for k, v in body.items() if k not in ("model", "stream")}
        out["inferenceConfig"] = {**(body.get("inferenceConfig") or {}), "maxTokens": bound}
        return out

    def may_write_cache(self, body: Mapping[str, Any]) -> bool:
        """A ``cachePoint`` block anywhere asks for a cache write."""
        from tokenward.guard.wire.endpoints.base import values_under

        return bool(values_under(body, "cachePoint"))

    def prepare_stream(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """ConverseStream always ends with its usage."""
        return body, True

    def response_text(self, response: Mapping[str, Any]) -> str:
        """The text and tool input of the answer's content blocks."""
        message = (
            (response.get("output") or {}).get("message")
            if isinstance(response.get("output"), Mapping)
            else None
        )
        pieces = []
        for block in (message or {}).get("content") or ():
            if isinstance(block, Mapping):
                if isinstance(block.get("text"), str):
                    pieces.append(block["text"])
                use = block.get("toolUse")
                if isinstance(use, Mapping):
                    pieces.append(json.dumps(use.get("input")))
        return "".join(pieces)

    def stream_parser(self) -> Any:
        """Amazon event-stream messages read with botocore."""
        return _Frames(_converse_event)

    def passthrough(self, name: str | None, data: str) -> bytes:
        """The event written back as it came."""
        return self.encode(name, json.loads(data))

    def is_end(self, name: str | None, data: str, event: Mapping[str, Any] | None) -> bool:
        """The ``metadata`` event (usage) is the last."""
        return event is not None and "metadata" in event

    def relay(
        self, name: str | None, data: str, event: Mapping[str, Any], state: StreamState
    ) -> bytes | None:
        """Pass the event on, tracking the open content block."""
        for kind in ("contentBlockStart", "contentBlockDelta"):
            index = (
                (event.get(kind) or {}).get("contentBlockIndex")
                if isinstance(event.get(kind), Mapping)
                else None
            )
            if isinstance(index, int):
                state.open_block = index
        if "contentBlockStop" in event:
            state.open_block = None
        return self.encode(name, event)

    def truncate(self, event: Mapping[str, Any], keep_tokens: int, encoding: str) -> Mapping[str, Any]:
        """Keep the first ``keep_tokens`` tokens of a ``contentBlockDelta``'s text."""
        inner = event.get("contentBlockDelta")
        if not isinstance(inner, Mapping) or not isinstance(inner.get("delta"), Mapping):
            return event
        delta = dict(inner["delta"])
        if isinstance(delta.get("text"), str):
            delta["text"], _ = head(delta["text"], keep_tokens, encoding)
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, Mapping) and isinstance(reasoning.get("text"), str):
            delta["reasoningContent"] = {
                **reasoning,
                "text": head(reasoning["text"], keep_tokens, encoding)[0],
            }
        return {"contentBlockDelta": {**inner, "delta": delta}}

    def encode(self, name: str | None, event: Mapping[str, Any]) -> bytes:
        """One event-stream message: the event's one key is its type, its value the payload."""
        if event.get("exception"):
            kind = next(k for k in event if k != "exception")
            message = (
                (event.get(kind) or {}).get("message", "") if isinstance(event.get(kind), Mapping) else ""
            )
            return exception_message(kind, str(message))
        kind = name or next(iter(event))
        return event_message(kind, json.dumps(event.get(kind, {}), separators=(",", ":")).encode())

    def closing(self, state: StreamState, *, model: str, input_tokens: int, reason: str) -> list[bytes]:
        """Close any open block, then ``messageStop`` with ``stopReason: "max_tokens"``, then
        ``metadata`` with the usage (our count of the output)."""
        out = []
        if state.open_block is not None:
            out.append(self.encode(None, {"contentBlockStop": {"contentBlockIndex": state.open_block}}))
            state.open_block = None
        out.append(self.encode(None, {"messageStop": {"stopReason": "max_tokens"}}))
        usage = {
            "inputTokens": input_tokens,
            "outputTokens": state.counted,
            "totalTokens": input_tokens + state.counted,
        }
        out.append(self.encode(None, {"metadata": {"usage": usage, "metrics": {"latencyMs": 0}}}))
        return out

    def error_event(self, message: str) -> bytes:
        """A ``modelStreamErrorException`` (boto3 raises it from the stream)."""
        return exception_message("modelStreamErrorException", message)


def _invoke_event(kind: str, headers: Mapping[str, Any], payload: bytes) -> tuple[str | None, str]:
    """A ``chunk``'s Messages stream event (its base64 ``bytes`` decoded); an exception as an
    Anthropic ``error`` event."""
    try:
        body = json.loads(payload or b"{}")
    except ValueError:
        body = {}
    if headers.get(":message-type") == "exception":
        message = body.get("message", "") if isinstance(body, dict) else ""
        return "error", json.dumps({"type": "error", "error": {"type": kind, "message": message}})
    raw = body.get("bytes") if isinstance(body, dict) else None
    try:
        data = base64.b64decode(raw).decode() if isinstance(raw, str) else "{}"
    except ValueError:
        data = "{}"
    try:
        name = json.loads(data).get("type")
    except (ValueError, AttributeError):
        name = None
    return (name if isinstance(name, str) else None), data


class BedrockInvoke(AnthropicMessages):
    """InvokeModel and InvokeModelWithResponseStream for Claude: the Messages API on Bedrock."""

    family = "bedrock"
    path = "/model/{model_id}/invoke"
    streams = True
    stream_media_type = "application/vnd.amazon.eventstream"
    error_shape = "bedrock"

    def upstream_path(self, body: Mapping[str, Any]) -> str:
        """``/model/{modelId}/invoke`` or ``/invoke-with-response-stream``."""
        from urllib.parse import quote

        op = "invoke-with-response-stream" if body.get("stream") is True else "invoke"
        return f"/model/{quote(str(body['model']), safe='')}/{op}"

    def with_bound(self, body: dict[str, Any], bound: int, provider: str) -> dict[str, Any]:
        """The Messages body, bounded, without ``model``/``stream`` (in the URL) and with
        ``anthropic_version``."""
        out = {
            k: v for k, v in super().with_bound(body, bound, provider).items() if k not in ("model", "stream")
        }
        out.setdefault("anthropic_version", BEDROCK_ANTHROPIC_VERSION)
        return out

    def stream_parser(self) -> Any:
        """Event-stream ``chunk`` messages, each holding one Messages event."""
        return _Frames(_invoke_event)

    def passthrough(self, name: str | None, data: str) -> bytes:
        """The event wrapped back in its ``chunk`` as it came (decoded or not: text that is not
        JSON, a number Python will not turn into an int)."""
        return _chunk(data)

    def encode(self, name: str | None, event: Mapping[str, Any]) -> bytes:
        """A ``chunk`` message whose ``bytes`` is the base64 of the Messages event."""
        return _chunk(json.dumps(event, separators=(",", ":")))

    def relay(
        self, name: str | None, data: str, event: Mapping[str, Any], state: StreamState
    ) -> bytes | None:
        """Pass the event on (re-wrapped), tracking the open content block."""
        super().relay(name, data, event, state)
        return self.encode(name, event)

    def error_event(self, message: str) -> bytes:
        """A ``modelStreamErrorException``."""
        return exception_message("modelStreamErrorException", message)


def _chunk(text: str) -> bytes:
    """An InvokeModel stream ``chunk`` message carrying ``text`` (a Messages event) as base64."""
    return event_message("chunk", json.dumps({"bytes": base64.b64encode(text.encode()).decode()}).encode())
