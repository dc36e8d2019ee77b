"""Price modifiers: what a request asks for and a response reports that changes the rates.

A call's price is its model's row, changed by facts outside the token counts:

* **speed** (Anthropic ``speed: "fast"``, reported back in ``usage.speed``): fast mode has base
  rates of its own, and the prompt-caching multipliers apply on top of them
  (https://platform.claude.com/docs/en/build-with-claude/fast-mode#pricing and
  https://platform.claude.com/docs/en/about-claude/pricing#fast-mode-pricing, read 2026-12-07).
  The speed *served* (``usage.speed``) is billed, never the one requested.
* **inference geography** (Anthropic ``inference_geo``, reported back in ``usage.inference_geo``):
  US-only inference (``"us"``) costs 1.1x on every token class (input, output, cache writes and
  reads) of Claude Opus 4.6, Sonnet 4.6 and later models; earlier models are billed at the
  standard rate, and ``"global"`` (the default) changes nothing
  (https://platform.claude.com/docs/en/build-with-claude/data-residency and
  https://support.claude.com/en/articles/15422948-enable-us-only-inference-for-your-organization,
  read 2026-12-07).
* **cache-write lifetime** the request asked for (Anthropic ``cache_control.ttl``: ``"5m"``, the
  default, or ``"1h"``): a usage that reports cache writes without the 5-minute/1-hour split is
  priced at that lifetime (https://platform.claude.com/docs/en/build-with-claude/prompt-caching,
  read 2026-12-07).
* **search fee unit** for Grounding with Google Search: Gemini 3 bills each unique, non-empty
  search query; Gemini 2.x (and 1.x) bills one fee per grounded prompt, however many queries ran
  (https://ai.google.dev/gemini-api/docs/pricing, "Grounding with Google Search";
  https://ai.google.dev/gemini-api/docs/google-search: "we ignore the empty web search queries
  when counting unique queries"; read 2026-12-07).

Everything here is pure: the functions take names and values and return rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from tokenward.errors import ValidationError

__all__ = [
    "CACHE_TTLS",
    "US_ONLY_MULTIPLIER",
    "MediaRequest",
    "RequestFacts",
    "billable_searches",
    "builtin_geo_multiplier",
    "cache_ttl",
    "claude_version",
    "normalise_geo",
    "normalise_speed",
    "vertex_uplifted",
]

CACHE_TTLS = ("5m", "1h")
"""Cache-write lifetimes Anthropic prices apart (``cache_control.ttl``)."""

US_ONLY_MULTIPLIER = Decimal("1.1")
"""Anthropic's multiplier on every token class for ``inference_geo: "us"`` (Claude 4.6 and later;
https://platform.claude.com/docs/en/build-with-claude/data-residency, read 2026-12-07)."""

_GEO_FROM = (4, 6)  # Claude Opus 4.6 / Sonnet 4.6: the first models US-only inference is billed on
_CLAUDE = re.compile(r"claude-(?:[a-z]+-)?(\d+)(?:[-.](\d{1,2})(?!\d))?")
_OLD_GEMINI = re.compile(r"(?:^|/)gemini-(?:1|2)(?:[.-]|$)")


