"""The images and audio endpoints: what they bill, and the worst case to hold before the call.

OpenAI's images and audio endpoints have no output to stop, so the hold is the call's whole price,
worked out from the request (provider pages read 2026-12-07, through the search tool's stored
copies; where a page could only be read as quoted elsewhere, the quote's place is named):

* **Images** (``POST /v1/images/generations``, ``/v1/images/edits``):

  - DALL·E 2 and DALL·E 3 are billed per image, by quality and size
    (https://platform.openai.com/docs/pricing, "Image generation"; the same table is quoted by
    provider documentation such as docs.dev.xavier.icvr.xyz/models/openai/dall-e-3.html):
    :data:`DALL_E_PRICES`. The hold is ``n x`` the price of the size and quality asked for
    (``auto``: the dearest).
  - GPT image models (``gpt-image-1``, ``-1-mini``, ``-1.5``, ``-2``, ``chatgpt-image-latest``) are
    billed by tokens: text and image input, image output. The answer's ``usage`` reports them
    (``input_tokens``, ``input_tokens_details.{text_tokens,image_tokens}``, ``output_tokens``,
    ``output_tokens_details.{image_tokens,text_tokens}``; openai-python's ``ImagesResponse``).
    The output tokens of one image depend on its size and quality: for the GPT Image 1 family the
    image generation guide's table (https://platform.openai.com/docs/guides/image-generation,
    "Cost and latency", quoted on community.openai.com/t/1371851): :data:`GPT_IMAGE_1_TOKENS`;
    for ``gpt-image-2`` and its arbitrary sizes, the formula of OpenAI's pricing calculator
    (as read out of it on community.openai.com/t/1382699, and matching the counts reported on
    community.openai.com/t/1379464: 7,024 tokens for 1024x1024 high, 5,488 for 1536x1024, 5,063
    for 1792x1024): :func:`gpt_image_2_tokens`. Each streamed partial image adds 100 output
    tokens (image generation guide, "Streaming"). The hold is the prompt estimate plus
    ``n x`` the tokens of the size and quality asked for (``auto``: the dearest standard size,
    high quality), at the dearest input and output rates of the row.
* **Transcription** (``POST /v1/audio/transcriptions``): ``whisper-1`` is billed per minute of
  audio ($0.006, "rounded to the nearest second", as the pricing page was quoted on
  gptteams.ai's Whisper usage page; genai-prices 0.2.3 carries $0.36 per hour); the answer's
  ``usage`` is ``{"type": "duration", "seconds": ...}``. ``gpt-4o-transcribe`` and
  ``gpt-4o-mini-transcribe`` are billed by tokens (audio and text input, text output; ``usage``
  ``{"type": "tokens", "input_tokens", "input_token_details": {"audio_tokens", "text_tokens"},
  "output_tokens"}``; openai-python's ``Transcription``). The hold reads the file's duration
  (see :mod:`tokenward.guard.wire.endpoints.openai_media`): per-minute rows hold the duration
  rounded up to a whole second; token rows hold :data:`AUDIO_TOKENS_PER_SECOND` audio tokens a
  second plus the prompt, and the model's whole output (:data:`TRANSCRIBE_MAX_OUTPUT_TOKENS`).
* **Speech** (``POST /v1/audio/speech``): ``tts-1`` and ``tts-1-hd`` are billed per input
  character ($15 and $30 per 1M, genai-prices 0.2.3); ``gpt-4o-mini-tts`` by tokens (text input,
  audio output; usage only in its ``stream_format: "sse"`` answer). Per-character rows hold the
  characters of ``input``; token rows hold the prompt estimate and the default output bound (no
  documented bound: see ``docs/accounting.md``).

Everything here is pure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from tokenward.core.modifiers import MediaRequest
from tokenward.core.pricing import MILLION, Price, image_price
from tokenward.errors import UnpricedCall

__all__ = [
    "AUDIO_TOKENS_PER_SECOND",
    "DALL_E_PRICES",
    "GPT_IMAGE_1_TOKENS",
    "PARTIAL_IMAGE_TOKENS",
    "TRANSCRIBE_MAX_OUTPUT_TOKENS",
    "MediaHold",
    "MediaRequest",
    "UnpricedMedia",
    "builtin_image_prices",
    "gpt_image_2_tokens",
    "image_output_tokens",
    "media_hold",
]

DALL_E_PRICES: Mapping[str, Mapping[str, Mapping[str, Decimal]]] = {
    "dall-e-2": {
        "standard": {"256x256": Decimal("0.016"), "512x512": Decimal("0.018"), "1024x1024": Decimal("0.020")}
    },
    "dall-e-3": {
        "standard": {
            "1024x1024": Decimal("0.040"),
            "1024x1792": Decimal("0.080"),
            "1792x1024": Decimal("0.080"),
        },
        "hd": {"1024x1024": Decimal("0.080"), "1024x1792": Decimal("0.120"), "1792x1024": Decimal("0.120")},
    },
}
"""USD per image by model, quality and size (OpenAI pricing, "Image generation", read 2026-12-07);
genai-prices 0.2.3 has no DALL·E rows, so these are tokenward's built-in rows (price source
``builtin``), after the override file and genai-prices."""

BUILTIN_PRICES_VERSION = "openai-pricing-2026-12-07"
"""The ``price_version`` of the built-in rows: where and when they were read."""

GPT_IMAGE_1_TOKENS: Mapping[str, Mapping[str, int]] = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
"""Output tokens of one image of the GPT Image 1 family (``gpt-image-1``, ``-1-mini``, ``-1.5``,
``chatgpt-image-latest``) by quality and size (image generation guide, "Cost and latency")."""

_STANDARD_SIZES = ("1024x1024", "1024x1536", "1536x1024")
PARTIAL_IMAGE_TOKENS = 100
"""Output tokens each streamed partial image adds (image generation guide, "Streaming")."""

AUDIO_TOKENS_PER_SECOND = 20
"""Audio tokens held per second of audio for token-priced transcription: OpenAI documents no rate
for its transcribe models; 20 a second is the densest rate it documents for any audio (Realtime
API, "Managing costs": 1 token per 100 ms of user audio, 1 per 50 ms of assistant audio), above
the ~16.7 a second its pricing page's estimate ($0.006 a minute at $6 per 1M audio tokens)
implies. The settled charge is the answer's ``usage``."""

