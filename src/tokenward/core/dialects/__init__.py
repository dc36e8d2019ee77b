"""Provider wire formats ("dialects"): usage normalisation and stream readers, one module each.

``usage_from(dialect, raw)`` normalises a usage object; ``stream_reader(dialect)`` returns a
reader that takes a stream's decoded events one by one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

from tokenward.core.dialects.anthropic_messages import AnthropicMessagesStream, usage_from_anthropic
from tokenward.core.dialects.openai_chat import OpenAIChatStream, usage_from_openai_chat
from tokenward.core.usage import Usage
from tokenward.errors import ValidationError

__all__ = ["DIALECTS", "Dialect", "StreamReader", "stream_reader", "usage_from"]

Dialect = Literal["openai-chat", "openai-compatible", "anthropic-messages"]
DIALECTS: tuple[str, ...] = ("openai-chat", "openai-compatible", "anthropic-messages")


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


def _check(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise ValidationError(f"unknown dialect {dialect!r}; known: {', '.join(DIALECTS)}", field="dialect")


def usage_from(dialect: str, raw: Mapping[str, Any] | None) -> Usage:
    """Normalise a provider usage object of the given dialect.

    Raises:
        ValidationError: unknown dialect, or a malformed count.
    """
    _check(dialect)
    if dialect == "anthropic-messages":
        return usage_from_anthropic(raw)
    return usage_from_openai_chat(raw)


def stream_reader(dialect: str) -> StreamReader:
    """A fresh stream reader for the dialect.

    Raises:
        ValidationError: unknown dialect.
    """
    _check(dialect)
    if dialect == "anthropic-messages":
        return AnthropicMessagesStream()
    return OpenAIChatStream()
