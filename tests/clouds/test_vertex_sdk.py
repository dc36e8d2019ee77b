"""``google.genai.Client`` (Gemini API and ``vertexai=True``) and ``anthropic.AnthropicVertex``
wrapped by ``tokenward.Guard``, against the fake provider: Vertex's calls authenticated with a
Google access token the clients get themselves from application-default credentials (the
service-account file of ``conftest``), the Gemini API's with the fake's key.

Expected figures: the fake's documented counts and Google's published rates as genai-prices holds
them (gemini-2.5-flash $0.30 / $2.50, Claude Sonnet 4.5 $3 / $15 per 1M tokens; Claude on a
regional Vertex endpoint times 1.1).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import anthropic
import httpx
import pytest
from google import genai
from google.genai import types

import tokenward
from tests.support.fixtures import UPSTREAM_KEY

HELLO_20 = " ".join(["hello"] * 20)
CLAUDE = "claude-sonnet-4-5@20250929"


def paths(fake) -> list[str]:
    return [
        r["path"]
        for r in httpx.get(f"{fake.url}/_fake/requests").json()
        if not r["path"].startswith("/_fake")
    ]


def test_google_genai_gemini_api_json_stream_and_denial(fake) -> None:
    guard = tokenward.Guard("memory://", budgets=["session:total_tokens=70"])
    client = guard.wrap(genai.Client(api_key=UPSTREAM_KEY, http_options=types.HttpOptions(base_url=fake.url)))
    with guard.session("s-1"):
        reply = client.models.generate_content(model="gemini-2.5-flash", contents="Say hello")
        text = "".join(
            c.text or ""
            for c in client.models.generate_content_stream(model="gemini-2.5-flash", contents="Say hello")
        )
        with pytest.raises(tokenward.BudgetExceeded):
            client.models.generate_content(model="gemini-2.5-flash", contents="Say hello")
    assert reply.text == HELLO_20 and text == HELLO_20
    first, second = guard.ledger.events()
    prompt = reply.usage_metadata.prompt_token_count
    assert (first.provider, first.model, first.usage.input_tokens, first.usage.output_tokens) == (
        "google",
        "gemini-2.5-flash",
        prompt,
        20,
    )
    assert first.cost_usd == (prompt * Decimal("0.30") + 20 * Decimal("2.50")) / 10**6
    assert second.usage.output_tokens == 20
    # the non-streamed call was read as a stream, to be stopped at its hold
    assert paths(fake) == ["/v1/models/gemini-2.5-flash:streamGenerateContent"] * 2


def test_google_genai_vertex_async_cut_off(vertex_fake) -> None:
    guard = tokenward.Guard("memory://")
    client = guard.wrap(
        genai.Client(
            vertexai=True,
            project="proj",
            location="global",
            http_options=types.HttpOptions(base_url=vertex_fake.url),
        )
    )

    async def main() -> str:
        config = types.GenerateContentConfig(max_output_tokens=7)
        stream = await client.aio.models.generate_content_stream(
            model="gemini-2.5-flash", contents="Say hello", config=config
        )
        return "".join([c.text or "" async for c in stream])

    with guard.session("s-2"):
        text = asyncio.run(main())
    assert text.split() == ["hello"] * 7
    [event] = guard.ledger.events()
    assert event.provider == "google" and event.usage.output_tokens == 7
    assert paths(vertex_fake) == [
        "/v1beta1/projects/proj/locations/global/publishers/google/models/gemini-2.5-flash:streamGenerateContent"
    ]


def test_anthropic_vertex_regional_priced_with_uplift(vertex_fake) -> None:
    guard = tokenward.Guard("memory://")
    client = guard.wrap(
        anthropic.AnthropicVertex(region="us-east5", project_id="proj", base_url=f"{vertex_fake.url}/v1")
    )
    with guard.session("s-3"):
        message = client.messages.create(
            model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
        )
    assert message.content[0].text == HELLO_20
    [event] = guard.ledger.events()
    assert (event.provider, event.usage.input_tokens, event.usage.output_tokens) == ("google:regional", 6, 20)
    assert event.cost_usd == (6 * Decimal(3) + 20 * Decimal(15)) * Decimal("1.1") / 10**6
    assert paths(vertex_fake) == [
        f"/v1/projects/proj/locations/us-east5/publishers/anthropic/models/{CLAUDE}:streamRawPredict"
    ]


def test_google_genai_calls_tokenward_cannot_meter_are_refused_before_they_are_sent(fake) -> None:
    """Gemini embeddings (``:batchEmbedContents``) and batches (``:batchGenerateContent``) are
    billed, and tokenward meters neither: a wrapped ``genai.Client`` sent them on untouched, so a
    hard session budget never saw them (the OpenAI and Anthropic clients' such calls raise
    ``UnmeteredCall``). Refused before anything is sent; ``unmetered="allow"`` sends them."""
    guard = tokenward.Guard("memory://", budgets=["session:total_tokens=70"])
    client = guard.wrap(genai.Client(api_key=UPSTREAM_KEY, http_options=types.HttpOptions(base_url=fake.url)))
    with guard.session("s-1"):
        with pytest.raises(tokenward.UnmeteredCall) as embedded:
            client.models.embed_content(model="gemini-embedding-001", contents="hi")
        assert embedded.value.path == "/v1/models/gemini-embedding-001:batchEmbedContents"
        with pytest.raises(tokenward.UnmeteredCall):
            client.batches.create(
                model="gemini-2.5-flash", src=[{"contents": [{"parts": [{"text": "hi"}], "role": "user"}]}]
            )
        client.models.generate_content(model="gemini-2.5-flash", contents="Say hello")  # metered: goes on
    assert paths(fake) == ["/v1/models/gemini-2.5-flash:streamGenerateContent"]
    allowed = guard.wrap(
        genai.Client(api_key=UPSTREAM_KEY, http_options=types.HttpOptions(base_url=fake.url)),
        unmetered="allow",
    )
    with pytest.raises(genai.errors.ClientError):  # the fake serves no embeddings: its 404
        allowed.models.embed_content(model="gemini-embedding-001", contents="hi")
