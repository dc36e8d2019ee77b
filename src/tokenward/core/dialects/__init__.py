"""Provider wire formats ("dialects"): usage normalisation and stream readers, one module each.

``usage_from(dialect, raw)`` normalises a usage object; ``response_facts(dialect, response)``
reads a whole response (usage plus the served model, service tier and tool calls that ran);
``stream_reader(dialect)`` returns a reader that takes a stream's decoded events one by one.

=====================  ================================================  ============================
dialect                usage object                                      stream
=====================  ================================================  ============================
openai-chat            ``usage``                                         chunks; usage in last chunk
openai-compatible      ``usage`` (vLLM, llama.cpp, Ollama's /v1)         running totals: last wins
openai-responses       ``usage``                                         ``response.completed`` etc.
anthropic-messages     ``usage``                                         cumulative ``message_delta``
gemini                 ``usageMetadata``                                 running totals: last wins
bedrock-converse       ``usage``                                         ``metadata`` event
ollama                 the final ``done`` object                         NDJSON; last line
openai-images          ``usage`` (GPT image models), ``data``           ``image_*.completed``
openai-transcription   ``usage`` (tokens or duration)                    ``transcript.text.done``
openai-speech          (audio bytes; ``usage`` of the SSE form)          ``speech.audio.done``
=====================  ================================================  ============================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Literal, Protocol

from tokenward.core.dialects.anthropic_messages import (
    AnthropicMessagesStream,
    response_facts_anthropic,
    usage_facts_anthropic,
    usage_from_anthropic,
)
from tokenward.core.dialects.base import ResponseFacts
from tokenward.core.dialects.bedrock_converse import (
    BedrockConverseStream,
    response_facts_bedrock_converse,
    usage_from_bedrock_converse,
)
from tokenward.core.dialects.gemini import GeminiStream, response_facts_gemini, usage_from_gemini
from tokenward.core.dialects.ollama import OllamaStream, response_facts_ollama, usage_from_ollama
from tokenward.core.dialects.openai_chat import (
    OpenAIChatStream,
    response_facts_openai_chat,
    usage_from_openai_chat,
)
from tokenward.core.dialects.openai_media import (
    MediaStream,
    response_facts_openai_images,
    response_facts_openai_speech,
    response_facts_openai_transcription,
    usage_from_openai_images,
    usage_from_openai_speech,
    usage_from_openai_transcription,
)
from tokenward.core.dialects.openai_responses import (
    OpenAIResponsesStream,
    response_facts_openai_responses,
    usage_from_openai_responses,
)
from tokenward.core.usage import Usage
from tokenward.errors import ValidationError

__all__ = [
    "DIALECTS",
    "Dialect",
    "ResponseFacts",
    "StreamReader",
    "response_facts",
    "stream_reader",
    "usage_facts",
    "usage_from",
]

Dialect = Literal[
    "openai-chat",
    "openai-compatible",
    "openai-responses",
    "anthropic-messages",
    "gemini",
    "bedrock-converse",
    "ollama",
    "openai-images",
    "openai-transcription",
    "openai-speech",
]
DIALECTS: tuple[str, ...] = (
    "openai-chat",
    "openai-compatible",
    "openai-responses",
    "anthropic-messages",
    "gemini",
    "bedrock-converse",
    "ollama",
    "openai-images",
    "openai-transcription",
    "openai-speech",
)


class StreamReader(Protocol):
    """What every dialect's stream reader offers."""

    model: str | None
    response_id: str | None
    finish_reason: str | None

    def feed(self, event: Mapping[str, Any]) -> str:
        """Take one decoded event; return the generated text it carries."""
        ...

    @property
    def usage(self) -> Usage | None:
        """The provider's usage so far, or None."""
        ...


