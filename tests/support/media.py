"""Fixtures of the images and audio worked cases: audio files of known duration, and the prices.

The WAV files are made here with the standard library (8 kHz, 8-bit mono silence), so their
duration is exact: frames / rate.
"""

from __future__ import annotations

import io
import wave

__all__ = ["APPLE", "SPEECH_TEXT", "wav"]

APPLE = "a red apple"
"""An image prompt: 3 tokens in o200k_base ("a", " red", " apple") and 3 fake pieces."""

SPEECH_TEXT = "Hello world, this is a test."
"""28 characters."""


def wav(milliseconds: int, rate: int = 8000) -> bytes:
    """A WAV file of silence lasting exactly ``milliseconds`` (at ``rate`` frames a second)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(1)
        audio.setframerate(rate)
        audio.writeframes(b"\x80" * (rate * milliseconds // 1000))
    return buffer.getvalue()