@dataclass(frozen=True, slots=True)
class MediaRequest:
    """What an images or audio request asks for, read before the call.

    Attributes:
        kind: ``"image"``, ``"transcription"`` or ``"speech"``.
        images: images asked for (``n``, 1 by default).
        image_size / image_quality: as the request wrote them (None when it did not).
        partial_images: streamed partial images asked for, per image.
        audio_ms: the uploaded audio's duration in milliseconds (transcription).
        characters: characters of the text to speak (speech).
    """

    kind: str
    images: int = 0
    image_size: str | None = None
    image_quality: str | None = None
    partial_images: int = 0
    audio_ms: int | None = None
    characters: int = 0


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a request asks for that changes the rates it can be billed at (read before the call).

    Attributes:
        speed: the speed asked for (``"fast"``), or None for the standard speed.
        inference_geo: the inference geography asked for (``"us"``, ``"global"``), or None when the
            request does not say.
        may_write_cache: the request may write a prompt cache (Anthropic ``cache_control``
            markers; OpenAI's automatic caching, billed from GPT-5.6 on).
        cache_write_ttl: the longest cache-write lifetime the request asks for (``"5m"`` or
            ``"1h"``), or None when it asks for none or does not say (OpenAI).
        media: what an images or audio request asks for (images, their size and quality, the
            audio's duration, the characters to speak), or None for every other endpoint.
        service_tier: the service tier the request names (``"priority"``, ``"flex"``,
            ``"default"``; normalised), or None when it names none or ``"auto"``: the hold then
            takes the tier its upstream is configured to serve at, else the model's dearest.
        server_tools: the server-side tools the request enables that bill per use, as
            ``(kind, max_uses)`` pairs: ``kind`` is ``"web_search"`` (a fee per search, its
            results added to the input) or ``"web_fetch"`` (its results added to the input);
            ``max_uses`` is the request's own cap, or None when it sets none.
    """

    speed: str | None = None
    inference_geo: str | None = None
    may_write_cache: bool = False
    cache_write_ttl: str | None = None
    media: MediaRequest | None = None
    service_tier: str | None = None
    server_tools: tuple[tuple[str, int | None], ...] = ()


def normalise_speed(value: object) -> str | None:
    """A speed label in one spelling (``"fast"``, ``"standard"``), or None when absent."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().lower()


def normalise_geo(value: object) -> str | None:
    """An inference-geography label in one spelling (``"us"``, ``"global"``), or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip().lower()


def cache_ttl(value: object, where: str = "ttl") -> str:
    """A cache-write lifetime, ``"5m"`` or ``"1h"``.

    Raises:
        ValidationError: any other value (the field is named).
    """
    if isinstance(value, str) and value.strip().lower() in CACHE_TTLS:
        return value.strip().lower()
    raise ValidationError(f"{where} must be one of {', '.join(CACHE_TTLS)}, got {value!r}", field=where)


def claude_version(model: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a Claude model id, or None when it is not one.

    ``claude-opus-4-6`` gives (4, 6), ``claude-3-5-sonnet-20241022`` (3, 5),
    ``claude-sonnet-4-20250514`` (4, 0) (a date is not a minor version), ``claude-fable-5`` (5, 0).
    """
    found = _CLAUDE.search(model.lower())
    if found is None:
        return None
    return int(found.group(1)), int(found.group(2) or 0)


def builtin_geo_multiplier(model: str, geo: str | None) -> Decimal | None:
    """The documented multiplier for inference geography ``geo`` on ``model``, or None when it is
    not known (a geography other than ``global`` on a model that is not Claude).

    ``global`` or no geography: 1. ``us`` on Claude: 1.1 from Claude 4.6 on (and on Claude ids
    whose version cannot be read: the parameter exists only on 4.6 and later), 1 before.
    """
    geo = normalise_geo(geo)
    if geo is None or geo == "global":
        return Decimal(1)
    if geo != "us" or "claude" not in model.lower():
        return None
    version = claude_version(model)
    if version is not None and version < _GEO_FROM:
        return Decimal(1)
    return US_ONLY_MULTIPLIER


def vertex_uplifted(model: str) -> bool:
    """Whether Claude ``model`` costs more on a Vertex AI regional endpoint than on the global one:
    from Claude Sonnet 4.5 on, 10 % more
    (:data:`~tokenward.core.pricebook.VERTEX_REGIONAL_UPLIFT`); a Claude id whose version cannot be
    read is taken as a newer one (the dearer reading). Not Claude: False."""
    if "claude" not in model.lower():
        return False
    version = claude_version(model)
    return version is None or version >= (4, 5)


def per_grounded_prompt(model: str) -> bool:
    """Whether ``model`` bills Grounding with Google Search per grounded prompt (Gemini 1.x and
    2.x) rather than per search query (Gemini 3 and later)."""
    return _OLD_GEMINI.search(model.lower()) is not None


def billable_searches(model: str, searches: int) -> int:
    """The search fees a call of ``model`` is billed for, given the unique non-empty search queries
    (or the searches that ran, for other providers) it reported: one per grounded prompt on
    Gemini 1.x and 2.x, one per query otherwise."""
    if searches <= 0:
        return 0
    return 1 if per_grounded_prompt(model) else searches
