"""Turning a usage into money: exact, per token class, and never a silent zero.

Rates are USD per 1,000,000 tokens (``Decimal``); per-call fees are USD per call. A rate can be
tiered: above a threshold of *input tokens* (the whole prompt, cached and written tokens included)
the tier's rate applies to every token of that class in the request, not only to the tokens above
the threshold (the "cliff" rule the providers document, e.g. Gemini's and Claude's long-context
prices: https://ai.google.dev/gemini-api/docs/pricing, https://docs.anthropic.com/en/docs/about-claude/pricing).

Cost = Σ tokens × rate ÷ 1,000,000 over the token classes, with uncached input = input − cache
reads − cache writes, plus fees × calls actually made. A token class with a non-zero count and no
rate makes the cost *unknown* (``Cost.total_usd is None``) and is named in ``Cost.unpriced``.

Cache writes are never priced as input: a write with no write rate is unpriced (OpenAI bills
writes at 1.25x input from GPT-5.6 on and reports them in ``cache_write_tokens``; a row that does
not know that rate cannot price them,
https://developers.openai.com/api/docs/guides/prompt-caching, read 2026-12-07). Writes reported
without their 5-minute/1-hour split, on a row that prices the two lifetimes apart, are priced at
the lifetime the request asked for (``cache_write_ttl``), at the 5-minute rate when it is unknown,
and the cost is marked estimated either way (:attr:`Cost.assumed` says which).

Web-search fees are charged per billable search: one per grounded prompt on Gemini 1.x/2.x, one per
unique query otherwise (:func:`~tokenward.core.modifiers.billable_searches`).

A row resolved for a modifier it cannot price (a fast-mode call on a row without fast rates, a
geography without a known multiplier) carries it in :attr:`Price.unpriced`: the cost is unknown
and names it.

Per-unit prices (images, audio minutes, characters: DALL·E, ``whisper-1``, ``tts-1``) are USD per
image (by quality and size), per minute of input audio and per 1,000,000 input characters. A row
with such prices and no token rates bills no tokens: its token counts, known or not, cost nothing.
A unit count the row has a price for is billed; an image of a quality and size the row has no price
for is unpriced (``image:<quality>:<size>``). See :mod:`tokenward.core.media` for where the units
come from and how they are held.

Sub-classes with a rate of their own are split out of their parent class only when the price row
has that rate: reasoning out of output (``reasoning``), audio and image tokens out of input, cache
reads and output (``input_audio``, ``cache_read_audio``, ``output_audio``, ``input_image``,
``cache_read_image``, ``output_image``). Without such a rate they are billed with their parent
class, which is how the providers bill them (OpenAI bills reasoning as output; Gemini bills image
input as input) and how genai-prices falls back from a specific unit to its ancestor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from tokenward.core.modifiers import billable_searches
from tokenward.core.usage import Usage

__all__ = [
    "MILLION",
    "RATE_KEYS",
    "Cost",
    "Price",
    "Tiered",
    "image_price",
    "price_usage",
    "reservation_rates",
]

MILLION = Decimal(1_000_000)

RATE_KEYS = (
    "input",
    "cache_read",
    "cache_write",
    "cache_write_5m",
    "cache_write_1h",
    "output",
    "reasoning",
    "input_audio",
    "cache_read_audio",
    "output_audio",
    "input_image",
    "cache_read_image",
    "output_image",
)
"""Per-token rate keys, in USD per 1M tokens (the keys of the price-override file)."""

_MODALITY_KEYS = (
    "input_audio",
    "cache_read_audio",
    "output_audio",
    "input_image",
    "cache_read_image",
    "output_image",
)


@dataclass(frozen=True, slots=True)
class Tiered:
    """A rate that changes above input-token thresholds.

    Attributes:
        base: the rate up to the first threshold (USD per 1M tokens).
        tiers: ``(above_input_tokens, rate)`` pairs in ascending order; a tier applies when the
            request's input tokens are strictly greater than its threshold.
    """

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...]

    def at(self, input_tokens: int) -> tuple[Decimal, int | None]:
        """The rate for a request of ``input_tokens`` prompt tokens, and the tier threshold used."""
        for threshold, rate in reversed(self.tiers):
            if input_tokens > threshold:
                return rate, threshold
        return self.base, None


Rate = Decimal | Tiered


@dataclass(frozen=True, slots=True)
class Price:
    """A resolved price row for one model.

    Attributes:
        model: the row's model id (the key the request's model name resolved to).
        source: where the row comes from: ``"override"`` (the price-override file),
            ``"genai-prices"`` (the pinned price table), or ``"default"`` (a policy's fallback).
        version: the source's version: the genai-prices release, or the override file's digest.
        rates: per-token rates by :data:`RATE_KEYS` key (USD per 1M tokens).
        fees: USD per call by tool (``{"web_search": Decimal("0.01")}``).
        inherit: whether a missing rate falls back to its parent class (cache read/write → input,
            reasoning → output), as genai-prices defines its own rows. Override rows do not
            inherit, except reasoning → output and a 5-minute write → the plain write rate.
        estimated: the price is a policy's conservative stand-in, not the model's real price.
        provider: the provider the row belongs to, when known.
        unpriced: modifiers the call was resolved for that this row cannot price
            (``"speed:fast"``, ``"inference_geo:us"``): a cost on this row is unknown.
        modifiers: the modifiers applied to the rates (``{"speed": "fast", "inference_geo": "us"}``).
        per_image: USD per generated image, by quality then size
            (``{"hd": {"1024x1024": Decimal("0.08")}}``).
        per_minute: USD per minute of input audio, billed per second (rounded to the nearest).
        per_million_characters: USD per 1,000,000 input characters.
    """

    model: str
    source: str
    version: str
    rates: Mapping[str, Rate]
    fees: Mapping[str, Decimal] = field(default_factory=dict)
    inherit: bool = False
    estimated: bool = False
    provider: str | None = None
    unpriced: tuple[str, ...] = ()
    modifiers: Mapping[str, str] = field(default_factory=dict)
    per_image: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)
    per_minute: Decimal | None = None
    per_million_characters: Decimal | None = None

    @property
    def per_unit(self) -> bool:
        """Whether the row bills units only (images, audio minutes, characters), no tokens."""
        has_units = bool(self.per_image) or self.per_minute is not None
        return not self.rates and (has_units or self.per_million_characters is not None)

    def rate(self, key: str, input_tokens: int) -> tuple[Decimal | None, int | None]:
        """The rate for ``key`` at a prompt of ``input_tokens``, following the fallback rules."""
        chain = _FALLBACKS_INHERIT[key] if self.inherit else _FALLBACKS_OVERRIDE[key]
        for candidate in chain:
            value = self.rates.get(candidate)
            if value is None:
                continue
            if isinstance(value, Tiered):
                return value.at(input_tokens)
            return value, None
        return None, None


_FALLBACKS_OVERRIDE: dict[str, tuple[str, ...]] = {
    "input": ("input",),
    "cache_read": ("cache_read",),
    "cache_write": ("cache_write",),
    "cache_write_5m": ("cache_write_5m", "cache_write"),
    "cache_write_1h": ("cache_write_1h",),
    "output": ("output",),
    "reasoning": ("reasoning", "output"),
    **{key: (key,) for key in _MODALITY_KEYS},
}
_FALLBACKS_INHERIT: dict[str, tuple[str, ...]] = {
    "input": ("input",),
    "cache_read": ("cache_read", "input"),
    # a write is never priced as input: its rate is 1.25x (OpenAI GPT-5.6, Anthropic 5 minutes) or
    # 2x (Anthropic 1 hour) of it, so a row without it leaves the write unpriced
    "cache_write": ("cache_write",),
    "cache_write_5m": ("cache_write_5m", "cache_write"),
    "cache_write_1h": ("cache_write_1h",),
    "output": ("output",),
    "reasoning": ("reasoning", "output"),
    **{key: (key,) for key in _MODALITY_KEYS},
}


@dataclass(frozen=True, slots=True)
class Cost:
    """The money for one usage.

    Attributes:
        total_usd: exact cost in USD, or None when it cannot be priced.
        breakdown: USD per token class (``input``, ``cache_read``, ``cache_write_5m``,
            ``cache_write_1h``, ``cache_write``, ``output``, ``reasoning``, ``fee:web_search``).
        tokens: the token (or call) count priced in each class.
        unpriced: classes with a non-zero count and no rate (empty when priced), or
            ``("model",)`` when the model has no price at all.
        estimated: the figure rests partly on our own counts, on a stand-in price, or on an
            assumption (``assumed``).
        price: the row used, or None.
        tier: the input-token threshold whose tier applied, or None for base rates.
        assumed: what the figure assumed that the usage did not say
            (``"cache_write_ttl=1h (requested)"``, ``"cache_write_ttl=5m (unknown)"``).
    """

    total_usd: Decimal | None
    breakdown: Mapping[str, Decimal] = field(default_factory=dict)
    tokens: Mapping[str, int] = field(default_factory=dict)
    unpriced: tuple[str, ...] = ()
    estimated: bool = False
    price: Price | None = None
    tier: int | None = None
    assumed: tuple[str, ...] = ()

    @classmethod
    def unknown(cls, reason: str = "model") -> Cost:
        """A cost that cannot be computed (no price for the model, or no usage at all)."""
        return cls(total_usd=None, unpriced=(reason,))


def _split(price: Price, key: str, n: int | None) -> int:
    """``n`` when the row has its own rate for ``key`` (so the class is priced apart), else 0."""
    return n or 0 if price.rates.get(key) is not None else 0


def _write_classes(usage: Usage, price: Price, ttl: str | None) -> tuple[list[tuple[str, int]], str | None]:
    """The cache-write classes, and the lifetime assumed for writes reported without a split."""
    write = usage.cache_write_tokens or 0
    if usage.cache_write_1h_tokens is not None or usage.cache_write_5m_tokens is not None:
        one_hour = usage.cache_write_1h_tokens or 0
        return [("cache_write_5m", write - one_hour), ("cache_write_1h", one_hour)], None
    if not write or price.rate("cache_write_1h", 0)[0] is None:
        return [("cache_write", write)], None  # one write rate (OpenAI), or nothing written
    # the row prices the two lifetimes apart but the usage did not split the write: the lifetime
    # the request asked for, else the 5-minute one (the provider's default)
    if ttl == "1h":
        return [("cache_write_1h", write)], "cache_write_ttl=1h (requested)"
    if ttl == "5m":
        return [("cache_write_5m", write)], "cache_write_ttl=5m (requested)"
    return [("cache_write_5m", write)], "cache_write_ttl=5m (unknown)"


def _classes(usage: Usage, price: Price, ttl: str | None = None) -> tuple[list[tuple[str, int]], str | None]:
    """Split the usage into disjoint priced classes (name, count), and the write lifetime assumed."""
    assert usage.input_tokens is not None and usage.output_tokens is not None
    read = usage.cache_read_tokens or 0
    write = usage.cache_write_tokens or 0
    read_audio = _split(price, "cache_read_audio", usage.cache_read_audio_tokens)
    read_image = _split(price, "cache_read_image", usage.cache_read_image_tokens)
    audio_in = _split(
        price, "input_audio", (usage.input_audio_tokens or 0) - (usage.cache_read_audio_tokens or 0)
    )
    image_in = _split(
        price, "input_image", (usage.input_image_tokens or 0) - (usage.cache_read_image_tokens or 0)
    )
    text_in = usage.input_tokens - read - write - audio_in - image_in
    if text_in < 0 or read - read_audio - read_image < 0:  # inconsistent details: bill them unsplit
        text_in, audio_in, image_in, read_audio, read_image = usage.input_tokens - read - write, 0, 0, 0, 0
    classes = [("input", text_in), ("cache_read", read - read_audio - read_image)]
    classes += [("input_audio", audio_in), ("cache_read_audio", read_audio)]
    classes += [("input_image", image_in), ("cache_read_image", read_image)]
    writes, assumed = _write_classes(usage, price, ttl)
    classes += writes
    reasoning = _split(price, "reasoning", usage.reasoning_tokens)
    audio_out = _split(price, "output_audio", usage.output_audio_tokens)
    image_out = _split(price, "output_image", usage.output_image_tokens)
    text_out = usage.output_tokens - reasoning - audio_out - image_out
    if text_out < 0:
        text_out, reasoning, audio_out, image_out = usage.output_tokens, 0, 0, 0
    classes += [("output", text_out), ("reasoning", reasoning)]
    classes += [("output_audio", audio_out), ("output_image", image_out)]
    return [(name, n) for name, n in classes if n or name in ("input", "output")], assumed


DEFAULT_IMAGE_SIZE = "1024x1024"
"""The size DALL·E generates when the request names none (OpenAI's images API reference:
"Defaults to 1024x1024"; https://platform.openai.com/docs/api-reference/images/create, read
2026-12-07)."""
DEFAULT_IMAGE_QUALITY = "standard"
"""The quality a per-image row is priced at when the request names none: ``standard``, DALL·E 3's
documented default and DALL·E 2's only quality (same page)."""


def image_price(
    price: Price, quality: str | None, size: str | None, *, worst: bool = False
) -> tuple[Decimal | None, str, tuple[str, ...]]:
    """The per-image price of a row for a quality and size: (USD or None, the key priced, what was
    assumed).

    A quality or size the request left out is charged at the documented default (``standard``,
    ``1024x1024``) when the row has it, and the cost says it assumed so; ``auto``, a default the
    row lacks, or ``worst=True`` (a hold) takes the dearest entry the row has. None when nothing
    matches: the key names what is unpriced (``image:<quality>:<size>``).
    """
    table = price.per_image
    assumed: list[str] = []
    if quality and quality.lower() != "auto":
        qualities = [quality.lower()]
    elif quality is None and not worst and DEFAULT_IMAGE_QUALITY in table:
        qualities = [DEFAULT_IMAGE_QUALITY]
        if len(table) > 1:  # DALL·E 2 has no other quality: nothing is assumed
            assumed.append(f"image_quality={DEFAULT_IMAGE_QUALITY} (default)")
    else:
        qualities = list(table)
        assumed.append(f"image_quality={quality or 'unstated'} (dearest)")
    sizes: list[str] | None = None  # None: any size, the dearest
    if size and size.lower() != "auto":
        sizes = [size.lower()]
    elif size is None and not worst and any(DEFAULT_IMAGE_SIZE in (table.get(q) or {}) for q in qualities):
        sizes = [DEFAULT_IMAGE_SIZE]
        assumed.append(f"image_size={DEFAULT_IMAGE_SIZE} (default)")
    else:
        assumed.append(f"image_size={size or 'unstated'} (dearest)")
    found = [
        (usd, q, s)
        for q in qualities
        for s, usd in (table.get(q) or {}).items()
        if sizes is None or s in sizes
    ]
    if not found:
        return None, f"image:{quality or 'unstated'}:{size or 'unstated'}", tuple(assumed)
    usd, q, s = max(found, key=lambda item: item[0])
    return usd, f"image:{q}:{s}", tuple(assumed)


def _unit_charges(
    usage: Usage, price: Price, image: tuple[str | None, str | None]
) -> tuple[dict[str, Decimal], dict[str, int], list[str], tuple[str, ...]]:
    """What the row's per-unit prices charge for the usage: (breakdown, counts, unpriced, assumed)."""
    breakdown: dict[str, Decimal] = {}
    counts: dict[str, int] = {}
    unpriced: list[str] = []
    assumed: tuple[str, ...] = ()
    if usage.images and price.per_image:
        usd, key, assumed = image_price(price, image[0], image[1])
        counts[key] = usage.images
        if usd is None:
            unpriced.append(key)
        else:
            breakdown[key] = usd * usage.images
    if usage.input_audio_ms and price.per_minute is not None:
        # billed per second, "rounded to the nearest second" (OpenAI's Whisper pricing)
        seconds = (Decimal(usage.input_audio_ms) / 1000).to_integral_value(rounding=ROUND_HALF_UP)
        counts["audio_seconds"] = int(seconds)
        breakdown["audio_seconds"] = price.per_minute * seconds / 60
    if usage.input_characters and price.per_million_characters is not None:
        counts["characters"] = usage.input_characters
        breakdown["characters"] = price.per_million_characters * usage.input_characters / MILLION
    if price.per_unit:
        needed = (
            ("images", usage.images, bool(price.per_image)),
            ("input_audio_ms", usage.input_audio_ms, price.per_minute is not None),
            ("input_characters", usage.input_characters, price.per_million_characters is not None),
        )
        if not any(has and count is not None for _, count, has in needed):
            # a per-unit row and none of its units known: nothing to price the call by
            unpriced.append(next((name for name, _, has in needed if has), "units"))
    return breakdown, counts, unpriced, assumed


def _price_units_only(usage: Usage, price: Price, image: tuple[str | None, str | None]) -> Cost:
    """A row that bills units only: tokens cost nothing, known or not."""
    breakdown, counts, unpriced, assumed = _unit_charges(usage, price, image)
    unpriced = [*price.unpriced, *unpriced]
    estimated = price.estimated or bool(assumed) or usage.units_source != "provider"
    if unpriced:
        return Cost(
            None,
            {} if price.unpriced else breakdown,
            counts,
            tuple(unpriced),
            estimated,
            price,
            None,
            assumed,
        )
    return Cost(sum(breakdown.values(), Decimal(0)), breakdown, counts, (), estimated, price, None, assumed)


def price_usage(
    usage: Usage,
    price: Price | None,
    *,
    cache_write_ttl: str | None = None,
    image: tuple[str | None, str | None] = (None, None),
) -> Cost:
    """Price one call's usage.

    Args:
        usage: the call's usage; unknown input or output must be filled in first
            (:meth:`Usage.filled`), or the cost is unknown.
        price: the resolved price row (after any service-tier, batch, speed or geography
            variant), or None when the model has no known price.
        cache_write_ttl: the cache-write lifetime the request asked for (``"5m"``, ``"1h"``), or
            None when unknown: used only for writes the usage reports without their split.
        image: the (quality, size) of the images generated, for a row priced per image.

    Returns:
        The cost with its breakdown; ``total_usd`` is None when anything non-zero is unpriced.
    """
    if price is None:
        return Cost.unknown("model")
    if price.per_unit:
        return _price_units_only(usage, price, image)
    if usage.input_tokens is None or usage.output_tokens is None:
        missing = "input_tokens" if usage.input_tokens is None else "output_tokens"
        return Cost(total_usd=None, unpriced=(missing,), price=price)
    breakdown: dict[str, Decimal] = {}
    tokens: dict[str, int] = {}
    unpriced: list[str] = list(price.unpriced)
    tier: int | None = None
    classes, assumption = _classes(usage, price, cache_write_ttl)
    assumed: tuple[str, ...] = (assumption,) if assumption else ()
    for name, n in classes:
        tokens[name] = n
        if n == 0:
            continue
        rate, threshold = price.rate(name, usage.input_tokens)
        if rate is None:
            unpriced.append(name)
            continue
        tier = threshold if threshold is not None else tier
        breakdown[name] = rate * n / MILLION
    searches = billable_searches(price.model, usage.web_search_calls or 0)
    if searches:
        tokens["fee:web_search"] = searches
        fee = price.fees.get("web_search")
        if fee is None:
            unpriced.append("fee:web_search")
        else:
            breakdown["fee:web_search"] = fee * searches
    if price.fees.get("request"):
        tokens["fee:request"] = 1
        breakdown["fee:request"] = price.fees["request"]
    units, counts, units_unpriced, units_assumed = _unit_charges(usage, price, image)
    breakdown |= units
    tokens |= counts
    unpriced += units_unpriced
    assumed += units_assumed
    estimated = price.estimated or not usage.complete or bool(assumed)
    if price.unpriced:  # the rates are not the ones the call ran at: no figure, not even a partial one
        breakdown = {}
    if unpriced:
        return Cost(None, breakdown, tokens, tuple(unpriced), estimated, price, tier, assumed)
    total = sum(breakdown.values(), Decimal(0))
    return Cost(total, breakdown, tokens, (), estimated, price, tier, assumed)


def reservation_rates(
    price: Price, input_tokens: int, *, may_write_cache: bool = False, cache_write_ttl: str | None = None
) -> tuple[Decimal | None, Decimal | None]:
    """Worst-case rates for a reservation: (input-side rate, output-side rate), USD per 1M tokens.

    The input side is the uncached input rate, or, when the request may write a prompt cache
    (Anthropic ``cache_control`` markers; OpenAI's automatic caching, whose writes GPT-5.6 bills at
    1.25x), the highest of that and the cache-write rates the request can be billed at: the
    5-minute (or single) write rate, and the 1-hour one unless the request asked for 5-minute
    writes only (``cache_write_ttl="5m"``). Cache reads are never dearer than fresh input. The
    output side is the higher of output and reasoning. Tiers are chosen by ``input_tokens`` (the
    estimate). A side with no rate is None; both are None when the row cannot price a modifier
    the call was resolved for (:attr:`Price.unpriced`).
    """
    if price.unpriced:
        return None, None
    keys: tuple[str, ...] = ("input",)
    if may_write_cache:
        keys = ("input", "cache_write", "cache_write_5m")
        if cache_write_ttl != "5m":
            keys += ("cache_write_1h",)
    known_in = [r for r in (price.rate(key, input_tokens)[0] for key in keys) if r is not None]
    known_out = [
        r for r in (price.rate(key, input_tokens)[0] for key in ("output", "reasoning")) if r is not None
    ]
    return (max(known_in) if known_in else None, max(known_out) if known_out else None)
