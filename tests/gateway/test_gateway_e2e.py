"""The official ``openai`` and ``anthropic`` clients, through the gateway, to the fake provider.

Expected counts come from the fake provider's documented rules (replies are ``hello`` repeated,
k words = k tokens; prompts count ``\\w+|[^\\w\\s]`` pieces plus 4 per message) and from
OpenAI's documented chat framing for our estimate (3 tokens per message, 3 to prime the reply).
"""

from __future__ import annotations

import json
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest

from tests.support.fixtures import KEY, Gateway
from tokenward.core.budgets import Subject

HELLO_20 = " ".join(["hello"] * 20)
MESSAGES = [{"role": "user", "content": "Say hello"}]
FAKE_PROMPT = 2 + 4  # "Say", "hello" + 4 for the message
OUR_ESTIMATE = 3 + 1 + 2 + 3  # message framing + "user" + "Say hello" + reply priming, o200k_base


def oai(gateway: Gateway, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", default_headers=headers, max_retries=0)


def claude(gateway: Gateway, **headers: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=gateway.url, default_headers=headers, max_retries=0)


def only_event(gateway: Gateway):
    events = gateway.observer().events()
    assert len(events) == 1
    return events[0]


def test_openai_json_reply_and_recorded_usage(start_gateway) -> None:
    gateway = start_gateway()
    reply = oai(gateway, **{"x-tokenward-session": "s-1"}).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES
    )
    assert reply.choices[0].message.content == HELLO_20
    assert reply.usage.prompt_tokens == FAKE_PROMPT and reply.usage.completion_tokens == 20
    event = only_event(gateway)
    assert (event.usage.input_tokens, event.usage.output_tokens) == (FAKE_PROMPT, 20)
    assert event.usage.complete and event.status == "ok"
    # the key's project namespaces its user and the session header (tenancy); the model sent
    assert event.subject == Subject(
        project="demo", user="demo/alice", key="test-key", session="demo/s-1", model="gpt-4o-mini"
    )
    # gpt-4o-mini at OpenAI's published $0.15 / $0.60 per 1M tokens
    assert event.cost_usd == (Decimal(FAKE_PROMPT) * Decimal("0.15") + 20 * Decimal("0.60")) / 1_000_000
    assert event.charged["total_tokens"] == FAKE_PROMPT + 20


