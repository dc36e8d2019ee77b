"""The fake's OpenAI conversations: ``/v1/conversations`` (create, retrieve, delete, add items).

Wire format (https://platform.openai.com/docs/api-reference/conversations, read 2026-12-08):

* ``POST /v1/conversations`` with optional ``items`` (Responses input items, at most 20) and
  ``metadata``: ``{"id": "conv_...", "object": "conversation", "created_at", "metadata"}``;
* ``GET`` and ``DELETE /v1/conversations/{id}`` (``{"id", "object": "conversation.deleted",
  "deleted": true}``), a 404 for an unknown id;
* ``POST /v1/conversations/{id}/items`` with ``items``: ``{"object": "list", "data": [...]}``.

The items are counted as Responses input items (:mod:`tokenward.fake.openai_responses`: 4 per item
plus its text) and become the conversation's stored turns, billed as input by the next
``/v1/responses`` call naming the conversation (:mod:`tokenward.fake.stored`).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from tokenward.errors import ValidationError
from tokenward.fake import openai_chat
from tokenward.fake.counting import MESSAGE_OVERHEAD
from tokenward.fake.openai_responses import item_pieces
from tokenward.fake.stored import StoredContext

__all__ = ["add_items", "create", "delete", "retrieve"]


def _items_tokens(body: Any, required: bool) -> tuple[list[dict[str, Any]], int]:
    items = body.get("items") if isinstance(body, dict) else None
    if items is None and not required:
        return [], 0
    if not isinstance(items, list) or (required and not items):
        raise ValidationError("items: expected an array of input items", field="items")
    return items, sum(MESSAGE_OVERHEAD + item_pieces(item, f"items[{i}]") for i, item in enumerate(items))


def _listed(items: list[dict[str, Any]], conversation: str) -> list[dict[str, Any]]:
    return [{"id": f"msg_{conversation}_{i}", **item} for i, item in enumerate(items)]


def create(stored: StoredContext, body: Any) -> Response:
    """A new conversation holding the body's ``items``."""
    if body is not None and not isinstance(body, dict):
        return openai_chat.error_response(400, "the body must be a JSON object")
    try:
        _, tokens = _items_tokens(body or {}, required=False)
    except ValidationError as exc:
        return openai_chat.error_response(400, str(exc), exc.field)
    conversation = stored.create_conversation(tokens)
    metadata = (body or {}).get("metadata") or {}
    return JSONResponse({"id": conversation, "object": "conversation", "created_at": 0, "metadata": metadata})


def retrieve(stored: StoredContext, conversation: str) -> Response:
    """A conversation, or 404."""
    if stored.conversation(conversation) is None:
        return _missing(conversation)
    return JSONResponse({"id": conversation, "object": "conversation", "created_at": 0, "metadata": {}})


def delete(stored: StoredContext, conversation: str) -> Response:
    """Forget a conversation, or 404."""
    if not stored.delete_conversation(conversation):
        return _missing(conversation)
    return JSONResponse({"id": conversation, "object": "conversation.deleted", "deleted": True})


def add_items(stored: StoredContext, conversation: str, body: Any) -> Response:
    """Add the body's ``items`` to a conversation, or 404."""
    try:
        items, tokens = _items_tokens(body, required=True)
    except ValidationError as exc:
        return openai_chat.error_response(400, str(exc), exc.field)
    if not stored.add_items(conversation, tokens):
        return _missing(conversation)
    return JSONResponse({"object": "list", "data": _listed(items, conversation), "has_more": False})


def _missing(conversation: str) -> Response:
    return openai_chat.error_response(404, f"Conversation with id '{conversation}' not found.")
