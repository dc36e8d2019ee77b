"""Whole JSON answers assembled from streamed events (sans-I/O).

A call the client did not stream is read from the upstream as a stream, so it can be stopped at
its hold (:mod:`tokenward.guard.wire.bounded`); the events the relay passes on (trimmed, and ended
the provider's way when cut) are put back together here into the object the provider would have
answered without streaming:

* OpenAI chat (https://platform.openai.com/docs/api-reference/chat/object): a ``chat.completion``
  whose messages join the deltas' ``content``, ``refusal`` and reasoning text, tool calls by
  their ``index`` (``arguments`` joined), a legacy ``function_call``, and ``audio`` (``data`` and
  ``transcript`` joined); ``finish_reason`` is the last one sent; ``usage`` the usage chunk's;
* OpenAI legacy completions (https://platform.openai.com/docs/api-reference/completions/object):
  a ``text_completion`` with each choice's ``text`` joined;
* OpenAI Responses (https://platform.openai.com/docs/api-reference/responses-streaming): the
  terminal event's ``response``; when it carries no output (a reply tokenward cut), the output
  items rebuilt from ``response.output_item.*``, ``response.content_part.*`` and the text deltas;
* Anthropic Messages (https://docs.anthropic.com/en/docs/build-with-claude/streaming): the
  ``message_start`` message, its content blocks filled by ``content_block_delta`` (``text``,
  ``thinking``, ``signature``, tool ``input`` parsed from the joined ``partial_json``), and the
  ``message_delta`` stop reason and cumulative usage;
* Gemini (https://ai.google.dev/api/generate-content): one ``GenerateContentResponse`` whose
  candidates join their text parts (answer and thought parts apart), with the last chunk's
  ``finishReason``, ``usageMetadata``, ``modelVersion`` and ``responseId``;
* Amazon Bedrock Converse (https://docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html
  and ``API_runtime_ConverseStream.html``, read 2026-12-07): ``{"output": {"message": {role,
  content}}, "stopReason", "usage", "metrics"}``, the content blocks filled by
  ``contentBlockDelta`` (``text``; ``toolUse`` from ``contentBlockStart``, its ``input`` parsed
  from the joined delta strings; ``reasoningContent`` as ``reasoningText`` ``{text, signature}``),
  ``stopReason`` from ``messageStop``, ``usage`` and ``metrics`` from ``metadata``. (InvokeModel for
  Claude streams Messages events: the Anthropic assembler reads them.)

An error event in the stream is kept as :attr:`Assembler.error` (the answer then is an error).
A ``tokenward`` note on an event (set on the events that end a cut reply) is kept on the answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from tokenward.guard.wire.endpoints import Endpoint

__all__ = ["Assembler", "assembler_for"]


def _join(into: dict[str, Any], key: str, value: Any) -> None:
    """``into[key] += value`` for text (a first value is set as is)."""
    if isinstance(value, str):
        into[key] = (into.get(key) or "") + value


class Assembler:
    """Base: what every dialect's assembler keeps."""

    def __init__(self) -> None:
        self.error: Any = None
        self.note: Any = None

    def feed(self, event: Mapping[str, Any]) -> None:
        """Take one relayed event (decoded JSON)."""
        if isinstance(event.get("tokenward"), Mapping):
            self.note = dict(event["tokenward"])
        self.take(event)

    def take(self, event: Mapping[str, Any]) -> None:  # pragma: no cover - overridden
        """The dialect's part of :meth:`feed`."""
        raise NotImplementedError

    def answer(self) -> dict[str, Any]:  # pragma: no cover - overridden
        """The assembled JSON answer."""
        raise NotImplementedError

    def result(self) -> dict[str, Any]:
        """The assembled answer, with the ``tokenward`` note when there is one."""
        out = self.answer()
        if self.note is not None:
            out["tokenward"] = self.note
        return out


