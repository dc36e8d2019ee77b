"""What a request asks for that is billed beyond its visible prompt and output bound.

Pure readers of request bodies, shared by the endpoints:

* the **service tier** it names (:func:`requested_tier`): OpenAI ``service_tier`` (``auto``,
  ``default``, ``flex``, ``scale``, ``priority``; omitted means ``auto``, served at the tier the
  project is configured for: https://platform.openai.com/docs/api-reference/responses/create,
  read 2026-12-08) and Anthropic ``service_tier`` (``auto`` or ``standard_only``:
  https://docs.anthropic.com/en/api/service-tiers, read 2026-12-08);
* the **server-side tools** it enables, which the provider bills per use and whose results it
  adds to the prompt: OpenAI Responses ``web_search`` (and ``web_search_preview``) tools, capped by
  ``max_tool_calls``, and Chat Completions ``web_search_options`` (search models); Anthropic
  ``web_search_*`` and ``web_fetch_*`` tools, capped by ``max_uses``
  (https://docs.anthropic.com/en/docs/agents-and-tools/tool-use/web-search-tool and
  .../web-fetch-tool, read 2026-12-08: searches cost a fee each, results of both count as input
  tokens); Gemini ``google_search`` / ``google_search_retrieval`` grounding and ``url_context``
  (https://ai.google.dev/gemini-api/docs/google-search, read 2026-12-08);
* the **stored context** it continues (:class:`ContextRef`): OpenAI Responses
  ``previous_response_id`` and ``conversation`` (the stored turns are billed as input: "all
  previous input tokens for responses in the chain are billed as input tokens",
  https://developers.openai.com/api/docs/guides/conversation-state, read 2026-12-08) and Gemini
  ``cachedContent`` (its tokens are part of ``promptTokenCount``:
  https://ai.google.dev/gemini-api/docs/caching, read 2026-12-08).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tokenward.core.dialects.base import normalise_tier

__all__ = [
    "ContextRef",
    "anthropic_server_tools",
    "gemini_server_tools",
    "openai_server_tools",
    "positive_int",
    "requested_tier",
]

_WEB_SEARCH_TYPES = ("web_search", "web_search_preview")


@dataclass(frozen=True, slots=True)
class ContextRef:
    """Stored context a request continues, to be held as prompt tokens.

    Attributes:
        field: the request field naming it (``previous_response_id``, ``conversation``,
            ``cachedContent``), for the error when it is unknown.
        kind: the event metadata key the ledger finds it under (``response_id``,
            ``conversation``, ``cached_content``).
        id: its id as the provider wrote it.
    """

    field: str
    kind: str
    id: str


def positive_int(value: Any) -> int | None:
    """``value`` as a whole number >= 1 (proto3 JSON also writes int32 as a decimal string, so
    ``"8"`` is 8), or None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return value if isinstance(value, int) and value >= 1 else None


def requested_tier(value: Any) -> str | None:
    """The service tier a request names, normalised (``standard_only`` is the default tier), or
    None when it names none or ``auto`` (the provider picks: held at the dearest it may pick)."""
    if isinstance(value, str) and value.strip().lower() == "standard_only":
        return "default"
    tier = normalise_tier(value)
    return None if tier in (None, "auto") else tier


def openai_server_tools(body: Mapping[str, Any]) -> tuple[tuple[str, int | None], ...]:
    """Web search in an OpenAI request: a ``web_search*`` tool (Responses; its cap is
    ``max_tool_calls``, which bounds every built-in tool call of the response) or
    ``web_search_options`` (Chat Completions search models, no cap of their own)."""
    out: list[tuple[str, int | None]] = []
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if isinstance(kind, str) and kind.startswith(_WEB_SEARCH_TYPES):
            out.append(("web_search", positive_int(body.get("max_tool_calls"))))
            break
    if isinstance(body.get("web_search_options"), Mapping) and not out:
        out.append(("web_search", None))
    return tuple(out)


def anthropic_server_tools(body: Mapping[str, Any]) -> tuple[tuple[str, int | None], ...]:
    """Anthropic server tools billed per use: ``web_search_*`` and ``web_fetch_*``, each with its
    ``max_uses``."""
    out: list[tuple[str, int | None]] = []
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        kind = tool.get("type") if isinstance(tool, Mapping) else None
        if not isinstance(kind, str):
            continue
        for prefix in ("web_search", "web_fetch"):
            if kind.startswith(prefix + "_"):
                out.append((prefix, positive_int(tool.get("max_uses"))))
    return tuple(out)


def gemini_server_tools(body: Mapping[str, Any]) -> tuple[tuple[str, int | None], ...]:
    """Gemini grounding: ``google_search`` / ``google_search_retrieval`` (a search fee, results in
    the prompt) and ``url_context`` (fetched pages in the prompt); no cap of their own."""
    out: list[tuple[str, int | None]] = []
    tools = body.get("tools")
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, Mapping):
            continue
        keys = set(tool)
        if keys & {"google_search", "googleSearch", "google_search_retrieval", "googleSearchRetrieval"}:
            out.append(("web_search", None))
        if keys & {"url_context", "urlContext"}:
            out.append(("web_fetch", None))
    return tuple(out)
