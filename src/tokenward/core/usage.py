"""Normalised token usage of one LLM call.

Field meanings follow ``DESIGN.md`` (one vocabulary for every provider):

* ``input_tokens``: every prompt token, cached and cache-written ones included;
* ``cache_read_tokens`` / ``cache_write_tokens``: inside ``input_tokens``; the write is further
  split into ``cache_write_5m_tokens`` and ``cache_write_1h_tokens`` where the provider says so;
* ``output_tokens``: every generated token, reasoning included;
* ``reasoning_tokens``: inside ``output_tokens``;
* ``input_audio_tokens`` / ``input_image_tokens``: the audio and image share of ``input_tokens``
  (``cache_read_audio_tokens`` / ``cache_read_image_tokens``: their cached part, inside both the
  modality count and ``cache_read_tokens``); ``output_audio_tokens`` / ``output_image_tokens``:
  the audio and image share of ``output_tokens``. Reported by OpenAI (``*_tokens_details``) and
  Gemini (``*TokensDetails`` by modality); priced apart only where the price row has a rate for
  the modality;
* ``web_search_calls``: server-side searches that actually ran (priced per call);
* ``images``: images an images endpoint generated; ``input_audio_ms``: milliseconds of audio a
  transcription was billed for; ``input_characters``: characters of a speech request's input.
  These are the units of per-image, per-minute and per-character prices (DALL·E, ``whisper-1``,
  ``tts-1``); ``units_source`` says whether they are the provider's figure or ours (an audio
  duration read from the uploaded file when the answer reports none).

``None`` means *unknown* (the provider did not report it), never zero. A usage whose input or
output had to be filled in from our own count says so in ``input_source`` / ``output_source``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from tokenward.errors import ValidationError

__all__ = ["COUNT_FIELDS", "Source", "Usage"]

Source = Literal["provider", "preflight_estimate", "counted_stream_text", "none"]
"""Where a count came from: the provider's usage, our pre-flight estimate of the prompt,
our own count of the streamed text, or nowhere (no figure at all)."""

MAX_COUNT = 2**53 - 1
"""The largest count a usage may hold: the largest whole number every JSON reader keeps exact
(RFC 8259, section 6). No call has more tokens; a provider reporting more reports nonsense, and
larger values would overflow the ledgers' 64-bit integer columns once summed."""

COUNT_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
    "input_audio_tokens",
    "cache_read_audio_tokens",
    "output_audio_tokens",
    "input_image_tokens",
    "cache_read_image_tokens",
    "output_image_tokens",
    "web_search_calls",
    "images",
    "input_audio_ms",
    "input_characters",
)