def test_openai_stream_with_usage(start_gateway) -> None:
    gateway = start_gateway()
    stream = oai(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == HELLO_20
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 20
    event = only_event(gateway)
    assert (event.usage.input_tokens, event.usage.output_tokens) == (FAKE_PROMPT, 20)
    assert event.usage.complete


def test_openai_stream_asks_upstream_for_usage_and_hides_it(start_gateway, fake) -> None:
    """C26: the gateway requests stream usage upstream, and a client that did not ask for it gets
    no usage chunk (nor an empty delta in its place)."""
    gateway = start_gateway()
    chunks = list(oai(gateway).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)
    received = httpx.get(f"{fake.url}/_fake/requests").json()
    assert received[-1]["body"]["stream_options"] == {"include_usage": True}
    assert only_event(gateway).usage.complete


def test_stream_without_usage_is_settled_from_our_count(start_gateway) -> None:
    gateway = start_gateway()
    stream = oai(gateway).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_body={"fake": {"usage": "omit"}}
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == HELLO_20
    event = only_event(gateway)
    assert event.usage.output_tokens == 20 and event.usage.output_source == "counted_stream_text"
    assert event.usage.input_tokens == OUR_ESTIMATE and event.usage.input_source == "preflight_estimate"
    assert not event.usage.complete and event.cost_estimated


def test_anthropic_json_and_stream(start_gateway) -> None:
    gateway = start_gateway()
    client = claude(gateway, **{"x-tokenward-session": "s-2"})
    message = client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
    assert message.content[0].text == HELLO_20
    with client.messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == HELLO_20 and final.usage.output_tokens == 20
    events = gateway.observer().events()
    assert [e.endpoint for e in events] == ["anthropic-messages"] * 2
    assert all((e.usage.input_tokens, e.usage.output_tokens) == (FAKE_PROMPT, 20) for e in events)
    assert all(e.usage.complete and e.cost_usd is not None for e in events)


def test_anthropic_cache_counts_are_added_to_the_prompt(start_gateway) -> None:
    gateway = start_gateway()
    claude(gateway).messages.create(
        model="claude-sonnet-4-6",
        max_tokens=64,
        messages=MESSAGES,
        extra_body={"fake": {"cache_read_tokens": 3, "cache_write_tokens": 2}},
    )
    event = only_event(gateway)
    # Anthropic's input_tokens excludes both cache buckets; our input_tokens is the whole prompt
    assert event.usage.input_tokens == FAKE_PROMPT
    assert (event.usage.cache_read_tokens, event.usage.cache_write_tokens) == (3, 2)


def test_session_budget_admits_until_the_next_call_cannot_fit(start_gateway) -> None:
    budget = {"name": "per-session", "scope": "session", "meter": "total_tokens", "limit": 100}
    gateway = start_gateway(budgets=[budget], defaults={"min_output_tokens": 5})
    client = oai(gateway, **{"x-tokenward-session": "s-budget"})
    admitted = 0
    with pytest.raises(openai.APIStatusError) as denied:
        for _ in range(10):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            admitted += 1
    assert denied.value.status_code == 402
    error = denied.value.body
    assert error["code"] == "budget_exceeded"
    assert error["budget"]["budget"] == "per-session" and error["budget"]["meter"] == "total_tokens"
    assert error["budget"]["limit"] == "100" and error["budget"]["reset_at"] is None
    # 26 tokens each while the bound allows 20; then a clamped call of 6 + 13; then no room
    assert admitted == 4
    events = gateway.observer().events()
    assert sum(e.charged["total_tokens"] for e in events) == 26 * 3 + 6 + 13
    assert events[-1].metadata["clamped_by"] == "per-session"
    (balance,) = gateway.observer().balances(Subject(session="demo/s-budget"))
    assert balance.spent == 97 and balance.held == 0


def test_denial_is_anthropic_shaped_on_messages(start_gateway) -> None:
    budget = {"name": "tiny", "scope": "user", "id": "alice", "meter": "total_tokens", "limit": 10}
    gateway = start_gateway(budgets=[budget])
    with pytest.raises(anthropic.APIStatusError) as denied:
        claude(gateway).messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
    assert denied.value.status_code == 402
    body = denied.value.body
    assert body["type"] == "error" and body["error"]["budget"]["budget"] == "tiny"
    assert gateway.observer().events() == []


def test_cost_budget_denies_an_unpriced_model(start_gateway) -> None:
    budget = {"name": "usd", "scope": "user", "id": "alice", "meter": "cost_usd", "limit": 5}
    gateway = start_gateway(budgets=[budget])
    with pytest.raises(openai.APIStatusError) as denied:
        oai(gateway).chat.completions.create(model="no-such-model-anywhere", messages=MESSAGES)
    assert denied.value.status_code == 402 and denied.value.body["code"] == "unpriced_model"


def test_upstream_key_replaces_the_virtual_key(start_gateway, fake) -> None:
    """The fake only accepts the upstream key: a passing call proves the gateway swapped keys."""
    gateway = start_gateway()
    oai(gateway).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    received = httpx.get(f"{fake.url}/_fake/requests").json()[-1]
    assert KEY not in json.dumps(received)


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, "body"),
        (b'{"model": "gpt-4o-mini"}', 400, "messages"),
        (b'{"model": "", "messages": [{"role": "user", "content": "x"}]}', 400, "model"),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": -3}',
            400,
            "max_tokens",
        ),
        (b"[]", 400, "body"),
    ],
)
def test_malformed_requests_get_400(start_gateway, body: bytes, status: int, param: str) -> None:
    gateway = start_gateway()
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", content=body, headers={"authorization": f"Bearer {KEY}"}
    )
    assert response.status_code == status
    assert response.json()["error"]["param"] == param


def test_unknown_key_gets_401_and_user_override_needs_permission(start_gateway) -> None:
    gateway = start_gateway()
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES},
        headers={"x-api-key": "nope"},
    )
    assert response.status_code == 401
    forbidden = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        headers={"authorization": f"Bearer {KEY}", "x-tokenward-user": "bob"},
    )
    assert forbidden.status_code == 403
    allowed = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        headers={"authorization": "Bearer tw-admin-key", "x-tokenward-user": "bob"},
    )
    assert allowed.status_code == 200
    assert gateway.observer().events()[-1].subject.user == "bob"


def test_upstream_error_is_passed_through_and_releases_the_hold(start_gateway) -> None:
    budget = {"name": "sess", "scope": "session", "meter": "total_tokens", "limit": 5000}
    gateway = start_gateway(budgets=[budget])
    with pytest.raises(openai.APIStatusError) as failed:
        oai(gateway, **{"x-tokenward-session": "s-err"}).chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_body={"fake": {"status": 503}}
        )
    assert failed.value.status_code == 503
    event = only_event(gateway)
    assert event.status == "upstream_error" and event.charged == {}
    (balance,) = gateway.observer().balances(Subject(session="demo/s-err"))
    assert balance.spent == 0 and balance.held == 0
