"""Calls whose model is in the URL: the Gemini API and Vertex AI (``google.genai.Client``, with
or without ``vertexai=True``), Claude on Vertex AI (``anthropic.AnthropicVertex``) and on Bedrock
(``anthropic.AnthropicBedrock``: ``/model/{modelId}/invoke`` and its stream).

``.../models/{model}:generateContent`` and ``:streamGenerateContent`` are Gemini calls;
``.../publishers/anthropic/models/{model}:rawPredict`` and ``:streamRawPredict`` are Messages
calls whose body has no ``model`` and carries ``anthropic_version``
(https://platform.claude.com/docs/en/build-with-claude/claude-on-vertex-ai, read 2026-12-07).
A wrapped client's such call is read as the dialect's own (the model and streaming from the URL),
and sent back in the platform's shape, to the streaming method when it is read as a stream to be
bounded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from tokenward.core.modifiers import vertex_uplifted
from tokenward.guard.wire.endpoints import AnthropicMessages, BedrockConverse, BedrockInvoke, Endpoint, Gemini

__all__ = ["Addressed", "addressed"]

_GEMINI = re.compile(r"/models/(?P<model>[^/:]+):(?P<method>generateContent|streamGenerateContent)$")
_CLAUDE = re.compile(
    r"/publishers/anthropic/models/(?P<model>[^/:]+):(?P<method>rawPredict|streamRawPredict)$"
)
_BEDROCK = re.compile(
    r"/model/(?P<model>[^/]+)/(?P<method>invoke|invoke-with-response-stream|converse|converse-stream)$"
)
_LOCATION = re.compile(r"/locations/(?P<location>[^/]+)/")
_GEMINI_ENDPOINT = Gemini()
_CLAUDE_ENDPOINT = AnthropicMessages()
_INVOKE_ENDPOINT = BedrockInvoke()
_CONVERSE_ENDPOINT = BedrockConverse()


@dataclass(frozen=True, slots=True)
class Addressed:
    """A call addressed by its URL.

    Attributes:
        endpoint: the dialect's endpoint (Gemini, or Anthropic Messages).
        model: the model the URL names.
        stream: whether the URL asks for a stream.
        vertex_claude: a Claude call on Vertex AI (rather than a Gemini one).
        location: the Vertex AI location the URL names, or None.
    """

    endpoint: Endpoint
    model: str
    stream: bool
    vertex_claude: bool
    location: str | None
    bedrock: bool = False

    def body(self, content: bytes) -> Any:
        """The request body as the dialect reads it (the model and ``stream`` from the URL).

        Raises:
            ValueError: the body is not JSON.
        """
        body = json.loads(content or b"{}")
        if not isinstance(body, dict):
            return body
        if self.vertex_claude:
            body = {k: v for k, v in body.items() if k != "anthropic_version"}
        return {**body, "model": self.model, "stream": self.stream}  # Bedrock's endpoints drop them again

    def content(self, sent: bytes, original: bytes) -> bytes:
        """The body to send: Claude's without ``model``, with the client's ``anthropic_version``;
        Gemini's as the endpoint wrote it (its ``model``/``stream`` keys already gone)."""
        if not self.vertex_claude:
            return sent  # Gemini's and Bedrock's endpoints write their platform's body themselves
        body = json.loads(sent)
        body.pop("model", None)
        try:
            version = json.loads(original).get("anthropic_version")
        except (ValueError, AttributeError):
            version = None
        body["anthropic_version"] = version or "vertex-2023-10-16"
        return json.dumps(body).encode()

    def path(self, path: str, stream: bool) -> str:
        """``path`` with the streaming method when ``stream`` (else as it was)."""
        if not stream or self.stream:
            return path
        if self.bedrock:  # /invoke -> /invoke-with-response-stream, /converse -> /converse-stream
            if path.endswith("/invoke"):
                return path + "-with-response-stream"
            return path.removesuffix("/converse") + "/converse-stream"
        if self.vertex_claude:
            return path.removesuffix(":rawPredict") + ":streamRawPredict"
        return path.removesuffix(":generateContent") + ":streamGenerateContent"

    def provider(self) -> str:
        """The price provider: ``google``, or ``google:regional`` for Claude from Sonnet 4.5 on
        a regional Vertex endpoint (its 10 % uplift)."""
        if self.bedrock:
            return "aws"
        regional = self.location not in (None, "global")
        if self.vertex_claude and regional and vertex_uplifted(self.model):
            return "google:regional"
        return "google"


def addressed(method: str, path: str) -> Addressed | None:
    """The URL-addressed call a request is, or None."""
    if method.upper() != "POST":
        return None
    bedrock = _BEDROCK.search(path)
    if bedrock is not None:  # AnthropicBedrock: Bedrock Runtime's paths
        op = bedrock.group("method")
        return Addressed(
            endpoint=_CONVERSE_ENDPOINT if op.startswith("converse") else _INVOKE_ENDPOINT,
            model=unquote(bedrock.group("model")),
            stream=op.endswith("stream"),
            vertex_claude=False,
            location=None,
            bedrock=True,
        )
    found = _CLAUDE.search(path)
    claude = found is not None
    found = found or _GEMINI.search(path)
    if found is None:
        return None
    where = _LOCATION.search(path)
    return Addressed(
        endpoint=_CLAUDE_ENDPOINT if claude else _GEMINI_ENDPOINT,
        model=unquote(found.group("model")),
        stream=found.group("method").startswith("stream"),
        vertex_claude=claude,
        location=where.group("location") if where else None,
    )
