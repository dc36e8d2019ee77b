"""Amazon Bedrock Runtime's side of the fake provider: Converse / ConverseStream and InvokeModel
(/ WithResponseStream) for Claude, answered by the fake's Messages handler and written in
Bedrock's shapes (JSON, or binary event streams), with SigV4 signatures checked.

Routes: ``POST /model/{modelId}/converse``, ``/converse-stream``, ``/invoke``,
``/invoke-with-response-stream``.

* Converse bodies are read as the Messages request they stand for (text, tool use and results;
  ``system``; ``inferenceConfig.maxTokens`` as ``max_tokens``, 4096 when absent); the answer is
  ``{"output": {"message"}, "stopReason", "usage", "metrics"}``; the stream's events are
  ``messageStart``, ``contentBlockDelta``, ``contentBlockStop``, ``messageStop`` and ``metadata``
  (usage), each an event-stream message.
* InvokeModel bodies are Messages bodies without ``model`` and with ``anthropic_version`` (else
  400); streamed answers are ``chunk`` messages whose ``bytes`` is the base64 of each Messages
  event, the last carrying ``amazon-bedrock-invocationMetrics``.
* The fake's options (``fake`` body key, ``x-fake-options``) apply as on ``/v1/messages``: the
  stream misbehaviours (``break_after_chunks``, ``ignore_max_tokens``, ``usage``...) included.
  A Messages ``error`` event mid-stream becomes an exception message.

Authentication, when ``FakeSettings.aws_secret_access_key`` is set: SigV4 for the service
``bedrock`` signed with that secret (access key ``FakeSettings.aws_access_key_id``), recomputed
with botocore (:func:`tokenward.guard.wire.sigv4.verify_sigv4`); or, when ``api_key`` is set,
``Authorization: Bearer <api_key>`` (a Bedrock API key). Refusals are 403
``UnrecognizedClientException`` / ``InvalidSignatureException``, errors AWS-shaped
(``{"message"}`` and ``x-amzn-errortype``).
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from tokenward.errors import ValidationError
from tokenward.guard.wire.eventstream import event_message, exception_message
from tokenward.guard.wire.sse import SSEParser

__all__ = ["BedrockGate", "aws_error", "converse_body", "invoke_body", "rewritten"]

_EVENTSTREAM = "application/vnd.amazon.eventstream"
_ERROR_TYPES = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
                429: "ThrottlingException", 500: "InternalServerException", 503: "ServiceUnavailableException"}  # fmt: skip


def aws_error(status: int, message: str, kind: str | None = None) -> Response:
    """An error as Bedrock answers one (the AWS JSON protocol)."""
    kind = kind or _ERROR_TYPES.get(
        status, "InternalServerException" if status >= 500 else "ValidationException"
    )
    return JSONResponse({"message": message}, status_code=status, headers={"x-amzn-errortype": kind})


def _block(block: Any) -> dict[str, Any]:
    if isinstance(block, dict) and isinstance(block.get("text"), str):
        return {"type": "text", "text": block["text"]}
    if isinstance(block, dict) and isinstance(block.get("toolUse"), dict):
        use = block["toolUse"]
        return {"type": "tool_use", "id": str(use.get("toolUseId", "t")), "name": str(use.get("name", "")),
                "input": use.get("input") or {}}  # fmt: skip
    if isinstance(block, dict) and isinstance(block.get("toolResult"), dict):
        result = block["toolResult"]
        return {"type": "tool_result", "tool_use_id": str(result.get("toolUseId", "t")),
                "content": json.dumps(result.get("content"))}  # fmt: skip
    raise ValidationError("content blocks must be text, toolUse or toolResult in the fake", field="messages")


def converse_body(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """A Converse request as the Messages request the fake answers.

    Raises:
        ValidationError: a malformed request (the message names the field).
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValidationError("messages: must be a non-empty list", field="messages")
    converted = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("content"), list):
            raise ValidationError("messages: each needs a role and a content list", field="messages")
        converted.append({"role": message.get("role"), "content": [_block(b) for b in message["content"]]})
    config = body.get("inferenceConfig") or {}
    out: dict[str, Any] = {"model": model, "messages": converted, "max_tokens": config.get("maxTokens", 4096),
                           "stream": stream}  # fmt: skip
    system = [b.get("text") for b in body.get("system") or () if isinstance(b, dict)]
    if system:
        out["system"] = "\n".join(str(t) for t in system)
    return out


