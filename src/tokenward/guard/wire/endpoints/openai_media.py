"""OpenAI's images and audio endpoints: generations, edits, transcriptions and speech.

Request fields (openai-python's ``ImageGenerateParams``, ``ImageEditParams``,
``TranscriptionCreateParams``, ``SpeechCreateParams``, read 2026-12-07):

* ``POST /v1/images/generations`` (JSON): ``prompt``; ``model`` (``dall-e-2`` when absent, as the
  API defaults); ``n`` (1-10); ``size``; ``quality``; ``stream`` and ``partial_images`` (GPT image
  models).
* ``POST /v1/images/edits`` (multipart form): ``image`` (one file, or several as ``image[]``),
  ``mask``, ``prompt``, ``model``, ``n``, ``size``, ``quality``, ``input_fidelity``.
* ``POST /v1/audio/transcriptions`` (multipart form): ``file``, ``model``, ``prompt``,
  ``response_format`` (``json``, ``verbose_json``, ``text``, ``srt``, ``vtt``, ``diarized_json``),
  ``stream``.
* ``POST /v1/audio/speech`` (JSON): ``model``, ``input`` (at most 4,096 characters), ``voice``,
  ``instructions``, ``response_format``, ``speed``, ``stream_format``; the answer is audio bytes.

None of them has an output bound to send: the hold is the call's whole worst case
(:mod:`tokenward.core.media`) and is never clamped. Streamed answers (``stream: true``,
``stream_format: "sse"``) are refused with a 400: tokenward does not relay them yet.

The duration of an uploaded audio file is read with ``tinytag`` (MP3, MP4/M4A, WAV, FLAC, OGG and
Opus, AIFF, WMA; pure Python, no ffmpeg). A file whose duration it cannot read (WebM, or a
browser recording without a duration in its header) is refused with a 400 naming ``file``: its
price could not be held.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from typing import Any

from tokenward.core.dialects import response_facts
from tokenward.core.dialects.openai_media import audio_ms
from tokenward.core.estimate import Estimate, count_tokens, estimate_text_inputs
from tokenward.core.images import image_size, openai_image_tokens
from tokenward.core.media import AUDIO_TOKENS_PER_SECOND
from tokenward.core.modifiers import MediaRequest, RequestFacts
from tokenward.core.usage import Usage
from tokenward.guard.flow import Outcome
from tokenward.guard.wire.endpoints.base import Endpoint, StreamState, require, require_object_with_model
from tokenward.guard.wire.forms import Form, parse_form

__all__ = [
    "OpenAIImageEdits",
    "OpenAIImages",
    "OpenAISpeech",
    "OpenAITranscriptions",
    "audio_duration_ms",
]

_FORM = "_form"  # the parsed multipart form, kept in the body beside its fields
_AUDIO_MS = "_audio_ms"  # the uploaded audio's duration, read once when the form is parsed
SPEECH_MAX_CHARACTERS = 4096


def audio_duration_ms(data: bytes) -> int | None:
    """The duration of an audio file in milliseconds, read from its headers with ``tinytag``, or
    None when the format is not one it reads or the file states no duration."""
    from tinytag import TinyTag, TinyTagException

    try:
        tag = TinyTag.get(file_obj=io.BytesIO(data), tags=False)
    except (TinyTagException, OSError, ValueError, EOFError, IndexError, KeyError):
        return None
    return audio_ms(tag.duration) if tag.duration else None


def _positive_int(value: Any, name: str, most: int | None = None) -> int | None:
    """A form or JSON count: an int (or its text, in a form) of at least 1, or None when absent."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    require(
        ok and (most is None or value <= most),
        f"{name} must be a whole number from 1" + (f" to {most}" if most else ""),
        name,
    )
    return int(value)


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _optional_text(body: Mapping[str, Any], name: str) -> None:
    require(body.get(name) is None or isinstance(body.get(name), str), f"{name} must be a string", name)