_PARTS: tuple[tuple[str, str], ...] = (
    ("input_audio_tokens", "input_tokens"),
    ("input_image_tokens", "input_tokens"),
    ("cache_read_audio_tokens", "input_audio_tokens"),
    ("cache_read_image_tokens", "input_image_tokens"),
    ("cache_read_audio_tokens", "cache_read_tokens"),
    ("cache_read_image_tokens", "cache_read_tokens"),
    ("output_audio_tokens", "output_tokens"),
    ("output_image_tokens", "output_tokens"),
)
"""(part, whole): a modality count that must fit inside its whole when both are known."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call, in tokenward's vocabulary (all counts are tokens, or calls).

    Raises:
        ValidationError: on a negative count, a count above ``MAX_COUNT``, or parts that exceed
            their whole (cache reads plus
            writes above ``input_tokens``, reasoning above ``output_tokens``); ``field`` names the
            offending field.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cache_write_5m_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int | None = None
    input_audio_tokens: int | None = None
    cache_read_audio_tokens: int | None = None
    output_audio_tokens: int | None = None
    input_image_tokens: int | None = None
    cache_read_image_tokens: int | None = None
    output_image_tokens: int | None = None
    web_search_calls: int | None = None
    images: int | None = None
    input_audio_ms: int | None = None
    input_characters: int | None = None
    input_source: Source = "provider"
    output_source: Source = "provider"
    units_source: Source = "provider"

    def __post_init__(self) -> None:
        for name in COUNT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationError(f"{name} must be a whole number of tokens, got {value!r}", field=name)
            if value < 0:
                raise ValidationError(f"{name} must not be negative, got {value}", field=name)
            if value > MAX_COUNT:
                raise ValidationError(f"{name} must be at most {MAX_COUNT}, got {value}", field=name)
        if self.cache_write_tokens is None and (
            self.cache_write_5m_tokens is not None or self.cache_write_1h_tokens is not None
        ):
            # The split parts make up the write: without this, the parts escape the input check
            # and pricing bills a negative 5-minute class.
            object.__setattr__(
                self,
                "cache_write_tokens",
                (self.cache_write_5m_tokens or 0) + (self.cache_write_1h_tokens or 0),
            )
        cached = (self.cache_read_tokens or 0) + (self.cache_write_tokens or 0)
        if self.input_tokens is not None and cached > self.input_tokens:
            raise ValidationError(
                f"input_tokens ({self.input_tokens}) must include cache_read_tokens "
                f"({self.cache_read_tokens or 0}) and cache_write_tokens ({self.cache_write_tokens or 0}): "
                "pass the whole prompt count as input_tokens, not only its uncached part",
                field="input_tokens",
            )
        split = (self.cache_write_5m_tokens or 0) + (self.cache_write_1h_tokens or 0)
        if split and self.cache_write_tokens is not None and split > self.cache_write_tokens:
            raise ValidationError(
                "cache_write_5m_tokens + cache_write_1h_tokens exceed cache_write_tokens",
                field="cache_write_tokens",
            )
        if (
            self.reasoning_tokens is not None
            and self.output_tokens is not None
            and self.reasoning_tokens > self.output_tokens
        ):
            raise ValidationError(
                f"output_tokens ({self.output_tokens}) must include reasoning_tokens ({self.reasoning_tokens})",
                field="output_tokens",
            )
        for part, whole in _PARTS:
            part_value, whole_value = getattr(self, part), getattr(self, whole)
            if part_value is not None and whole_value is not None and part_value > whole_value:
                raise ValidationError(
                    f"{whole} ({whole_value}) must include {part} ({part_value})", field=whole
                )

    @property
    def complete(self) -> bool:
        """True when the provider reported both the input and the output count."""
        return (
            self.input_tokens is not None
            and self.output_tokens is not None
            and self.input_source == "provider"
            and self.output_source == "provider"
        )

    @property
    def total_tokens(self) -> int | None:
        """``input_tokens + output_tokens``, or None when either is unknown."""
        if self.input_tokens is None or self.output_tokens is None:
            return None
        return self.input_tokens + self.output_tokens

    @property
    def uncached_input_tokens(self) -> int | None:
        """Prompt tokens neither read from nor written to a cache, or None when unknown."""
        if self.input_tokens is None:
            return None
        return self.input_tokens - (self.cache_read_tokens or 0) - (self.cache_write_tokens or 0)

    def filled(self, *, input_estimate: int | None = None, output_count: int | None = None) -> Usage:
        """This usage with unknown input/output replaced by our own figures, labelled as such.

        Args:
            input_estimate: the pre-flight estimate of the prompt, in tokens.
            output_count: our own count of the streamed output, in tokens.

        Returns:
            A copy; counts the provider did report are never replaced.
        """
        changes: dict[str, Any] = {}
        if self.input_tokens is None and input_estimate is not None:
            changes["input_tokens"] = max(
                input_estimate,
                (self.cache_read_tokens or 0) + (self.cache_write_tokens or 0),
                (self.input_audio_tokens or 0) + (self.input_image_tokens or 0),
            )
            changes["input_source"] = "preflight_estimate"
        if self.output_tokens is None and output_count is not None:
            changes["output_tokens"] = max(
                output_count,
                self.reasoning_tokens or 0,
                (self.output_audio_tokens or 0) + (self.output_image_tokens or 0),
            )
            changes["output_source"] = "counted_stream_text"
        return replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with every field (unknown counts as None)."""
        return {name: getattr(self, name) for name in _ALL_FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        """Build from :meth:`to_dict` output (unknown keys are ignored).

        Raises:
            ValidationError: as the constructor.
        """
        return cls(**{k: v for k, v in data.items() if k in _ALL_FIELDS})


_ALL_FIELDS = (*COUNT_FIELDS, "input_source", "output_source", "units_source")
