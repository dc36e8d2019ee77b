"""Image sizes from their header bytes, and what an image costs in prompt tokens per provider.

Sizes are read from the first bytes of base64 data (``data:image/png;base64,...`` URLs, Anthropic
``source.data``, Gemini ``inlineData.data``, Bedrock ``source.bytes``): PNG (IHDR), GIF (logical
screen), JPEG (first SOFn marker) and WebP (VP8, VP8L, VP8X). Nothing is fetched: an image given by
URL, or one whose header cannot be read, has an unknown size and is counted at the rule's worst
case.

Token rules:

* OpenAI (https://platform.openai.com/docs/guides/images-vision#calculating-costs): tile models
  fit the image in 2048x2048, then scale its short side down to 768, and count 512-px tiles:
  ``base + tile x tiles`` (``base`` alone at ``detail: low``); GPT-4o/4.1: 85 + 170 per tile,
  GPT-4o mini: 2833 + 5667, o1/o3: 75 + 150, GPT-5: 70 + 140. Patch models (GPT-4.1 mini/nano,
  GPT-5 mini/nano, o4-mini) count 32-px patches, at most 1536, times a multiplier (1.62, 2.46,
  1.72); the cap is used as the bound when the image needs scaling down.
* Anthropic (https://docs.anthropic.com/en/docs/build-with-claude/vision#calculate-image-costs):
  ``tokens = width x height / 750`` after scaling the long edge down to 1568 px; images are scaled
  so they never exceed about 1,600 tokens, which is the worst case.
* Gemini (https://ai.google.dev/gemini-api/docs/image-understanding#technical-details-image):
  258 tokens when both sides are at most 384 px, else 258 per 768x768 tile; Gemini 3 counts up to
  1,120 tokens per image at its default (high) media resolution. Unknown size: 16 tiles.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from dataclasses import dataclass

__all__ = [
    "ImageCost",
    "anthropic_image_tokens",
    "gemini_image_tokens",
    "image_size",
    "openai_image_tokens",
    "size_from_base64",
    "size_from_data_url",
]

_DATA_URL = re.compile(r"^data:[^;,]*(?:;[^,]*)?;base64,", re.IGNORECASE)


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) in pixels from an image file's first bytes, or None when unreadable.

    Reads PNG, GIF, JPEG and WebP headers only (no decoding).
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return (width, height) if width and height else None
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return (width, height) if width and height else None
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        return _webp(data)
    if data[:2] == b"\xff\xd8":
        return _jpeg(data)
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker in _SOF and i + 9 <= len(data):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return (width, height) if width and height else None
        i += 2 + length
    return None


def size_from_base64(text: str) -> tuple[int, int] | None:
    """The size of a base64-encoded image, decoding only as much as its header needs."""
    text = "".join(text.split()) if any(c.isspace() for c in text[:4096]) else text
    for length in (4096, 65536, len(text)):
        part = text[: length - length % 4] if length < len(text) else text
        try:
            data = base64.b64decode(part + "=" * (-len(part) % 4), validate=False)
        except (binascii.Error, ValueError):
            return None
        size = image_size(data)
        if size is not None or length >= len(text):
            return size
    return None


def size_from_data_url(url: str) -> tuple[int, int] | None:
    """The size of the image in a ``data:<type>;base64,<data>`` URL; None for other URLs."""
    match = _DATA_URL.match(url)
    return size_from_base64(url[match.end() :]) if match else None


@dataclass(frozen=True, slots=True)
class ImageCost:
    """One image's prompt tokens and how they were worked out (``known_size`` False: worst case)."""

    tokens: int
    known_size: bool


_TILE_MODELS: tuple[tuple[str, int, int], ...] = (
    ("gpt-4o-mini", 2833, 5667),
    ("gpt-5", 70, 140),
    ("o1", 75, 150),
    ("o3", 75, 150),
    ("computer-use", 65, 129),
)
_PATCH_MODELS: tuple[tuple[str, float], ...] = (
    ("gpt-5-mini", 1.62),
    ("gpt-5-nano", 2.46),
    ("gpt-4.1-mini", 1.62),
    ("gpt-4.1-nano", 2.46),
    ("o4-mini", 1.72),
)


def _bare(model: str) -> str:
    return model.lower().lstrip("@").rsplit("/", 1)[-1].removeprefix("ft:")


def openai_image_tokens(model: str, size: tuple[int, int] | None, detail: str | None) -> ImageCost:
    """Prompt tokens of one image for an OpenAI model (see the module docstring)."""
    name = _bare(model)
    for prefix, multiplier in _PATCH_MODELS:
        if name.startswith(prefix):
            if size is None:
                return ImageCost(math.ceil(1536 * multiplier), False)
            patches = min(math.ceil(size[0] / 32) * math.ceil(size[1] / 32), 1536)
            return ImageCost(math.ceil(patches * multiplier), True)
    base, tile = 85, 170
    for prefix, b, t in _TILE_MODELS:
        if name.startswith(prefix) and not any(name.startswith(p) for p, _ in _PATCH_MODELS):
            base, tile = b, t
            break
    if detail == "low":
        return ImageCost(base, size is not None)
    if size is None:
        return ImageCost(base + tile * 8, False)  # 2048x768 after scaling: 4 x 2 tiles
    width, height = float(size[0]), float(size[1])
    if max(width, height) > 2048:
        scale = 2048 / max(width, height)
        width, height = width * scale, height * scale
    if min(width, height) > 768:
        scale = 768 / min(width, height)
        width, height = width * scale, height * scale
    tiles = math.ceil(width / 512) * math.ceil(height / 512)
    return ImageCost(base + tile * tiles, True)


ANTHROPIC_IMAGE_MAX_TOKENS = 1600


def anthropic_image_tokens(size: tuple[int, int] | None) -> ImageCost:
    """Prompt tokens of one image for a Claude model: ``w x h / 750`` after scaling, at most
    about 1,600; the maximum when the size is unknown."""
    if size is None:
        return ImageCost(ANTHROPIC_IMAGE_MAX_TOKENS, False)
    width, height = float(size[0]), float(size[1])
    if max(width, height) > 1568:
        scale = 1568 / max(width, height)
        width, height = width * scale, height * scale
    return ImageCost(min(math.ceil(width * height / 750), ANTHROPIC_IMAGE_MAX_TOKENS), True)


def gemini_image_tokens(model: str, size: tuple[int, int] | None) -> ImageCost:
    """Prompt tokens of one image for a Gemini model (258 per 768-px tile; Gemini 3: up to 1,120)."""
    floor = 1120 if _bare(model).startswith("gemini-3") else 0
    if size is None:
        return ImageCost(max(258 * 16, floor), False)
    if size[0] <= 384 and size[1] <= 384:
        return ImageCost(max(258, floor), True)
    tiles = math.ceil(size[0] / 768) * math.ceil(size[1] / 768)
    return ImageCost(max(258 * tiles, floor), True)
