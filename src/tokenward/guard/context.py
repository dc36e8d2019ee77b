"""Stored context a call continues, held as prompt tokens from what the ledger recorded.

A Responses call with ``previous_response_id`` or ``conversation`` is billed the stored turns as
input, and a Gemini call with ``cachedContent`` the cached tokens; none of them is in the body
the guard estimates. The ledger knows what each earlier call cost: its usage event carries the
response id (``metadata.response_id``), the conversation it added to (``metadata.conversation``)
and, for a cached content the gateway created, its name (``metadata.cached_content``). So:

* a response ``R`` stands for ``R``'s input plus its output: its input already holds every turn
  before it (a chain is billed whole at each step), and its output is the turn it adds; the
  conversation's latest response stands for the conversation the same way;
* a cached content stands for the tokens its creation reported (``usageMetadata.totalTokenCount``);
* a conversation made (``POST /v1/conversations``) or grown (``POST
  /v1/conversations/{id}/items``) through tokenward is recorded as an event of no charge whose
  ``metadata.context_tokens`` is the estimate of its items so far (:func:`conversation_growth`).

Context the ledger never saw follows ``GuardSettings.unknown_context``: ``"deny"`` refuses the
call (:class:`~tokenward.errors.ValidationError` naming the field: a 400 at the gateway), a
number holds that many tokens for it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from tokenward.core.estimate import estimate_openai_responses
from tokenward.core.events import UsageEvent
from tokenward.errors import ValidationError
from tokenward.guard.flow import GuardSettings
from tokenward.guard.wire.endpoints.billable import ContextRef

__all__ = ["context_total", "conversation_growth", "conversation_size", "event_tokens", "looked_up"]

_CONVERSATIONS = re.compile(r"/conversations(?:/([^/]+)/items)?/?$")


def event_tokens(event: UsageEvent, kind: str) -> int | None:
    """The prompt tokens ``event`` stands for when a later call continues it: a cached content's
    size (its input), else a response's input plus output; None when its usage says neither."""
    recorded = event.metadata.get("context_tokens")
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        return recorded
    usage = event.usage
    if kind == "cached_content":
        return usage.input_tokens
    if usage.input_tokens is not None and usage.output_tokens is not None:
        return usage.input_tokens + usage.output_tokens
    total = event.charged.get("total_tokens")
    return int(total) if isinstance(total, Decimal) else None


def looked_up(ref: ContextRef, event: UsageEvent | None, settings: GuardSettings) -> int:
    """The tokens held for ``ref``, given the event the ledger found for it (or None).

    Raises:
        ValidationError: the ledger does not know it and ``settings.unknown_context`` is
            ``"deny"`` (the field is named).
    """
    tokens = event_tokens(event, ref.kind) if event is not None else None
    if tokens is not None:
        return tokens
    policy = settings.unknown_context
    if isinstance(policy, int) and not isinstance(policy, bool):
        return policy
    raise ValidationError(
        f"{ref.field} {ref.id!r} is not known to this tokenward ledger, so the stored context it "
        "adds to the prompt cannot be held for; send the context in the request instead, or set "
        "defaults.unknown_context to a number of tokens to hold for such calls",
        field=ref.field,
    )


def context_total(amounts: Iterable[int]) -> int:
    """The stored context a call continues, in tokens: the largest of its references (a
    ``previous_response_id`` inside a ``conversation`` names the same turns twice)."""
    return max(amounts, default=0)


def conversation_growth(path: str, request: Any, response: Any) -> tuple[str, int, bool] | None:
    """What a successful ``POST .../conversations`` (made) or ``POST
    .../conversations/{id}/items`` (grown) did: ``(conversation id, tokens its new items are
    estimated at, whether it is new)``; None for any other path or an answer without an id.

    Items are estimated as Responses input (``o200k_base`` and the chat framing, as a call's
    prompt is).
    """
    found = _CONVERSATIONS.search(path)
    if found is None:
        return None
    items = request.get("items") if isinstance(request, Mapping) else None
    added = estimate_openai_responses({"input": items}, "gpt-4o").input_tokens if items else 0
    if found.group(1) is not None:
        return found.group(1), added, False
    conversation = response.get("id") if isinstance(response, Mapping) else None
    return (conversation, added, True) if isinstance(conversation, str) and conversation else None


def conversation_size(new: bool, added: int, known: UsageEvent | None) -> int | None:
    """The tokens a conversation stands for after ``added`` tokens of items: ``added`` for a new
    one, else what its latest event (``known``) stood for plus ``added``; None when it is not new
    and the ledger never saw it (its size stays unknown)."""
    if new:
        return added
    before = event_tokens(known, "conversation") if known is not None else None
    return None if before is None else before + added
