"""What every dialect reads out of a whole response, besides its usage object.

A response carries facts outside ``usage`` that change the price: the model that actually served
the call (an alias resolves to a dated snapshot), the service tier that served it (OpenAI's
``service_tier`` on the response object: the tier the *response* names is the one billed, never
the one requested), server-side tool calls that actually ran (OpenAI Responses ``web_search_call``
output items), and sometimes a provider-reported cost (OpenRouter's ``usage.cost``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from tokenward.core.usage import Usage

__all__ = ["ResponseFacts", "normalise_tier", "reported_cost"]


@dataclass(frozen=True, slots=True)
class ResponseFacts:
    """Price-relevant facts of one whole response (or of a finished stream).

    Attributes:
        usage: the normalised usage, or None when the response carried none.
        model: the model the response names (the served snapshot), or None.
        service_tier: the tier that served the call, normalised by :func:`normalise_tier`
            (``"default"``, ``"flex"``, ``"priority"``, ``"batch"``...), or None when not stated.
        response_id: the provider's response id.
        finish_reason: why generation stopped, in the provider's words.
        reported_cost_usd: a cost the provider itself reported (USD), or None; never trusted
            over tokens x price unless configured, and never when it is zero or negative.
        speed: the speed that served the call (Anthropic ``usage.speed``: ``"fast"``,
            ``"standard"``), or None when not stated.
        inference_geo: where inference ran (Anthropic ``usage.inference_geo``: ``"us"``,
            ``"global"``), or None when not stated.
    """

    usage: Usage | None
    model: str | None = None
    service_tier: str | None = None
    response_id: str | None = None
    finish_reason: str | None = None
    reported_cost_usd: Decimal | None = None
    speed: str | None = None
    inference_geo: str | None = None


_TIER_ALIASES = {"standard": "default", "on_demand": "default", "ondemand": "default"}


def normalise_tier(value: Any) -> str | None:
    """A provider's service-tier label in one spelling, or None.

    OpenAI names ``default``/``flex``/``priority``/``scale``; Anthropic's ``usage.service_tier``
    says ``standard``/``priority``/``batch``; Bedrock writes ``{"type": "flex"}``. ``standard`` and
    on-demand mean the default tier.
    """
    if isinstance(value, Mapping):
        value = value.get("type")
    if not isinstance(value, str) or not value.strip():
        return None
    tier = value.strip().lower()
    return _TIER_ALIASES.get(tier, tier)


def reported_cost(raw: Any) -> Decimal | None:
    """A provider-reported cost in USD (``usage.cost`` of OpenRouter and some proxies), or None.

    Floats are read through their shortest decimal text (``Decimal(str(x))``), never as binary.
    """
    if not isinstance(raw, Mapping):
        return None
    value = raw.get("cost")
    if value is None or isinstance(value, bool):
        return None
    try:
        cost = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return cost if cost.is_finite() else None


def text_of(value: Any) -> str:
    """``value`` when it is a string, else ``""``."""
    return value if isinstance(value, str) else ""