TRANSCRIBE_MAX_OUTPUT_TOKENS = 2000
"""The output bound of ``gpt-4o-transcribe`` and ``gpt-4o-mini-transcribe`` (model pages: context
window 16,000, max output tokens 2,000; quoted on opentranscription.io's model profile)."""

_SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


class UnpricedMedia(UnpricedCall):
    """A media call refused because its row cannot price what it asks for (an image size the
    per-image table lacks) and the unknown-price policy is ``deny``.

    Attributes:
        model: the model requested.
        budget: ``"unknown_model"`` (the policy that refused it).
        unpriced: what could not be priced (``image:hd:512x512``).
    """

    def __init__(self, model: str, unpriced: tuple[str, ...]) -> None:
        super().__init__(model, "unknown_model")
        self.unpriced = unpriced
        self.args = (
            f"model {model!r} has no price for {', '.join(unpriced)} and the unknown-model policy is "
            "'deny'; add it to the model's row in the price-override file (per_image, per_minute, "
            "per_million_characters) or set defaults.unknown_model to flag",
        )


@dataclass(frozen=True, slots=True)
class MediaHold:
    """The worst case of a media call.

    Attributes:
        input_tokens / output_tokens: tokens held (0 on a per-unit row, which bills none).
        input_rate / output_rate: USD per 1M tokens (0 on a per-unit row; None when unpriced).
        fixed_cost_usd: USD of the per-unit prices (images, minutes, characters), or 0.
        unpriced: what the row cannot price (``image:hd:512x512``), empty when priced.
    """

    input_tokens: int
    output_tokens: int
    input_rate: Decimal | None
    output_rate: Decimal | None
    fixed_cost_usd: Decimal = Decimal(0)
    unpriced: tuple[str, ...] = ()


def builtin_image_prices(model: str) -> Mapping[str, Mapping[str, Decimal]] | None:
    """The built-in per-image table of a DALL·E model id (``dall-e-3``, ``openai/dall-e-2``), or
    None."""
    bare = model.strip().lower().rsplit("/", 1)[-1]
    return DALL_E_PRICES.get(bare)


def _dimensions(size: str) -> tuple[int, int] | None:
    match = _SIZE.match(size.strip().lower())
    return (int(match.group(1)), int(match.group(2))) if match else None