def invoke_body(body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """An InvokeModel (Claude) body as the Messages request it is.

    Raises:
        ValidationError: a ``model`` in the body, or no ``anthropic_version``.
    """
    if "model" in body:
        raise ValidationError("model: extraneous key [model] is not permitted", field="model")
    if not isinstance(body.get("anthropic_version"), str):
        raise ValidationError(
            "anthropic_version: required key [anthropic_version] not found", field="anthropic_version"
        )
    return {**{k: v for k, v in body.items() if k != "anthropic_version"}, "model": model, "stream": stream}


class BedrockGate:
    """The fake's Bedrock authentication check."""

    def __init__(self, access_key_id: str | None, secret: str | None, api_key: str | None) -> None:
        self.access_key_id, self.secret, self.api_key = access_key_id, secret, api_key

    def check(self, request: Request, key: str | None) -> Response | None:
        """SigV4 (recomputed with botocore) or a bearer API key; None when the request may pass."""
        if self.secret is None and self.api_key is None:
            return None
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            if self.api_key is not None and secrets.compare_digest(auth[7:].encode(), self.api_key.encode()):
                return None
            return aws_error(
                403,
                "Invalid API Key format: Must start with pre-defined prefix",
                "UnrecognizedClientException",
            )
        if self.secret is None:
            return aws_error(403, "Missing Authentication Token", "MissingAuthenticationTokenException")
        from tokenward.guard.wire.sigv4 import SigV4Problem, verify_sigv4

        raw = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string") or b""
        url = f"{request.url.scheme}://{request.headers.get('host', '')}{raw.decode()}" + (
            f"?{query.decode()}" if query else ""
        )
        body = getattr(request, "_body", b"")  # read by the handler before the check
        try:
            verify_sigv4(request.method, url, dict(request.headers), body,
                         lambda akid: self.secret if akid == self.access_key_id else None)  # fmt: skip
        except SigV4Problem as problem:
            return aws_error(
                403,
                f"The request signature we calculated does not match: {problem}",
                "InvalidSignatureException",
            )
        return None


def _converse_json(answer: dict[str, Any]) -> dict[str, Any]:
    usage = answer.get("usage") or {}
    inputs, outputs = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    content = [{"text": b.get("text", "")} for b in answer.get("content") or () if b.get("type") == "text"]
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": answer.get("stop_reason") or "end_turn",
        "usage": {"inputTokens": inputs, "outputTokens": outputs, "totalTokens": inputs + outputs},
        "metrics": {"latencyMs": 1},
    }


class _ConverseFrames:
    """Messages stream events written as ConverseStream's."""

    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens: int | None = None

    def frames(self, event: dict[str, Any]) -> list[bytes]:
        kind = event.get("type")
        if kind == "message_start":
            self.input_tokens = ((event.get("message") or {}).get("usage") or {}).get("input_tokens", 0)
            return [event_message("messageStart", b'{"role":"assistant"}')]
        if kind == "content_block_delta":
            text = (event.get("delta") or {}).get("text", "")
            payload = {"contentBlockIndex": event.get("index", 0), "delta": {"text": text}}
            return [event_message("contentBlockDelta", json.dumps(payload).encode())]
        if kind == "content_block_stop":
            return [
                event_message(
                    "contentBlockStop", json.dumps({"contentBlockIndex": event.get("index", 0)}).encode()
                )
            ]
        if kind == "message_delta":
            usage = event.get("usage") or {}
            self.output_tokens = usage.get("output_tokens", self.output_tokens)
            reason = (event.get("delta") or {}).get("stop_reason") or "end_turn"
            return [event_message("messageStop", json.dumps({"stopReason": reason}).encode())]
        if kind == "message_stop":
            if self.output_tokens is None:  # the usage: omit option
                return [event_message("metadata", b'{"metrics":{"latencyMs":1}}')]
            usage = {"inputTokens": self.input_tokens, "outputTokens": self.output_tokens,
                     "totalTokens": self.input_tokens + self.output_tokens}  # fmt: skip
            return [
                event_message("metadata", json.dumps({"usage": usage, "metrics": {"latencyMs": 1}}).encode())
            ]
        if kind == "error":
            message = (event.get("error") or {}).get("message", "")
            return [exception_message("modelStreamErrorException", str(message))]
        return []


def _invoke_frames(event: dict[str, Any]) -> list[bytes]:
    if event.get("type") == "error":
        return [
            exception_message("modelStreamErrorException", str((event.get("error") or {}).get("message", "")))
        ]
    raw = base64.b64encode(json.dumps(event).encode()).decode()
    return [event_message("chunk", json.dumps({"bytes": raw}).encode())]


def rewritten(response: Response, converse: bool) -> Response:
    """The fake Messages answer written as Bedrock's: JSON, an event stream, or an AWS error."""
    if response.status_code >= 400:
        if "x-amzn-errortype" in response.headers:
            return response
        try:
            message = json.loads(bytes(response.body)).get("error", {}).get("message", "")
        except (ValueError, AttributeError):
            message = ""
        return aws_error(response.status_code, str(message))
    if isinstance(response, StreamingResponse):
        source = response.body_iterator
        writer = _ConverseFrames() if converse else None

        async def body() -> AsyncIterator[bytes]:
            parser = SSEParser()
            async for chunk in source:
                raw = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                for _name, data in parser.feed(raw):
                    try:
                        event = json.loads(data)
                    except ValueError:
                        continue
                    for frame in writer.frames(event) if writer is not None else _invoke_frames(event):
                        yield frame

        return StreamingResponse(body(), media_type=_EVENTSTREAM, background=response.background)
    answer = json.loads(bytes(response.body))
    return JSONResponse(_converse_json(answer) if converse else answer)