class ChatAssembler(Assembler):
    """OpenAI chat completions (and, with ``text``, legacy completions)."""

    def __init__(self, text: bool = False) -> None:
        super().__init__()
        self.text = text
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: Any = None

    def take(self, event: Mapping[str, Any]) -> None:
        if event.get("error") is not None:
            self.error = event["error"]
            return
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if event.get(key) is not None:
                self.head.setdefault(key, event[key])
        if isinstance(event.get("usage"), Mapping):
            self.usage = event["usage"]
        choices = event.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, Mapping):
                self._choice(choice)

    def _choice(self, choice: Mapping[str, Any]) -> None:
        index = choice.get("index", 0)
        index = index if isinstance(index, int) else 0
        into = self.choices.setdefault(index, {"index": index, "message": {}, "logprobs": None})
        if choice.get("finish_reason") is not None:
            into["finish_reason"] = choice["finish_reason"]
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, Mapping):
            merged = into["logprobs"] = into["logprobs"] or {}
            for key, value in logprobs.items():
                if isinstance(value, list):
                    merged[key] = [*(merged.get(key) or []), *value]
                elif key not in merged:
                    merged[key] = value
        if self.text:
            _join(into, "text", choice.get("text"))
            return
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            self._delta(into["message"], delta)

    @staticmethod
    def _delta(message: dict[str, Any], delta: Mapping[str, Any]) -> None:
        for key, value in delta.items():
            if key == "role" and isinstance(value, str):
                message["role"] = value
            elif key in ("content", "refusal", "reasoning_content", "reasoning"):
                _join(message, key, value)
            elif key == "tool_calls" and isinstance(value, list):
                calls = message.setdefault("tool_calls", {})
                for call in value:
                    if not isinstance(call, Mapping):
                        continue
                    at = call.get("index", len(calls))
                    into = calls.setdefault(at, {"function": {}})
                    for field in ("id", "type"):
                        if call.get(field) is not None:
                            into[field] = call[field]
                    function = call.get("function")
                    if isinstance(function, Mapping):
                        _join(into["function"], "name", function.get("name"))
                        _join(into["function"], "arguments", function.get("arguments"))
            elif key == "function_call" and isinstance(value, Mapping):
                into = message.setdefault("function_call", {})
                _join(into, "name", value.get("name"))
                _join(into, "arguments", value.get("arguments"))
            elif key == "audio" and isinstance(value, Mapping):
                audio = message.setdefault("audio", {})
                for field, part in value.items():
                    if field in ("data", "transcript"):
                        _join(audio, field, part)
                    elif part is not None:
                        audio[field] = part

    def answer(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self.choices):
            choice = dict(self.choices[index])
            choice.setdefault("finish_reason", None)
            message = choice.pop("message")
            if self.text:
                choice.setdefault("text", "")
                choices.append(choice)
                continue
            out = {"role": message.get("role", "assistant"), "content": message.get("content")}
            out["refusal"] = message.get("refusal")
            for key in ("reasoning_content", "reasoning", "function_call", "audio"):
                if key in message:
                    out[key] = message[key]
            if message.get("tool_calls"):
                out["tool_calls"] = [
                    {"id": c.get("id"), "type": c.get("type", "function"), "function": c["function"]}
                    for _, c in sorted(message["tool_calls"].items())
                ]
            choices.append({"index": choice["index"], "message": out, **_rest(choice)})
        answer: dict[str, Any] = {
            "id": self.head.get("id", "chatcmpl-tokenward"),
            "object": "text_completion" if self.text else "chat.completion",
            "created": self.head.get("created", int(time.time())),
            "model": self.head.get("model"),
            "choices": choices,
        }
        for key in ("system_fingerprint", "service_tier"):
            if key in self.head:
                answer[key] = self.head[key]
        if self.usage is not None:
            answer["usage"] = self.usage
        return answer


def _rest(choice: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in choice.items() if k not in ("index", "message")}


