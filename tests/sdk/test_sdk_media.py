"""Images and audio through the SDK (issue 16 item 6): ``client.images.generate``,
``client.audio.transcriptions.create`` and ``client.audio.speech.create`` of a wrapped ``openai``
client, against the fake provider, charge the same literals as the gateway
(``tests/gateway/test_gateway_media.py`` has the arithmetic), sync and async; a budget that cannot
pay raises ``BudgetExceeded`` before anything reaches the provider.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import openai
import pytest

import tokenward
from tests.support.fixtures import UPSTREAM_KEY
from tests.support.media import APPLE, SPEECH_TEXT, wav

D = Decimal


def test_the_wrapped_client_charges_images_and_audio(fake) -> None:
    guard = tokenward.Guard("memory://")
    client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    client.images.generate(model="dall-e-3", prompt=APPLE, size="1024x1792", quality="hd")
    client.images.generate(model="gpt-image-1", prompt=APPLE, size="1024x1536", quality="high", n=2)
    client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(9400), "audio/wav"))
    client.audio.transcriptions.create(model="gpt-4o-transcribe", file=("a.wav", wav(9400), "audio/wav"))
    speech = client.audio.speech.create(model="tts-1", voice="alloy", input=SPEECH_TEXT)
    assert speech.content.startswith(b"RIFF")
    # 0.120 (dall-e-3 hd 1024x1792); 3 x $5 + 12480 x $40 per 1M; 9 s x $0.006 / 60;
    # 94 x $6 + 20 x $10 per 1M; 28 characters x $15 per 1M
    assert [e.cost_usd for e in guard.ledger.events()] == [
        D("0.120"),
        D("0.499215"),
        D("0.0009"),
        D("0.000764"),
        D("0.00042"),
    ]
    assert [e.endpoint for e in guard.ledger.events()] == [
        "openai-images",
        "openai-images",
        "openai-transcription",
        "openai-transcription",
        "openai-speech",
    ]


def test_the_async_client_too(fake) -> None:
    guard = tokenward.Guard("memory://")
    client = guard.wrap(openai.AsyncOpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))

    async def run() -> None:
        await client.images.generate(model="dall-e-2", prompt=APPLE, size="512x512", n=3)
        await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(9400), "audio/wav"))

    asyncio.run(run())
    # 3 x $0.018; 9 s x $0.006 / 60
    assert [e.cost_usd for e in guard.ledger.events()] == [D("0.054"), D("0.0009")]


def test_a_budget_that_cannot_pay_raises_before_the_call(fake) -> None:
    guard = tokenward.Guard("memory://", budgets=["user=alice:cost_usd=0.10"])
    client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    httpx.delete(f"{fake.url}/_fake/requests")
    with guard.session("s-1", user="alice"), pytest.raises(tokenward.BudgetExceeded) as denied:
        client.images.generate(model="dall-e-3", prompt=APPLE, size="1024x1792", quality="hd")
    assert denied.value.requested == D("0.120")
    assert list(guard.ledger.events()) == []
    assert httpx.get(f"{fake.url}/_fake/requests").json() == []


def test_unreadable_audio_is_refused_not_let_through_unguarded(fake) -> None:
    guard = tokenward.Guard("memory://")
    client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    httpx.delete(f"{fake.url}/_fake/requests")
    with pytest.raises(tokenward.ValidationError, match="duration"):
        client.audio.transcriptions.create(model="whisper-1", file=("a.webm", b"\x1aE\xdf\xa3" + b"\0" * 64))
    assert httpx.get(f"{fake.url}/_fake/requests").json() == []
