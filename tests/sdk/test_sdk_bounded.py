"""Issue 14, item 1 in the SDK: a wrapped client's non-streamed call is bounded too.

The official clients, wrapped by :class:`tokenward.Guard`, call the fake provider in process
(:mod:`tokenward.fake.transport`), which generates as it is read and tallies what it generated.
"""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

import tokenward
from tokenward.fake import FakeSettings, create_app
from tokenward.fake.transport import FakeTransport, SyncFakeTransport

HELLO = [{"role": "user", "content": "Say hello"}]
IGNORING = {"ignore_max_tokens": True, "reply_tokens": 2005, "chunk_tokens": 1}


def words(n: int) -> str:
    return " ".join(["hello"] * n)


def test_a_wrapped_openai_clients_non_streamed_call_stops_at_its_hold() -> None:
    """The upstream ignores max_tokens=28 and would send 2,005 tokens: the wrapped client gets
    28 and a length finish; 29 arrived (the last one past the hold) and 29 are charged."""
    app = create_app(FakeSettings())
    guard = tokenward.Guard("memory://")
    http = httpx.Client(transport=SyncFakeTransport(app))
    client = guard.wrap(openai.OpenAI(api_key="sk-test", base_url="http://fake.test/v1", http_client=http))
    with guard.session("s-sdk"):
        completion = client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, max_tokens=28, extra_body={"fake": IGNORING}
        )
    http.close()
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == words(28)
    assert completion.usage is not None and completion.usage.completion_tokens == 28
    (event,) = guard.ledger.events()
    record = app.state.tally.get(event.metadata["response_id"])
    assert record["output_tokens"] == 29 and event.charged["output_tokens"] == 29
    assert event.status == "cut_off" and event.metadata["bounded"] == "stream"


def test_a_wrapped_async_client_reporting_zero_usage_is_charged_what_it_sent() -> None:
    app = create_app(FakeSettings())
    guard = tokenward.Guard("memory://")

    async def call() -> openai.types.chat.ChatCompletion:
        http = httpx.AsyncClient(transport=FakeTransport(app))
        client = guard.wrap(
            openai.AsyncOpenAI(api_key="sk-test", base_url="http://fake.test/v1", http_client=http)
        )
        try:
            return await client.chat.completions.create(
                model="gpt-4o-mini", messages=HELLO, max_tokens=50, extra_body={"fake": {"usage": "zero"}}
            )
        finally:
            await http.aclose()

    completion = asyncio.run(call())
    assert completion.usage is not None and completion.usage.completion_tokens == 0  # as reported
    (event,) = guard.ledger.events()
    assert event.disputed and event.charged["output_tokens"] == 20  # the fake's 20-word reply
    assert app.state.tally.get(event.metadata["response_id"])["output_tokens"] == 20


def test_a_client_wrapped_with_trust_sends_non_streamed_calls_as_they_are() -> None:
    app = create_app(FakeSettings())
    guard = tokenward.Guard("memory://")
    http = httpx.Client(transport=SyncFakeTransport(app))
    client = openai.OpenAI(api_key="sk-test", base_url="http://fake.test/v1", http_client=http)
    client = guard.wrap(client, bound_non_streamed="trust")
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, max_tokens=28, extra_body={"fake": {**IGNORING, "usage": "zero"}}
    )
    http.close()
    assert completion.choices[0].finish_reason == "stop" and completion.usage is not None
    (event,) = guard.ledger.events()
    assert "bounded" not in event.metadata
    assert event.disputed and event.charged["output_tokens"] == 2005  # the floor: what it sent
    with pytest.raises(tokenward.ConfigError, match="bound_non_streamed must be one of stream, trust"):
        guard.wrap(openai.OpenAI(api_key="sk-test"), bound_non_streamed="never")