class _Media(Endpoint):
    """What every images and audio endpoint shares: no output bound, no streams relayed."""

    family = "openai"
    media_kind = ""
    streams = False

    def requested_max(self, body: Mapping[str, Any]) -> int | None:
        """No output bound is sent: the hold is the whole worst case."""
        return None

    def with_bound(self, body: dict[str, Any], bound: int, provider: str) -> dict[str, Any]:
        """The body unchanged (there is no output bound to set)."""
        return body

    def prepare_stream(self, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Never called: streamed answers are refused in :meth:`validate`."""
        return body, False

    def response_text(self, response: Mapping[str, Any]) -> str:
        """Generated text (a transcript's ``text``)."""
        text = response.get("text")
        return text if isinstance(text, str) else ""

    def relay(
        self, name: str | None, data: str, event: Mapping[str, Any], state: StreamState
    ) -> bytes | None:
        """Never called (no streams)."""
        return None

    def truncate(self, event: Mapping[str, Any], keep_tokens: int, encoding: str) -> Mapping[str, Any]:
        """Never called (no streams)."""
        return event

    def encode(self, name: str | None, event: Mapping[str, Any]) -> bytes:
        """An SSE event (never used: no streams)."""
        return f"data: {json.dumps(event)}\n\n".encode()

    def closing(self, state: StreamState, *, model: str, input_tokens: int, reason: str) -> list[bytes]:
        """Nothing (no streams)."""
        return []

    def error_event(self, message: str) -> bytes:
        """An OpenAI-shaped error event (never used: no streams)."""
        return self.encode(None, {"type": "error", "error": {"message": message}})

    def is_end(self, name: str | None, data: str, event: Mapping[str, Any] | None) -> bool:
        """Never called (no streams)."""
        return True

    def _answer(self, data: Any) -> dict[str, Any] | None:
        return data if isinstance(data, dict) else None


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


class OpenAIImages(_Media):
    """``POST /v1/images/generations``."""

    dialect = "openai-images"
    path = "/v1/images/generations"
    media_kind = "image"

    def parse(self, raw: bytes, content_type: str | None) -> Any:
        """JSON; a body without ``model`` names ``dall-e-2``, the API's default."""
        body = json.loads(raw)
        if isinstance(body, dict) and "model" not in body:
            body["model"] = "dall-e-2"
        return body

    def validate(self, body: Any) -> None:
        """Refuse a malformed body (names the field), and streamed generation."""
        require_object_with_model(body)
        require(isinstance(body.get("prompt"), str), "prompt is required and must be a string", "prompt")
        _positive_int(body.get("n"), "n", 10)
        for name in ("size", "quality"):
            _optional_text(body, name)
        require(
            not _truthy(body.get("stream")),
            "streamed image generation is not metered by tokenward yet: send stream: false",
            "stream",
        )

    def estimate(self, body: Mapping[str, Any], model: str) -> Estimate:
        """The prompt's tokens."""
        return estimate_text_inputs(body.get("prompt") or "", model)

    def request_facts(self, body: Mapping[str, Any]) -> RequestFacts:
        """The images, their size and quality."""
        return RequestFacts(media=self._media(body))

    def _media(self, body: Mapping[str, Any]) -> MediaRequest:
        n = body.get("n")
        return MediaRequest(
            "image",
            images=int(n) if isinstance(n, int | str) and str(n).isdigit() else 1,
            image_size=body.get("size") if isinstance(body.get("size"), str) else None,
            image_quality=body.get("quality") if isinstance(body.get("quality"), str) else None,
        )

    def read_answer(
        self, body: Mapping[str, Any], content: bytes, content_type: str | None
    ) -> Outcome | None:
        """The images in ``data`` and the usage GPT image models report; the size and quality
        generated (the answer's, else the request's) in the metadata, for per-image prices."""
        media = self._media(body)
        data = self._answer(_json(content))
        usage = response_facts(self.dialect, data).usage if data is not None else None
        if usage is None:  # an answer we cannot read: the images asked for
            usage = Usage(
                images=media.images,
                input_source="none",
                output_source="none",
                units_source="preflight_estimate",
            )
        metadata: dict[str, Any] = {"images": usage.images}
        answered = data or {}
        size = answered.get("size") if isinstance(answered.get("size"), str) else media.image_size
        quality = answered.get("quality") if isinstance(answered.get("quality"), str) else media.image_quality
        if size:
            metadata["image_size"] = size
        if quality:
            metadata["image_quality"] = quality
        return Outcome(usage, None, "ok", metadata=metadata)


class OpenAIImageEdits(OpenAIImages):
    """``POST /v1/images/edits``: a multipart form with the images to edit (or JSON references)."""

    path = "/v1/images/edits"

    def parse(self, raw: bytes, content_type: str | None) -> Any:
        """The form's fields, typed as the API reads them, with the form kept under ``_form``;
        a JSON body is read as JSON."""
        if content_type and content_type.lower().startswith("application/json"):
            return super().parse(raw, content_type)
        form = parse_form(raw, content_type)
        body: dict[str, Any] = {k: v for k, v in form.fields}
        body.setdefault("model", "dall-e-2")
        body[_FORM] = form
        return body

    def validate(self, body: Any) -> None:
        """Refuse a malformed body: a prompt and at least one image are required."""
        super().validate(body)
        form = body.get(_FORM)
        if isinstance(form, Form):
            images = [f for f in form.files if f.name in ("image", "image[]")]
            require(bool(images), "image is required: the image (or images) to edit", "image")
        else:
            require(
                isinstance(body.get("images"), list) and bool(body["images"]),
                "images is required: the images to edit",
                "images",
            )

    def estimate(self, body: Mapping[str, Any], model: str) -> Estimate:
        """The prompt's tokens plus each input image's (OpenAI's tile rule at the GPT-4o rates, from
        the file's header; an image given by reference counts at the rule's worst case)."""
        text = estimate_text_inputs(body.get("prompt") or "", model)
        form = body.get(_FORM)
        sizes: list[tuple[int, int] | None]
        if isinstance(form, Form):
            sizes = [image_size(f.data) for f in form.files if f.name in ("image", "image[]")]
        else:
            sizes = [None for _ in body.get("images") or ()]
        costs = [openai_image_tokens("gpt-4o", size, None) for size in sizes]
        images = sum(c.tokens for c in costs)
        return Estimate(
            text.input_tokens + images,
            text.encoding,
            True,
            f"{text.basis}; {len(costs)} input image(s) by OpenAI's tile rule",
            family="openai",
            image_tokens=images,
            images_unknown_size=sum(not c.known_size for c in costs),
        )

    def request_content(self, body: Mapping[str, Any]) -> bytes:
        """The form as the client sent it (written again with a changed model)."""
        form = body.get(_FORM)
        if not isinstance(form, Form):
            return super().request_content({k: v for k, v in body.items() if not k.startswith("_")})
        return form.encoded({"model": str(body["model"])})[0]

    def content_type(self, body: Mapping[str, Any]) -> str:
        """The form's content type (with its boundary), or JSON."""
        form = body.get(_FORM)
        return form.content_type if isinstance(form, Form) else "application/json"


class OpenAITranscriptions(_Media):
    """``POST /v1/audio/transcriptions``: a multipart form with the audio file."""

    dialect = "openai-transcription"
    path = "/v1/audio/transcriptions"
    media_kind = "transcription"

    def parse(self, raw: bytes, content_type: str | None) -> Any:
        """The form's fields, the form under ``_form`` and the audio's duration under
        ``_audio_ms`` (None when it cannot be read)."""
        form = parse_form(raw, content_type)
        body: dict[str, Any] = {k: v for k, v in form.fields}
        body[_FORM] = form
        upload = next((f for f in form.files if f.name == "file"), None)
        body[_AUDIO_MS] = audio_duration_ms(upload.data) if upload is not None else None
        return body

    def validate(self, body: Any) -> None:
        """Refuse a malformed form, a stream, and audio whose duration cannot be read."""
        require_object_with_model(body)
        form = body.get(_FORM)
        require(
            isinstance(form, Form) and any(f.name == "file" for f in form.files),
            "file is required: the audio to transcribe",
            "file",
        )
        require(
            not _truthy(body.get("stream")),
            "streamed transcription is not metered by tokenward yet: send stream=false",
            "stream",
        )
        require(
            isinstance(body.get(_AUDIO_MS), int),
            "tokenward cannot read the duration of this audio file, so cannot hold its price: send "
            "mp3, mp4/m4a, wav, flac, ogg or opus with a duration in its header",
            "file",
        )

    def estimate(self, body: Mapping[str, Any], model: str) -> Estimate:
        """The prompt's tokens (the audio is held from its duration, see :mod:`tokenward.core.media`)."""
        return estimate_text_inputs(body.get("prompt") or "", model)

    def request_facts(self, body: Mapping[str, Any]) -> RequestFacts:
        """The audio's duration."""
        return RequestFacts(media=MediaRequest("transcription", audio_ms=body.get(_AUDIO_MS)))

    def request_content(self, body: Mapping[str, Any]) -> bytes:
        """The form as the client sent it (written again with a changed model)."""
        form = body[_FORM]
        return bytes(form.encoded({"model": str(body["model"])})[0])

    def content_type(self, body: Mapping[str, Any]) -> str:
        """The form's content type, with its boundary."""
        return str(body[_FORM].content_type)

    def read_answer(
        self, body: Mapping[str, Any], content: bytes, content_type: str | None
    ) -> Outcome | None:
        """The usage of a JSON answer; for a plain-text answer (``text``, ``srt``, ``vtt``) the
        audio's duration as read from the file and our count of the transcript."""
        data = self._answer(_json(content))
        usage = response_facts(self.dialect, data).usage if data is not None else None
        counted = None
        if usage is None:
            duration = body.get(_AUDIO_MS)
            seconds = math.ceil((duration or 0) / 1000)
            usage = Usage(
                input_audio_ms=duration,
                input_audio_tokens=seconds * AUDIO_TOKENS_PER_SECOND,
                input_source="none",
                output_source="none",
                units_source="preflight_estimate",
            )
            text = data.get("text") if data is not None else content.decode("utf-8", "replace")
            counted = count_tokens(text if isinstance(text, str) else "", "o200k_base")
        return Outcome(usage, counted, "ok", metadata={"audio_ms": body.get(_AUDIO_MS)})


class OpenAISpeech(_Media):
    """``POST /v1/audio/speech``: text in, audio bytes out."""

    dialect = "openai-speech"
    path = "/v1/audio/speech"
    media_kind = "speech"

    def validate(self, body: Any) -> None:
        """Refuse a malformed body (names the field) and the SSE form."""
        require_object_with_model(body)
        text = body.get("input")
        require(
            isinstance(text, str) and bool(text), "input is required and must be a non-empty string", "input"
        )
        require(
            len(text) <= SPEECH_MAX_CHARACTERS,
            f"input is at most {SPEECH_MAX_CHARACTERS} characters",
            "input",
        )
        _optional_text(body, "instructions")
        require(
            body.get("stream_format") in (None, "audio"),
            "stream_format sse is not metered by tokenward yet: leave it out or send audio",
            "stream_format",
        )

    def estimate(self, body: Mapping[str, Any], model: str) -> Estimate:
        """The tokens of the input and the instructions."""
        texts = [t for t in (body.get("input"), body.get("instructions")) if isinstance(t, str)]
        return estimate_text_inputs(texts, model)

    def request_facts(self, body: Mapping[str, Any]) -> RequestFacts:
        """The characters to speak."""
        text = body.get("input")
        return RequestFacts(
            media=MediaRequest("speech", characters=len(text) if isinstance(text, str) else 0)
        )

    def read_answer(
        self, body: Mapping[str, Any], content: bytes, content_type: str | None
    ) -> Outcome | None:
        """The characters of the input (what per-character prices bill); the audio answer has no
        token usage."""
        text = body.get("input")
        usage = Usage(
            input_characters=len(text) if isinstance(text, str) else 0,
            input_source="none",
            output_source="none",
        )
        return Outcome(usage, None, "ok", metadata={"audio_bytes": len(content)})
