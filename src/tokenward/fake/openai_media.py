"""The fake's OpenAI images and audio endpoints, answered as OpenAI documents them (openai-python's
``ImagesResponse``, ``Transcription``/``TranscriptionVerbose`` and the speech endpoint, read
2026-12-07).

* ``POST /v1/images/generations`` (JSON) and ``POST /v1/images/edits`` (multipart form, or JSON):
  ``n`` images in ``data`` (``b64_json`` of a 1x1 PNG; DALL·E with ``response_format: "url"`` gets
  URLs). GPT image models (``gpt-image-*``, ``chatgpt-image-*``) echo ``size`` and ``quality``
  (``auto`` answers as ``1024x1024`` and ``medium``) and report ``usage``: input = the prompt's
  pieces plus 194 image tokens per input image of an edit (the fake's rule); output = ``n x``
  the tokens OpenAI bills for one image of that size and quality
  (:func:`tokenward.core.media.image_output_tokens`), all image tokens. DALL·E answers carry no usage.
* ``POST /v1/audio/transcriptions`` (multipart form): the transcript is the fake reply
  (``reply_tokens`` words). The audio's duration is read from the file with ``tinytag`` (a file
  it cannot read is a 400, as OpenAI refuses a file it cannot decode). ``whisper-1`` reports
  ``usage: {"type": "duration", "seconds"}``; other models ``{"type": "tokens", ...}`` with one
  audio token per 100 ms (rounded up, the fake's rule), the prompt's pieces as text tokens, and
  the transcript's tokens as output. ``response_format``: ``json`` (default), ``verbose_json``
  (adds ``duration``, ``language``, ``task``, no segments), ``text``, ``srt``, ``vtt`` (plain
  text, no usage).
* ``POST /v1/audio/speech`` (JSON): WAV bytes of silence (8 kHz, 8-bit mono), one second per 15
  characters of ``input`` rounded up, whatever ``response_format`` says (the content type follows
  it); no usage, as OpenAI's audio answer has none.

Options (body ``fake`` key for JSON, or the ``x-fake-options`` header): ``status``,
``latency_ms``, ``reply_tokens``, ``response`` (replayed as the JSON answer) and ``usage``
(``omit`` leaves the usage out; ``zero`` reports zeros).
"""

from __future__ import annotations

import base64
import io
import json
import math
import wave
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from tokenward.core.dialects.openai_media import audio_ms
from tokenward.core.media import image_output_tokens
from tokenward.errors import ValidationError
from tokenward.fake.counting import count_pieces, reply_text
from tokenward.fake.openai_chat import error_response
from tokenward.fake.options import OPTION_HEADER, OPTION_KEY, FakeOptions, FakeSettings, resolve_options
from tokenward.fake.streaming import pause
from tokenward.guard.wire.forms import Form, parse_form

__all__ = ["INPUT_IMAGE_TOKENS", "answer"]

INPUT_IMAGE_TOKENS = 194
"""Image tokens the fake reports per input image of an edit."""
_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
    )
).decode()
_AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


def _gpt_image(model: str) -> bool:
    return model.lower().startswith(("gpt-image", "chatgpt-image"))


async def _read(request: Request) -> tuple[dict[str, Any], Form | None, Any]:
    """The body's fields, its form (multipart bodies), and the ``fake`` options of a JSON body."""
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/"):
        form = parse_form(raw, content_type)
        return {k: v for k, v in form.fields}, form, None
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValidationError("We could not parse the JSON body of your request.", field="body") from None
    if not isinstance(body, dict):
        raise ValidationError("The request body must be a JSON object.", field="body")
    return body, None, body.pop(OPTION_KEY, None)


def _count(value: Any, name: str) -> int:
    if value is None:
        return 1
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10:
        raise ValidationError(f"Invalid '{name}': must be an integer from 1 to 10.", field=name)
    return value