def gpt_image_2_tokens(quality: str, width: int, height: int) -> int:
    """Output tokens of one ``gpt-image-2`` image (the pricing calculator's formula): with
    ``q`` = 16 / 48 / 96 for low / medium / high, ``s = (2 q short + long) // (2 long)``, the tokens
    are ``ceil(q s (2,000,000 + width x height) / 4,000,000)``."""
    factor = {"low": 16, "medium": 48, "high": 96}[quality]
    long_edge, short_edge = max(width, height), min(width, height)
    short_factor = (2 * factor * short_edge + long_edge) // (2 * long_edge)
    return -(-factor * short_factor * (2_000_000 + width * height) // 4_000_000)


def image_output_tokens(model: str, size: str | None, quality: str | None) -> int:
    """The most output tokens one image of ``size`` and ``quality`` can be billed.

    ``auto`` or an unstated quality is held as ``high``; ``auto`` or an unstated size as the
    dearest of the standard sizes. The GPT Image 1 family uses the guide's table; every other
    token-priced image model the ``gpt-image-2`` formula.
    """
    qualities = [quality.lower()] if quality and quality.lower() in ("low", "medium", "high") else ["high"]
    sizes = [size.lower()] if size and _dimensions(size) else list(_STANDARD_SIZES)
    bare = model.strip().lower().rsplit("/", 1)[-1]
    if bare.startswith(("gpt-image-1", "chatgpt-image")):
        known = [GPT_IMAGE_1_TOKENS[q].get(s) for q in qualities for s in sizes]
        if all(n is not None for n in known):
            return max(n for n in known if n is not None)
    counts = []
    for q in qualities:
        for s in sizes:
            dims = _dimensions(s)
            if dims is not None:
                counts.append(gpt_image_2_tokens(q, *dims))
    return max(counts)


def _dearest(price: Price, keys: tuple[str, ...], input_tokens: int) -> Decimal | None:
    known = [r for r in (price.rate(key, input_tokens)[0] for key in keys) if r is not None]
    return max(known) if known else None


def media_hold(
    model: str, price: Price | None, media: MediaRequest, input_tokens: int, default_output: int
) -> MediaHold:
    """The worst case to hold for a media request.

    Args:
        model: the model requested.
        price: its row (None when unknown: the tokens are held, the cost is unknown).
        media: what the request asks for.
        input_tokens: the prompt estimate (text, and input images of an edit).
        default_output: the output bound to hold where no bound is documented (speech).
    """
    images = max(media.images, 1) if media.kind == "image" else 0
    if price is not None and price.per_unit:
        fixed, unpriced = _unit_hold(price, media, images)
        rate = None if unpriced else Decimal(0)
        return MediaHold(0, 0, rate, rate, fixed, unpriced)
    if media.kind == "image":
        per_image = image_output_tokens(model, media.image_size, media.image_quality)
        output = images * (per_image + PARTIAL_IMAGE_TOKENS * media.partial_images)
    elif media.kind == "transcription":
        seconds = math.ceil((media.audio_ms or 0) / 1000)
        input_tokens += seconds * AUDIO_TOKENS_PER_SECOND
        output = TRANSCRIBE_MAX_OUTPUT_TOKENS
    else:
        output = default_output
    if price is None or price.unpriced:
        return MediaHold(input_tokens, output, None, None, Decimal(0), price.unpriced if price else ())
    input_rate = _dearest(price, ("input", "input_image", "input_audio"), input_tokens)
    output_rate = _dearest(price, ("output", "output_image", "output_audio"), input_tokens)
    return MediaHold(input_tokens, output, input_rate, output_rate)


def _unit_hold(price: Price, media: MediaRequest, images: int) -> tuple[Decimal, tuple[str, ...]]:
    """USD a per-unit row charges for the request's units, and what it cannot price."""
    if media.kind == "image":
        usd, key, _ = image_price(price, media.image_quality, media.image_size, worst=True)
        return (Decimal(0), (key,)) if usd is None else (usd * images, ())
    if media.kind == "transcription":
        if price.per_minute is None:
            return Decimal(0), ("input_audio_ms",)
        seconds = math.ceil((media.audio_ms or 0) / 1000)
        return price.per_minute * seconds / 60, ()
    if price.per_million_characters is None:
        return Decimal(0), ("input_characters",)
    return price.per_million_characters * media.characters / MILLION, ()
