"""Streams that do not end well: an upstream that ignores the output bound, one that breaks
midway, a client that goes away. Each call is still settled exactly once, and a cut stream ends
the way the provider ends a length-limited one."""

from __future__ import annotations

import time
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from tests.support.fixtures import KEY
from tokenward.core.budgets import Subject

MESSAGES = [{"role": "user", "content": "Say hello"}]


def wait_for_events(gateway, count: int, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = gateway.observer().events()
        if len(events) >= count:
            return events
        time.sleep(0.05)
    raise AssertionError(f"expected {count} events, found {len(gateway.observer().events())}")


def test_openai_stream_is_cut_at_the_hold_when_the_upstream_ignores_the_bound(start_gateway) -> None:
    # held at the default tier it is charged at (an omitted tier is otherwise held at the dearest)
    gateway = start_gateway(defaults={"service_tier": "default"})
    client = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"fake": {"ignore_max_tokens": True, "reply_tokens": 200, "chunk_tokens": 5}},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " ".join(["hello"] * 12)  # exactly the bound: the chunk that crossed it was trimmed
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].usage.completion_tokens == 12
    event = wait_for_events(gateway, 1)[0]
    # 15 words arrived by the cut (3 chunks of 5), 12 relayed: what arrived was generated and
    # is charged (15); the 3 past the hold are the overage of an upstream that ignores the bound
    assert event.status == "cut_off" and event.usage.output_tokens == 15
    assert event.usage.output_source == "counted_stream_text"
    overage = event.overage
    assert (overage["output_tokens"], overage["total_tokens"]) == (3, 3)
    assert overage["cost_usd"] == Decimal("0.60") * 3 / 10**6  # gpt-4o-mini output: $0.60 / M
    assert event.metadata["received_beyond_cut_tokens"] == 3


def test_anthropic_stream_is_cut_with_max_tokens_stop(start_gateway) -> None:
    gateway = start_gateway()
    client = anthropic.Anthropic(api_key=KEY, base_url=gateway.url, max_retries=0)
    with client.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=7,
        messages=MESSAGES,
        extra_body={"fake": {"ignore_max_tokens": True, "reply_tokens": 100}},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == " ".join(["hello"] * 7)
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 7
    event = wait_for_events(gateway, 1)[0]
    # chunks of 5 words: the second (words 6-10) crossed 7, and 3 words arrived past the cut.
    # Claude's tokenizer is not ours: what arrived (10 o200k tokens) floors the charge at
    # floor(10 x 0.75) = 7, the count relayed; the model counts its own tokens against its bound
    assert event.status == "cut_off" and event.usage.output_tokens == 7
    assert event.metadata["received_beyond_cut_tokens"] == 3
    assert event.usage.input_source == "provider"  # message_start carried the real input


def test_a_broken_stream_is_settled_from_our_count(start_gateway) -> None:
    budget = {"name": "s", "scope": "session", "meter": "total_tokens", "limit": 10_000}
    gateway = start_gateway(budgets=[budget])
    client = openai.OpenAI(
        api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0, default_headers={"x-tokenward-session": "b"}
    )
    received = ""
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for chunk in client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            extra_body={"fake": {"break_after_chunks": 4, "chunk_tokens": 5}},
        ):
            received += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    event = wait_for_events(gateway, 1)[0]
    assert event.status == "stream_broken"
    assert event.usage.output_tokens == 15  # role chunk + 3 text chunks of 5 words arrived
    assert event.usage.output_source == "counted_stream_text" and event.cost_estimated
    (balance,) = gateway.observer().balances(Subject(session="demo/b"))
    assert balance.held == 0 and balance.spent == event.charged["total_tokens"]


def test_a_client_that_goes_away_is_still_settled_once(start_gateway) -> None:
    budget = {"name": "s", "scope": "session", "meter": "total_tokens", "limit": 10_000}
    gateway = start_gateway(budgets=[budget], disconnect_grace_seconds=0)  # settle from our count at once
    body = {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "stream": True,
        "fake": {"reply_tokens": 400, "chunk_tokens": 2, "chunk_delay_ms": 20},
    }
    headers = {"authorization": f"Bearer {KEY}", "x-tokenward-session": "gone"}
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers) as response,
    ):
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    event = wait_for_events(gateway, 1)[0]
    assert event.status == "client_aborted"
    assert 0 < event.usage.output_tokens < 400
    (balance,) = gateway.observer().balances(Subject(session="demo/gone"))
    assert balance.held == 0 and balance.spent == event.charged["total_tokens"]


def test_the_in_process_fake_streams_chunk_by_chunk(tmp_path) -> None:
    """An upstream ``provider: fake`` without ``base_url`` (the README's example) streams as a
    real provider does: the first chunk reaches the client while the rest are still coming."""
    from tests.support.servers import serving
    from tokenward.gateway import GatewayConfig, create_app

    config = GatewayConfig.from_mapping(
        {
            "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
            "upstreams": [{"name": "fake", "provider": "fake"}],
            "keys": [{"key": KEY, "name": "k", "user": "alice"}],
        }
    )
    body = {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "stream": True,
        "fake": {"reply_tokens": 2, "chunk_tokens": 1, "chunk_delay_ms": 1000},
    }
    with serving(create_app(config)) as gateway:
        started = time.monotonic()
        headers = {"authorization": f"Bearer {KEY}"}
        with httpx.stream(
            "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers
        ) as response:
            lines = response.iter_lines()
            next(line for line in lines if '"content":"hello"' in line)  # the first word
            first_at = time.monotonic() - started
            rest = list(lines)
        ended_at = time.monotonic() - started
    assert "data: [DONE]" in rest
    # events 1 s apart: a buffered relay would hand the first one over only at the very end
    assert ended_at - first_at >= 1.5


def test_a_stream_given_to_a_call_that_did_not_ask_for_one_is_still_metered(start_gateway) -> None:
    """Some OpenAI-compatible servers stream whatever was asked: from an upstream the gateway
    trusts with non-streamed calls (``bound_non_streamed: trust``), the client gets the stream as
    sent, and the call is charged from the stream's own usage chunk."""
    gateway = start_gateway(upstream={"bound_non_streamed": "trust"})
    chunk = {"id": "c-1", "object": "chat.completion.chunk", "model": "gpt-4o-mini"}
    events = [
        {**chunk, "choices": [{"index": 0, "delta": {"content": "hello hello"}, "finish_reason": None}]},
        {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {**chunk, "choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": 30, "total_tokens": 38}},
    ]
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 100, "fake": {"events": events}}
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
    )
    assert answer.status_code == 200 and answer.text.startswith("data: ")
    (event,) = wait_for_events(gateway, 1)
    assert (event.usage.input_tokens, event.usage.output_tokens) == (8, 30)
    assert event.usage.output_source == "provider" and event.metadata["stream_answer"] is True
    assert event.charged["total_tokens"] == 38
