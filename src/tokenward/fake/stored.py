"""What the fake provider keeps between requests, so stored context is billed as the providers do.

* **Responses** it answered, by id, and **conversations**: a request with
  ``previous_response_id`` is billed the stored response's input plus its output on top of its
  own prompt (OpenAI: "all previous input tokens for responses in the chain are billed as input
  tokens", https://developers.openai.com/api/docs/guides/conversation-state, read 2026-12-08); a
  request with ``conversation`` is billed the conversation's turns so far (the last response's
  input plus output), and adds its own. Conversations are made with ``POST /v1/conversations``
  (its ``items`` are its first turns) and grown with ``POST /v1/conversations/{id}/items``
  (:mod:`tokenward.fake.conversations`). An unknown ``previous_response_id`` is a 400
  (``previous_response_not_found``); an unknown conversation id starts empty.
* Gemini **cached contents** (``POST /v1beta/cachedContents``): their prompt count, added to the
  prompt of a ``generateContent`` that names them in ``cachedContent`` and reported as
  ``cachedContentTokenCount`` (https://ai.google.dev/gemini-api/docs/caching, read 2026-12-08).

The memory is bounded (oldest entries dropped past ``limit``) and lives as long as the app.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenward.errors import ValidationError

__all__ = ["CachedContent", "StoredContext", "conversation_of"]


def conversation_of(body: Mapping[str, Any]) -> str | None:
    """The conversation id a Responses request names (a string or ``{"id": ...}``), or None."""
    value = body.get("conversation")
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class CachedContent:
    """One Gemini cached content.

    Attributes:
        name: ``cachedContents/<id>``.
        model: the model it was made for (``models/...``).
        tokens: its prompt count (``usageMetadata.totalTokenCount``).
        display_name: the ``displayName`` given, if any.
        ttl: the ``ttl`` given (``"3600s"`` by default), echoed.
    """

    name: str
    model: str
    tokens: int
    display_name: str | None = None
    ttl: str = "3600s"

    def to_dict(self) -> dict[str, Any]:
        """The ``CachedContent`` resource as Google returns it (contents are not returned)."""
        out: dict[str, Any] = {
            "name": self.name,
            "model": self.model,
            "createTime": "2025-01-01T00:00:00Z",
            "updateTime": "2025-01-01T00:00:00Z",
            "expireTime": "2025-01-01T01:00:00Z",
            "ttl": self.ttl,
            "usageMetadata": {"totalTokenCount": self.tokens},
        }
        if self.display_name:
            out["displayName"] = self.display_name
        return out


class StoredContext:
    """The fake's memory of responses, conversations and cached contents (thread-safe)."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._responses: OrderedDict[str, int] = OrderedDict()
        self._conversations: OrderedDict[str, int] = OrderedDict()
        self._caches: OrderedDict[str, CachedContent] = OrderedDict()
        self._ids = itertools.count(1)

    def continued(self, body: Mapping[str, Any]) -> int:
        """The stored tokens a Responses request continues (billed as input).

        Raises:
            ValidationError: ``previous_response_id`` names a response the fake never gave.
        """
        previous = body.get("previous_response_id")
        with self._lock:
            total = 0
            if previous is not None:
                if not isinstance(previous, str) or previous not in self._responses:
                    raise ValidationError(
                        f"Previous response with id '{previous}' not found.", field="previous_response_id"
                    )
                total = self._responses[previous]
            conversation = conversation_of(body)
            if conversation is not None:
                total = max(total, self._conversations.get(conversation, 0))
            return total

    def remember(self, response_id: str, body: Mapping[str, Any], tokens: int) -> None:
        """Keep a response's input plus output (``tokens``), and its conversation's new size."""
        with self._lock:
            _put(self._responses, response_id, tokens, self.limit)
            conversation = conversation_of(body)
            if conversation is not None:
                _put(self._conversations, conversation, tokens, self.limit)

    def create_conversation(self, tokens: int) -> str:
        """A new conversation holding ``tokens`` of items; its id."""
        with self._lock:
            conversation = f"conv_fake_{next(self._ids):06d}"
            _put(self._conversations, conversation, tokens, self.limit)
            return conversation

    def add_items(self, conversation: str, tokens: int) -> bool:
        """Grow a conversation by ``tokens`` of items; False when it does not exist."""
        with self._lock:
            if conversation not in self._conversations:
                return False
            _put(self._conversations, conversation, self._conversations[conversation] + tokens, self.limit)
            return True

    def conversation(self, conversation: str) -> int | None:
        """A conversation's stored tokens, or None when it does not exist."""
        with self._lock:
            return self._conversations.get(conversation)

    def delete_conversation(self, conversation: str) -> bool:
        """Forget a conversation; whether it existed."""
        with self._lock:
            return self._conversations.pop(conversation, None) is not None

    def create_cache(
        self, model: str, tokens: int, display_name: str | None = None, ttl: str | None = None
    ) -> CachedContent:
        """Store a new cached content of ``tokens`` prompt tokens."""
        with self._lock:
            cache = CachedContent(
                f"cachedContents/fake-{next(self._ids):06d}", model, tokens, display_name, ttl or "3600s"
            )
            _put(self._caches, cache.name, cache, self.limit)
            return cache

    def cache(self, name: str) -> CachedContent | None:
        """A cached content by name (``cachedContents/<id>``), or None."""
        with self._lock:
            return self._caches.get(name)

    def caches(self) -> list[CachedContent]:
        """Every cached content, oldest first."""
        with self._lock:
            return list(self._caches.values())

    def delete_cache(self, name: str) -> bool:
        """Forget a cached content; whether it existed."""
        with self._lock:
            return self._caches.pop(name, None) is not None


def _put(store: OrderedDict[str, Any], key: str, value: Any, limit: int) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > limit:
        store.popitem(last=False)