class ResponsesAssembler(Assembler):
    """OpenAI Responses."""

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[int, dict[str, Any]] = {}
        self.done: set[int] = set()
        self.response: dict[str, Any] | None = None

    def take(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "error":
            self.error = dict(event)
            return
        if isinstance(event.get("response"), Mapping):
            self.response = dict(event["response"])
            return
        at = event.get("output_index")
        if not isinstance(at, int):
            return
        if kind in ("response.output_item.added", "response.output_item.done"):
            if isinstance(event.get("item"), Mapping):
                self.items[at] = json.loads(json.dumps(event["item"]))
                if kind == "response.output_item.done":
                    self.done.add(at)
            return
        item = self.items.setdefault(at, {})
        part_at = event.get("content_index", event.get("summary_index", 0))
        part_at = part_at if isinstance(part_at, int) else 0
        delta = event.get("delta")
        if kind == "response.content_part.added" and isinstance(event.get("part"), Mapping):
            _put(item.setdefault("content", []), part_at, dict(event["part"]))
        elif kind == "response.reasoning_summary_part.added" and isinstance(event.get("part"), Mapping):
            _put(item.setdefault("summary", []), part_at, dict(event["part"]))
        elif kind in ("response.output_text.delta", "response.reasoning_text.delta"):
            kind_of = "output_text" if kind == "response.output_text.delta" else "reasoning_text"
            _join(_at(item.setdefault("content", []), part_at, {"type": kind_of, "text": ""}), "text", delta)
        elif kind == "response.refusal.delta":
            _join(
                _at(item.setdefault("content", []), part_at, {"type": "refusal", "refusal": ""}),
                "refusal",
                delta,
            )
        elif kind == "response.reasoning_summary_text.delta":
            _join(
                _at(item.setdefault("summary", []), part_at, {"type": "summary_text", "text": ""}),
                "text",
                delta,
            )
        elif kind in ("response.function_call_arguments.delta", "response.mcp_call_arguments.delta"):
            _join(item, "arguments", delta)
        elif kind == "response.custom_tool_call_input.delta":
            _join(item, "input", delta)
        elif kind == "response.code_interpreter_call_code.delta":
            _join(item, "code", delta)

    def answer(self) -> dict[str, Any]:
        response = dict(self.response or {"object": "response", "status": "incomplete", "output": []})
        if not response.get("output") and self.items:
            output = []
            for at in sorted(self.items):
                item = dict(self.items[at])
                if at not in self.done and ("status" in item or item.get("type") in _WITH_STATUS):
                    item["status"] = "incomplete"  # cut before the item was done
                output.append(item)
            response["output"] = output
        return response


_WITH_STATUS = ("message", "function_call", "custom_tool_call")


def _at(parts: list[Any], index: int, empty: dict[str, Any]) -> dict[str, Any]:
    """``parts[index]`` as a dict, made (from ``empty``) when missing."""
    while len(parts) <= index:
        parts.append(dict(empty))
    if not isinstance(parts[index], dict):
        parts[index] = dict(empty)
    part: dict[str, Any] = parts[index]
    return part


def _put(parts: list[Any], index: int, part: dict[str, Any]) -> None:
    _at(parts, index, {})
    parts[index] = part


class AnthropicAssembler(Assembler):
    """Anthropic Messages."""

    def __init__(self) -> None:
        super().__init__()
        self.message: dict[str, Any] = {"type": "message", "role": "assistant", "content": []}
        self.blocks: dict[int, dict[str, Any]] = {}
        self.partial: dict[int, str] = {}

    def take(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "error":
            self.error = event.get("error", dict(event))
        elif kind == "message_start" and isinstance(event.get("message"), Mapping):
            self.message = {**json.loads(json.dumps(event["message"])), "content": []}
        elif kind == "content_block_start" and isinstance(event.get("content_block"), Mapping):
            at = event.get("index", len(self.blocks))
            self.blocks[at] = json.loads(json.dumps(event["content_block"]))
        elif kind == "content_block_delta" and isinstance(event.get("delta"), Mapping):
            self._delta(event.get("index", 0), event["delta"])
        elif kind == "content_block_stop":
            self._stop(event.get("index", 0))
        elif kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, Mapping):
                for key in ("stop_reason", "stop_sequence"):
                    if key in delta:
                        self.message[key] = delta[key]
            usage = event.get("usage")
            if isinstance(usage, Mapping):
                merged = self.message.setdefault("usage", {})
                merged.update({k: v for k, v in usage.items() if v is not None})

    def _delta(self, at: Any, delta: Mapping[str, Any]) -> None:
        block = self.blocks.setdefault(at, {"type": "text", "text": ""})
        kind = delta.get("type")
        if kind == "input_json_delta":
            self.partial[at] = self.partial.get(at, "") + str(delta.get("partial_json") or "")
        elif kind == "text_delta":
            _join(block, "text", delta.get("text"))
        elif kind == "thinking_delta":
            _join(block, "thinking", delta.get("thinking"))
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature")
        elif kind == "citations_delta" and delta.get("citation") is not None:
            block.setdefault("citations", []).append(delta["citation"])

    def _stop(self, at: Any) -> None:
        text = self.partial.pop(at, None)
        if text is not None and at in self.blocks:
            try:
                parsed = json.loads(text) if text.strip() else {}
            except ValueError:
                parsed = {}  # a tool input cut short is no object
            self.blocks[at]["input"] = parsed if isinstance(parsed, dict) else {}

    def answer(self) -> dict[str, Any]:
        for at in list(self.partial):
            self._stop(at)
        return {**self.message, "content": [self.blocks[at] for at in sorted(self.blocks)]}


class GeminiAssembler(Assembler):
    """Gemini generateContent."""

    def __init__(self) -> None:
        super().__init__()
        self.candidates: dict[int, dict[str, Any]] = {}
        self.rest: dict[str, Any] = {}

    def take(self, event: Mapping[str, Any]) -> None:
        if event.get("error") is not None:
            self.error = event["error"]
            return
        for key, value in event.items():
            if key not in ("candidates", "tokenward") and value is not None:
                self.rest[key] = value
        candidates = event.get("candidates")
        for candidate in candidates if isinstance(candidates, list) else ():
            if not isinstance(candidate, Mapping):
                continue
            at = candidate.get("index", 0)
            into = self.candidates.setdefault(at, {"content": {"parts": [], "role": "model"}, "index": at})
            for key, value in candidate.items():
                if key == "content" and isinstance(value, Mapping):
                    if isinstance(value.get("role"), str):
                        into["content"]["role"] = value["role"]
                    for part in value.get("parts") or ():
                        if isinstance(part, Mapping):
                            _add_part(into["content"]["parts"], part)
                elif key != "index":
                    into[key] = value

    def answer(self) -> dict[str, Any]:
        candidates = []
        for at in sorted(self.candidates):
            candidate = dict(self.candidates[at])
            parts = [p for p in candidate["content"]["parts"] if p.get("text") != "" or len(p) > 1]
            candidate["content"] = {**candidate["content"], "parts": parts}
            candidates.append(candidate)
        return {"candidates": candidates, **self.rest}


def _add_part(parts: list[dict[str, Any]], part: Mapping[str, Any]) -> None:
    """Join a text part to the previous one of the same kind (answer or thought); else append."""
    text = part.get("text")
    last = parts[-1] if parts else None
    if (
        isinstance(text, str)
        and last is not None
        and isinstance(last.get("text"), str)
        and bool(last.get("thought")) == bool(part.get("thought"))
        and set(part) <= {"text", "thought", "thoughtSignature"}
    ):
        last["text"] += text
        if part.get("thoughtSignature"):
            last["thoughtSignature"] = part["thoughtSignature"]
        return
    parts.append(dict(part))


class ConverseAssembler(Assembler):
    """Amazon Bedrock Converse (events as boto3 hands them over: ``{"<event type>": payload}``)."""

    def __init__(self) -> None:
        super().__init__()
        self.role = "assistant"
        self.blocks: dict[int, dict[str, Any]] = {}
        self.partial: dict[int, str] = {}
        self.rest: dict[str, Any] = {}

    def take(self, event: Mapping[str, Any]) -> None:
        if event.get("exception"):
            kind = next((k for k in event if k != "exception"), "exception")
            body = event.get(kind)
            self.error = {"type": kind, **(dict(body) if isinstance(body, Mapping) else {})}
            return
        start = event.get("messageStart")
        if isinstance(start, Mapping) and isinstance(start.get("role"), str):
            self.role = start["role"]
        block_start = event.get("contentBlockStart")
        if isinstance(block_start, Mapping):
            at = block_start.get("contentBlockIndex", len(self.blocks))
            use = (block_start.get("start") or {}).get("toolUse")
            if isinstance(use, Mapping):
                self.blocks[at] = {"toolUse": {**use, "input": {}}}
                self.partial.setdefault(at, "")
        delta_event = event.get("contentBlockDelta")
        if isinstance(delta_event, Mapping) and isinstance(delta_event.get("delta"), Mapping):
            self._delta(delta_event.get("contentBlockIndex", 0), delta_event["delta"])
        stop = event.get("messageStop")
        if isinstance(stop, Mapping):
            for key in ("stopReason", "additionalModelResponseFields"):
                if key in stop:
                    self.rest[key] = stop[key]
        metadata = event.get("metadata")
        if isinstance(metadata, Mapping):
            for key in ("usage", "metrics", "trace"):
                if key in metadata:
                    self.rest[key] = metadata[key]

    def _delta(self, at: Any, delta: Mapping[str, Any]) -> None:
        if isinstance(delta.get("text"), str):
            _join(self.blocks.setdefault(at, {"text": ""}), "text", delta["text"])
        use = delta.get("toolUse")
        if isinstance(use, Mapping):
            self.blocks.setdefault(at, {"toolUse": {"input": {}}})
            self.partial[at] = self.partial.get(at, "") + str(use.get("input") or "")
        reasoning = delta.get("reasoningContent")
        if isinstance(reasoning, Mapping):
            block = self.blocks.setdefault(at, {"reasoningContent": {"reasoningText": {"text": ""}}})
            into = block.setdefault("reasoningContent", {}).setdefault("reasoningText", {"text": ""})
            _join(into, "text", reasoning.get("text"))
            if reasoning.get("signature"):
                into["signature"] = reasoning["signature"]
            if reasoning.get("redactedContent"):
                block["reasoningContent"] = {"redactedContent": reasoning["redactedContent"]}

    def answer(self) -> dict[str, Any]:
        for at, text in self.partial.items():
            try:
                parsed = json.loads(text) if text.strip() else {}
            except ValueError:
                parsed = {}  # a tool input cut short is no object
            use = self.blocks.get(at, {}).get("toolUse")
            if isinstance(use, dict):
                use["input"] = parsed if isinstance(parsed, dict) else {}
        content = [self.blocks[at] for at in sorted(self.blocks)]
        return {"output": {"message": {"role": self.role, "content": content}}, **self.rest}


def assembler_for(endpoint: Endpoint) -> Assembler:
    """A fresh assembler for an endpoint's answers."""
    if endpoint.dialect == "bedrock-converse":
        return ConverseAssembler()
    if endpoint.dialect == "openai-responses":
        return ResponsesAssembler()
    if endpoint.dialect == "anthropic-messages":
        return AnthropicAssembler()
    if endpoint.dialect == "gemini":
        return GeminiAssembler()
    return ChatAssembler(text=endpoint.path == "/v1/completions")