def _images(body: dict[str, Any], form: Form | None, options: FakeOptions, edit: bool) -> Response:
    model = str(body.get("model") or "dall-e-2")
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise ValidationError("Missing required parameter: 'prompt'.", field="prompt")
    n = _count(body.get("n"), "n")
    inputs = 0
    if edit:
        inputs = (
            len([f for f in form.files if f.name in ("image", "image[]")])
            if form
            else len(body.get("images") or ())
        )
        if not inputs:
            raise ValidationError("Missing required parameter: 'image'.", field="image")
    answer: dict[str, Any] = {"created": 1_700_000_000}
    if _gpt_image(model):
        size = body.get("size") if body.get("size") not in (None, "auto") else "1024x1024"
        quality = body.get("quality") if body.get("quality") not in (None, "auto") else "medium"
        per_image = image_output_tokens(model, str(size), str(quality))
        answer |= {
            "data": [{"b64_json": _PNG} for _ in range(n)],
            "size": size,
            "quality": quality,
            "output_format": "png",
            "background": "opaque",
        }
        text, image = count_pieces(prompt), INPUT_IMAGE_TOKENS * inputs
        usage: dict[str, Any] = {
            "input_tokens": text + image,
            "input_tokens_details": {"text_tokens": text, "image_tokens": image},
            "output_tokens": n * per_image,
            "output_tokens_details": {"image_tokens": n * per_image, "text_tokens": 0},
            "total_tokens": text + image + n * per_image,
        }
        if options.usage == "zero":
            usage = {k: 0 if isinstance(v, int) else {d: 0 for d in v} for k, v in usage.items()}
        if options.usage != "omit":
            answer["usage"] = usage
    else:
        url = body.get("response_format") == "url"
        revised = {"revised_prompt": prompt} if model.startswith("dall-e-3") else {}
        answer["data"] = [
            {**({"url": f"https://fake.invalid/images/{i}.png"} if url else {"b64_json": _PNG}), **revised}
            for i in range(n)
        ]
    return JSONResponse(answer)


def _transcription(body: dict[str, Any], form: Form | None, options: FakeOptions) -> Response:
    upload = next((f for f in form.files if f.name == "file"), None) if form else None
    if upload is None:
        raise ValidationError("Missing required parameter: 'file'.", field="file")
    from tinytag import TinyTag, TinyTagException

    try:
        duration = TinyTag.get(file_obj=io.BytesIO(upload.data), tags=False).duration
    except (TinyTagException, OSError, ValueError, EOFError, IndexError, KeyError):
        duration = None
    if not duration:
        raise ValidationError("Audio file might be corrupted or unsupported", field="file")
    seconds = round(duration, 3)
    model = str(body.get("model") or "")
    text = reply_text(options.reply_tokens)
    if model.startswith("whisper"):
        usage: dict[str, Any] = {"type": "duration", "seconds": seconds}
    else:
        audio = math.ceil((audio_ms(seconds) or 0) / 100)
        prompt = count_pieces(str(body.get("prompt") or ""))
        output = options.reply_tokens
        usage = {
            "type": "tokens",
            "input_tokens": audio + prompt,
            "input_token_details": {"audio_tokens": audio, "text_tokens": prompt},
            "output_tokens": output,
            "total_tokens": audio + prompt + output,
        }
    fmt = body.get("response_format") or "json"
    if fmt in ("text", "srt", "vtt"):
        if fmt == "text":
            return PlainTextResponse(text + "\n")
        cue = (
            "1\n00:00:00,000 --> 00:00:01,000\n"
            if fmt == "srt"
            else "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n"
        )
        return PlainTextResponse(cue + text + "\n")
    answer: dict[str, Any] = {"text": text}
    if fmt == "verbose_json":
        answer = {
            "task": "transcribe",
            "language": "english",
            "duration": seconds,
            "text": text,
            "segments": [],
        }
    if options.usage != "omit":
        answer["usage"] = usage
    return JSONResponse(answer)


def _speech(body: dict[str, Any]) -> Response:
    text = body.get("input")
    if not isinstance(text, str) or not text:
        raise ValidationError("Missing required parameter: 'input'.", field="input")
    if not isinstance(body.get("voice"), str | dict):
        raise ValidationError("Missing required parameter: 'voice'.", field="voice")
    seconds = math.ceil(len(text) / 15)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(1)
        audio.setframerate(8000)
        audio.writeframes(b"\x80" * 8000 * seconds)
    kind = _AUDIO_TYPES.get(str(body.get("response_format") or "mp3"), "audio/mpeg")
    return Response(buffer.getvalue(), media_type=kind)


async def answer(request: Request, settings: FakeSettings, kind: str) -> tuple[Any, Response]:
    """(what to record as the request's body, the answer) for one of the media endpoints:
    ``kind`` is ``generations``, ``edits``, ``transcriptions`` or ``speech``."""
    try:
        body, form, fake = await _read(request)
        options = resolve_options(fake, request.headers.get(OPTION_HEADER), settings)
    except ValidationError as err:
        return None, error_response(400, str(err), err.field)
    recorded = {**body, "files": [f.name for f in form.files]} if form else body
    await pause(options.latency_ms)
    if options.status is not None:
        return recorded, error_response(options.status, f"fake provider: status {options.status} requested")
    if options.response is not None:
        return recorded, JSONResponse(options.response)
    try:
        if kind in ("generations", "edits"):
            return recorded, _images(body, form, options, kind == "edits")
        if kind == "transcriptions":
            return recorded, _transcription(body, form, options)
        return recorded, _speech(body)
    except ValidationError as err:
        return recorded, error_response(400, str(err), err.field)