_USAGE: dict[str, Callable[[Mapping[str, Any] | None], Usage]] = {
    "openai-chat": usage_from_openai_chat,
    "openai-compatible": usage_from_openai_chat,
    "openai-responses": usage_from_openai_responses,
    "anthropic-messages": usage_from_anthropic,
    "gemini": usage_from_gemini,
    "bedrock-converse": usage_from_bedrock_converse,
    "ollama": usage_from_ollama,
    "openai-images": usage_from_openai_images,
    "openai-transcription": usage_from_openai_transcription,
    "openai-speech": usage_from_openai_speech,
}
_FACTS: dict[str, Callable[[Mapping[str, Any]], ResponseFacts]] = {
    "openai-chat": response_facts_openai_chat,
    "openai-compatible": response_facts_openai_chat,
    "openai-responses": response_facts_openai_responses,
    "anthropic-messages": response_facts_anthropic,
    "gemini": response_facts_gemini,
    "bedrock-converse": response_facts_bedrock_converse,
    "ollama": response_facts_ollama,
    "openai-images": response_facts_openai_images,
    "openai-transcription": response_facts_openai_transcription,
    "openai-speech": response_facts_openai_speech,
}
_READERS: dict[str, Callable[[], StreamReader]] = {
    "openai-chat": OpenAIChatStream,
    "openai-compatible": OpenAIChatStream,
    "openai-responses": OpenAIResponsesStream,
    "anthropic-messages": AnthropicMessagesStream,
    "gemini": GeminiStream,
    "bedrock-converse": BedrockConverseStream,
    "ollama": OllamaStream,
    "openai-images": lambda: MediaStream("openai-images"),
    "openai-transcription": lambda: MediaStream("openai-transcription"),
    "openai-speech": lambda: MediaStream("openai-speech"),
}


def _check(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise ValidationError(f"unknown dialect {dialect!r}; known: {', '.join(DIALECTS)}", field="dialect")


def usage_from(dialect: str, raw: Mapping[str, Any] | None) -> Usage:
    """Normalise a provider usage object of the given dialect.

    Raises:
        ValidationError: unknown dialect, or a malformed count.
    """
    _check(dialect)
    return _USAGE[dialect](raw)


def usage_facts(dialect: str, raw: Mapping[str, Any] | None) -> ResponseFacts:
    """Read a usage object by itself: its counts, and the price facts it carries (Anthropic's
    ``usage.service_tier``, ``usage.speed`` and ``usage.inference_geo``; the other dialects keep
    those outside their usage object).

    Raises:
        ValidationError: unknown dialect, or a malformed count.
    """
    _check(dialect)
    if dialect == "anthropic-messages":
        return usage_facts_anthropic(raw)
    return ResponseFacts(usage=_USAGE[dialect](raw))


def response_facts(dialect: str, response: Mapping[str, Any]) -> ResponseFacts:
    """Read a whole response of the given dialect: usage, served model, tier, tool calls run.

    Raises:
        ValidationError: unknown dialect, a response that is not an object, or a malformed count.
    """
    _check(dialect)
    if not isinstance(response, Mapping):
        raise ValidationError("a response must be a JSON object", field="response")
    return _FACTS[dialect](response)


def stream_reader(dialect: str) -> StreamReader:
    """A fresh stream reader for the dialect.

    Raises:
        ValidationError: unknown dialect.
    """
    _check(dialect)
    return _READERS[dialect]()


def stream_facts(reader: StreamReader) -> ResponseFacts:
    """The facts a finished stream told (usage, model, tier, speed, geography, reported cost)."""
    cost = getattr(reader, "reported_cost_usd", None)
    return ResponseFacts(
        usage=reader.usage,
        model=reader.model,
        service_tier=getattr(reader, "service_tier", None),
        response_id=reader.response_id,
        finish_reason=reader.finish_reason,
        reported_cost_usd=cost if isinstance(cost, Decimal) else None,
        speed=getattr(reader, "speed", None),
        inference_geo=getattr(reader, "inference_geo", None),
    )
