"""Multipart forms of the image-edit and transcription endpoints: read, and written again only
when a field changes (a fallback model), with the files and the boundary kept."""

from __future__ import annotations

import httpx
import pytest

from tests.support.media import wav
from tokenward.errors import ValidationError
from tokenward.guard.wire.endpoints import OpenAITranscriptions
from tokenward.guard.wire.exchange import prepare, prepare_body, upstream_content_type
from tokenward.guard.wire.forms import parse_form


def _form(model: str, data: bytes) -> tuple[bytes, str]:
    request = httpx.Request(
        "POST",
        "http://x",
        data={"model": model, "prompt": "héllo"},
        files={"file": ("a.wav", data, "audio/wav")},
    )
    return request.read(), request.headers["content-type"]


def test_a_form_goes_upstream_as_sent_unless_its_model_changes() -> None:
    audio = wav(1500) + b"\r\n--not-a-boundary\r\n"
    raw, content_type = _form("whisper-1", audio)
    endpoint = OpenAITranscriptions()
    call = prepare(endpoint, raw, content_type)
    assert call.body["_audio_ms"] == 1500 and call.body["prompt"] == "héllo"
    assert endpoint.request_content(call.body) == raw and upstream_content_type(call) == content_type
    fallback = prepare_body(endpoint, {**call.body, "model": "gpt-4o-transcribe"})
    again = parse_form(endpoint.request_content(fallback.body), upstream_content_type(fallback))
    assert again.value("model") == "gpt-4o-transcribe" and again.value("prompt") == "héllo"
    assert again.files[0].data == audio and again.files[0].filename == "a.wav"


def test_a_body_that_is_not_a_form_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="multipart/form-data"):
        prepare(OpenAITranscriptions(), b'{"model": "whisper-1"}', "application/json")
    with pytest.raises(ValidationError, match="file is required"):
        raw = httpx.Request("POST", "http://x", data={"model": "whisper-1"}, files={"other": ("x", b"1")})
        prepare(OpenAITranscriptions(), raw.read(), raw.headers["content-type"])
