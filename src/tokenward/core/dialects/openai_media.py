"""OpenAI's images and audio answers: ``openai-images``, ``openai-transcription``, ``openai-speech``.

* Images (``/v1/images/generations``, ``/v1/images/edits``; openai-python ``ImagesResponse``,
  read 2026-12-07): ``data`` lists the images generated; GPT image models add ``usage``:
  ``input_tokens`` (text and images) with ``input_tokens_details.{text_tokens,image_tokens}``,
  ``output_tokens`` with ``output_tokens_details.{image_tokens,text_tokens}`` (without the details,
  every output token is an image token: "the number of image tokens in the output image"), and
  echo the ``size`` and ``quality`` generated. DALL·E answers carry no usage: the images are the
  units billed. Streams (GPT image models, ``stream: true``) end with
  ``image_generation.completed`` / ``image_edit.completed``, which carries the usage.
* Transcription (``/v1/audio/transcriptions``; ``Transcription``): ``usage`` is
  ``{"type": "tokens", "input_tokens", "input_token_details": {"audio_tokens", "text_tokens"},
  "output_tokens"}`` for token-billed models and ``{"type": "duration", "seconds"}`` for
  ``whisper-1``; ``verbose_json`` answers also give ``duration`` (seconds). Streams end with
  ``transcript.text.done``, which carries the usage; ``transcript.text.delta`` carries text.
* Speech (``/v1/audio/speech``): the answer is audio bytes without usage; with
  ``stream_format: "sse"`` the last event, ``speech.audio.done``, carries
  ``usage: {input_tokens, output_tokens}`` (output tokens are audio).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from tokenward.core.dialects.base import ResponseFacts
from tokenward.core.usage import Usage

__all__ = [
    "MediaStream",
    "audio_ms",
    "response_facts_openai_images",
    "response_facts_openai_speech",
    "response_facts_openai_transcription",
    "usage_from_openai_images",
    "usage_from_openai_speech",
    "usage_from_openai_transcription",
]


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _sourced(**counts: Any) -> Usage:
    """A usage whose input and output sources say whether the provider gave those counts."""
    return Usage(
        **counts,
        input_source="provider" if counts.get("input_tokens") is not None else "none",
        output_source="provider" if counts.get("output_tokens") is not None else "none",
    )


def _details(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}


def audio_ms(seconds: Any) -> int | None:
    """Seconds (a number, as the provider reports them) in whole milliseconds, or None."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float | str):
        return None
    try:
        value = Decimal(str(seconds))
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0:
        return None
    return int((value * 1000).to_integral_value(rounding=ROUND_HALF_UP))


def usage_from_openai_images(raw: Mapping[str, Any] | None) -> Usage:
    """An images ``usage`` object (GPT image models)."""
    raw = raw or {}
    details_in = _details(raw, "input_tokens_details")
    details_out = raw.get("output_tokens_details")
    output = _int(raw.get("output_tokens"))
    image_out = _int(details_out.get("image_tokens")) if isinstance(details_out, Mapping) else output
    return _sourced(
        input_tokens=_int(raw.get("input_tokens")),
        output_tokens=output,
        input_image_tokens=_int(details_in.get("image_tokens")),
        output_image_tokens=image_out,
    )


def response_facts_openai_images(response: Mapping[str, Any]) -> ResponseFacts:
    """An images answer: its usage (when a GPT image model reports one) and the images in ``data``."""
    data = response.get("data")
    images = len(data) if isinstance(data, list) else None
    raw = response.get("usage")
    if isinstance(raw, Mapping):
        usage: Usage | None = Usage(**{**_fields(usage_from_openai_images(raw)), "images": images})
    else:
        usage = None if images is None else Usage(images=images, input_source="none", output_source="none")
    return ResponseFacts(usage=usage, response_id=None)


def usage_from_openai_transcription(raw: Mapping[str, Any] | None) -> Usage:
    """A transcription ``usage`` object: tokens, or the audio's duration (``whisper-1``)."""
    raw = raw or {}
    if raw.get("type") == "duration" or ("seconds" in raw and "input_tokens" not in raw):
        return Usage(input_audio_ms=audio_ms(raw.get("seconds")), input_source="none", output_source="none")
    details = _details(raw, "input_token_details")
    return _sourced(
        input_tokens=_int(raw.get("input_tokens")),
        output_tokens=_int(raw.get("output_tokens")),
        input_audio_tokens=_int(details.get("audio_tokens")),
    )


def response_facts_openai_transcription(response: Mapping[str, Any]) -> ResponseFacts:
    """A transcription answer (``json`` or ``verbose_json``): its usage, else its ``duration``."""
    raw = response.get("usage")
    if isinstance(raw, Mapping):
        return ResponseFacts(usage=usage_from_openai_transcription(raw))
    duration = audio_ms(response.get("duration"))
    if duration is not None:
        return ResponseFacts(usage=Usage(input_audio_ms=duration, input_source="none", output_source="none"))
    return ResponseFacts(usage=None)


def usage_from_openai_speech(raw: Mapping[str, Any] | None) -> Usage:
    """The ``usage`` of a speech stream's ``speech.audio.done`` event (output tokens are audio)."""
    raw = raw or {}
    output = _int(raw.get("output_tokens"))
    return _sourced(
        input_tokens=_int(raw.get("input_tokens")), output_tokens=output, output_audio_tokens=output
    )


def response_facts_openai_speech(response: Mapping[str, Any]) -> ResponseFacts:
    """A speech event or object carrying ``usage`` (the audio answer itself has none)."""
    raw = response.get("usage")
    return ResponseFacts(usage=usage_from_openai_speech(raw) if isinstance(raw, Mapping) else None)


def _fields(usage: Usage) -> dict[str, Any]:
    return usage.to_dict()


_DONE = {
    "openai-images": ("image_generation.completed", "image_edit.completed"),
    "openai-transcription": ("transcript.text.done",),
    "openai-speech": ("speech.audio.done",),
}
_USAGE_OF = {
    "openai-images": usage_from_openai_images,
    "openai-transcription": usage_from_openai_transcription,
    "openai-speech": usage_from_openai_speech,
}


class MediaStream:
    """Reads an images, transcription or speech SSE stream: the last event's usage, and the
    transcript's text deltas (the only generated text these streams carry).

    Attributes:
        model / response_id / finish_reason: not sent by these streams (None).
    """

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.model: str | None = None
        self.response_id: str | None = None
        self.finish_reason: str | None = None
        self._usage: Usage | None = None

    def feed(self, event: Mapping[str, Any]) -> str:
        """Take one event; return the transcript text it adds (``""`` for the others)."""
        kind = event.get("type")
        if kind in _DONE[self.dialect]:
            self.finish_reason = "stop"
            raw = event.get("usage")
            if isinstance(raw, Mapping):
                self._usage = _USAGE_OF[self.dialect](raw)
        if kind == "transcript.text.delta" and isinstance(event.get("delta"), str):
            return str(event["delta"])
        return ""

    @property
    def usage(self) -> Usage | None:
        """The usage of the final event, or None before it."""
        return self._usage
