"""Hold what can be billed: the service tier a call may be served at, server-side tool fees and
their results, every candidate however ``candidateCount`` is written.

Issue 14, item 4: ``service_tier: "priority"`` was held at the default rate and charged at
priority; web-search fees were never held; a Gemini ``candidateCount`` sent as ``"8"`` (valid
proto3 JSON) was held as one candidate.

Prices are genai-prices' (pinned 0.2.3), per 1M tokens: gpt-5 $1.25 in / $10 out by default, $2.50 /
$20 at priority; gpt-4.1 $2 / $8 and web search $10 per 1,000 calls; claude-sonnet-4-5 $3 / $15 and
web search $10 per 1,000; gemini-2.5-flash grounding $35 per 1,000 grounded prompts (one fee per
prompt on Gemini 2.x). Our prompt estimates: the chat message ``"Say hello"`` is 9 tokens
(3 framing + 1 role + 2 text + 3 priming); other estimates are read from the 402 answer's
``requested`` and checked against the parts they must contain.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import openai

from tests.support.fixtures import KEY, Gateway
from tokenward.core.budgets import Subject

MILLION = Decimal(1_000_000)
HELLO = [{"role": "user", "content": "Say hello"}]


def _post(gateway: Gateway, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        return client.post(path, json=body, headers={"authorization": f"Bearer {KEY}", **headers})


def _cost_budget(limit: str) -> dict[str, Any]:
    return {"name": "spend", "scope": "user", "meter": "cost_usd", "limit": limit, "action": "deny"}


# -- service tiers --------------------------------------------------------------------------------


def test_priority_is_held_at_the_priority_rate(start_gateway) -> None:
    # held at default: (9 x 1.25 + 1000 x 10) / 1M = 0.01001125, fits 0.015;
    # at priority: (9 x 2.50 + 1000 x 20) / 1M = 0.0200225, does not
    gateway = start_gateway(budgets=[_cost_budget("0.015")])
    body = {"model": "gpt-5", "messages": HELLO, "max_completion_tokens": 1000, "service_tier": "priority"}
    denied = _post(gateway, "/v1/chat/completions", body)
    assert denied.status_code == 402
    assert (
        Decimal(denied.json()["error"]["budget"]["requested"]) == (9 * Decimal("2.5") + 1000 * 20) / MILLION
    )
    explicit_default = _post(gateway, "/v1/chat/completions", {**body, "service_tier": "default"})
    assert explicit_default.status_code == 200


def test_an_omitted_tier_is_held_at_the_dearest_unless_the_upstream_says(start_gateway, fake) -> None:
    body = {"model": "gpt-5", "messages": HELLO, "max_completion_tokens": 1000}
    gateway = start_gateway(budgets=[_cost_budget("0.015")])
    assert _post(gateway, "/v1/chat/completions", body).status_code == 402  # may be served at priority
    assert _post(gateway, "/v1/chat/completions", {**body, "service_tier": "auto"}).status_code == 402


def test_an_upstream_configured_for_the_default_tier_holds_at_it(start_gateway, fake) -> None:
    upstream = {
        "name": "fake",
        "provider": "fake",
        "base_url": fake.url,
        "api_key_env": "FAKE_UPSTREAM_KEY",
        "service_tier": "default",
    }
    gateway = start_gateway(budgets=[_cost_budget("0.015")], upstreams=[upstream])
    body = {"model": "gpt-5", "messages": HELLO, "max_completion_tokens": 1000}
    assert _post(gateway, "/v1/chat/completions", body).status_code == 200
    assert _post(gateway, "/v1/chat/completions", {**body, "service_tier": "priority"}).status_code == 402


def test_a_call_served_at_priority_is_never_charged_above_its_hold(start_gateway) -> None:
    gateway = start_gateway(budgets=[_cost_budget("1")])
    served = {
        "id": "chatcmpl-priority",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-5",
        "service_tier": "priority",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 6, "completion_tokens": 1000, "total_tokens": 1006},
    }
    body = {"model": "gpt-5", "messages": HELLO, "max_completion_tokens": 1000, "fake": {"response": served}}
    assert _post(gateway, "/v1/chat/completions", body).status_code == 200
    (event,) = gateway.observer().events()
    assert event.cost_usd == (6 * Decimal("2.5") + 1000 * 20) / MILLION  # 0.020015, at priority
    assert event.overage == {}  # held 0.0200225 (the branch point held 0.01001125)


# -- server-side tools ----------------------------------------------------------------------------


def test_web_search_fees_and_results_are_held(start_gateway) -> None:
    gateway = start_gateway(
        budgets=[_cost_budget("0.06")], defaults={"service_tier": "default", "server_tool_input_tokens": 8000}
    )
    body = {
        "model": "gpt-4.1",
        "input": "Say hello",
        "tools": [{"type": "web_search"}],
        "max_tool_calls": 2,
        "max_output_tokens": 100,
    }
    denied = _post(gateway, "/v1/responses", {**body, "max_tool_calls": 3})
    assert denied.status_code == 402
    requested = Decimal(denied.json()["error"]["budget"]["requested"])
    # the hold a deny-action budget refuses (the whole hold: issue 15): 3 searches at $0.01,
    # 3 x 8,000 result tokens at $2/1M and the 100 output tokens at $8/1M, plus the prompt
    # estimate (the input and the tool's JSON, under 100 tokens) at $2/1M
    fixed = 3 * Decimal("0.01") + (3 * 8000 * 2 + 100 * 8) / MILLION
    assert fixed < requested < fixed + 100 * 2 / MILLION
    # 2 searches: 0.02 + (2 x 8,000 + the estimate) x $2/1M + 100 x $8/1M, about $0.0529
    assert _post(gateway, "/v1/responses", body).status_code == 200


def test_anthropic_max_uses_bounds_the_web_search_hold(start_gateway) -> None:
    # the prompt with the tool is estimated at a few hundred tokens (Anthropic's tool-use system
    # prompt alone is 346), under 1,000
    budget = {"name": "tokens", "scope": "user", "meter": "total_tokens", "limit": 12000, "action": "deny"}
    gateway = start_gateway(budgets=[budget], defaults={"server_tool_input_tokens": 5000})
    tool = {"type": "web_search_20250305", "name": "web_search"}
    body = {"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": HELLO}
    three = _post(gateway, "/v1/messages", {**body, "tools": [{**tool, "max_uses": 3}]})
    assert three.status_code == 402  # 3 x 5,000 result tokens alone are more than 12,000
    requested = Decimal(three.json()["error"]["budget"]["requested"])
    assert 3 * 5000 + 100 < requested < 3 * 5000 + 100 + 1000
    unbounded = _post(gateway, "/v1/messages", {**body, "tools": [tool]})
    assert unbounded.status_code == 402  # no max_uses: held at server_tool_max_uses (5)
    assert Decimal(unbounded.json()["error"]["budget"]["requested"]) > 5 * 5000
    assert _post(gateway, "/v1/messages", {**body, "tools": [{**tool, "max_uses": 1}]}).status_code == 200


def test_gemini_grounding_fee_is_held(start_gateway) -> None:
    gateway = start_gateway(budgets=[_cost_budget("0.03")], defaults={"server_tool_input_tokens": 0})
    body = {
        "contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
        "generationConfig": {"maxOutputTokens": 10},
    }
    path = "/v1beta/models/gemini-2.5-flash:generateContent"
    assert _post(gateway, path, body).status_code == 200
    grounded = _post(gateway, path, {**body, "tools": [{"google_search": {}}]})
    assert grounded.status_code == 402  # one grounded prompt on Gemini 2.x: $0.035 > $0.03
    assert Decimal(grounded.json()["error"]["budget"]["requested"]) > Decimal("0.035")


# -- candidates -----------------------------------------------------------------------------------


def test_a_candidate_count_written_as_a_string_holds_every_candidate(start_gateway) -> None:
    budget = {"name": "tokens", "scope": "user", "meter": "output_tokens", "limit": 500, "action": "deny"}
    gateway = start_gateway(budgets=[budget])
    body = {
        "contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
        "generationConfig": {"maxOutputTokens": 100, "candidateCount": "8"},
    }
    denied = _post(gateway, "/v1beta/models/gemini-2.5-flash:generateContent", body)
    assert denied.status_code == 402
    assert Decimal(denied.json()["error"]["budget"]["requested"]) == 800  # 8 candidates x 100
    body["generationConfig"]["candidateCount"] = "4"
    assert _post(gateway, "/v1beta/models/gemini-2.5-flash:generateContent", body).status_code == 200
    bad = {**body, "generationConfig": {"candidateCount": "eight"}}
    answer = _post(gateway, "/v1beta/models/gemini-2.5-flash:generateContent", bad)
    assert answer.status_code == 400 and "candidateCount" in answer.text


def test_no_overage_on_a_fully_held_call(start_gateway) -> None:
    """The ordinary call still fits its hold exactly as before (no extra tier, no tools)."""
    gateway = start_gateway(defaults={"service_tier": "default"})
    client = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0)
    client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=20)
    (event,) = gateway.observer().events(subject=Subject(user="demo/alice"))
    assert event.overage == {}
