"""Stored context is held as prompt: Responses ``previous_response_id`` and ``conversation``,
Gemini ``cachedContent`` (created through the gateway's ``cachedContents`` proxy).

Issue 14, item 3: the stored turns a provider adds to the prompt were never held. The fake
provider bills them as OpenAI and Google do (:mod:`tokenward.fake.stored`): a call continuing
response ``R`` is billed ``R``'s input plus output on top of its own prompt.

Arithmetic (the fake's rules): ``input: "Say hello"`` is 4 + 2 = 6 tokens, ``"Again"`` 4 + 1 = 5;
the fake answers 20. So turn 1 is billed 6 + 20, turn 2 (continuing turn 1) 26 + 5 = 31 input and
20 output, turn 3 (continuing turn 2) 31 + 20 + 5 = 56 input. ``defaults.max_output_tokens: 20``
makes each call's output hold equal to its answer, so an unheld stored context shows as overage
(the branch point held only the visible prompt: turn 2 was charged 51 total tokens against a
hold of about 25).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from tests.support.fixtures import KEY, Gateway
from tokenward.core.budgets import Subject

DEFAULTS = {"max_output_tokens": 20, "service_tier": "default"}


def _client(gateway: Gateway, session: str = "chain") -> openai.OpenAI:
    return openai.OpenAI(
        api_key=KEY,
        base_url=f"{gateway.url}/v1",
        max_retries=0,
        default_headers={"x-tokenward-session": session},
    )


def _events(gateway: Gateway, session: str = "chain") -> list[Any]:
    return gateway.observer().events(subject=Subject(session=f"demo/{session}"))


def test_a_response_chain_is_held_turn_by_turn(start_gateway) -> None:
    gateway = start_gateway(defaults=DEFAULTS)
    client = _client(gateway)
    first = client.responses.create(model="gpt-4o-mini", input="Say hello")
    second = client.responses.create(model="gpt-4o-mini", input="Again", previous_response_id=first.id)
    third = client.responses.create(model="gpt-4o-mini", input="Again", previous_response_id=second.id)
    assert (second.usage.input_tokens, third.usage.input_tokens) == (31, 56)
    events = _events(gateway)
    assert [e.usage.input_tokens for e in events] == [6, 31, 56]
    assert [e.metadata["response_id"] for e in events] == [first.id, second.id, third.id]
    assert events[2].metadata["previous_response_id"] == second.id
    assert all(e.overage == {} for e in events), [e.overage for e in events]


def test_a_streamed_response_can_be_continued(start_gateway) -> None:
    gateway = start_gateway(defaults=DEFAULTS)
    client = _client(gateway)
    with client.responses.stream(model="gpt-4o-mini", input="Say hello") as stream:
        first = stream.get_final_response()
    client.responses.create(model="gpt-4o-mini", input="Again", previous_response_id=first.id)
    events = _events(gateway)
    assert events[0].metadata["response_id"] == first.id
    assert events[1].usage.input_tokens == 31 and events[1].overage == {}


def test_an_unknown_previous_response_is_refused_before_the_upstream(start_gateway, fake) -> None:
    gateway = start_gateway(defaults=DEFAULTS)
    with httpx.Client(base_url=fake.url) as raw:
        raw.delete("/_fake/requests")
    body = {"model": "gpt-4o-mini", "input": "Again", "previous_response_id": "resp_made_elsewhere"}
    with httpx.Client(base_url=gateway.url) as client:
        answer = client.post("/v1/responses", json=body, headers={"authorization": f"Bearer {KEY}"})
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["param"] == "previous_response_id" and "resp_made_elsewhere" in error["message"]
    with httpx.Client(base_url=fake.url) as raw:
        assert raw.get("/_fake/requests").json() == []  # never forwarded
    assert gateway.observer().events() == []


def test_unknown_context_can_be_held_as_a_configured_allowance(start_gateway) -> None:
    budget = {"name": "tokens", "scope": "user", "meter": "total_tokens", "limit": 2000, "action": "deny"}
    gateway = start_gateway(budgets=[budget], defaults={**DEFAULTS, "unknown_context": 3000})
    body = {"model": "gpt-4o-mini", "input": "Again", "previous_response_id": "resp_made_elsewhere"}
    with httpx.Client(base_url=gateway.url) as client:
        answer = client.post("/v1/responses", json=body, headers={"authorization": f"Bearer {KEY}"})
    assert answer.status_code == 402
    assert int(answer.json()["error"]["budget"]["requested"]) > 3000 + 20


def test_a_conversation_is_held_for_its_items_and_turns_so_far(start_gateway) -> None:
    gateway = start_gateway(defaults=DEFAULTS)
    client = _client(gateway, "conv")
    # a conversation the ledger never saw is refused, naming the field (the default policy)
    with pytest.raises(openai.BadRequestError) as unknown:
        client.responses.create(model="gpt-4o-mini", input="Say hello", conversation="conv_elsewhere")
    assert unknown.value.body["param"] == "conversation"
    # made through the gateway, with one item: "Be nice." is 3 pieces + 4 to the fake, estimated
    # at 3 (priming) + 3 (framing) + 1 (role) + 3 (text) = 10 by tokenward
    made = client.conversations.create(items=[{"type": "message", "role": "user", "content": "Be nice."}])
    first = client.responses.create(model="gpt-4o-mini", input="Say hello", conversation=made.id)
    assert first.usage is not None and first.usage.input_tokens == 7 + 6
    client.conversations.items.create(
        made.id, items=[{"type": "message", "role": "user", "content": "Be nice."}]
    )
    second = client.responses.create(model="gpt-4o-mini", input="Again", conversation={"id": made.id})
    assert second.usage is not None and second.usage.input_tokens == 13 + 20 + 7 + 5
    events = _events(gateway, "conv")
    assert [e.endpoint for e in events] == ["meter", "openai-responses", "meter", "openai-responses"]
    assert [e.metadata["conversation"] for e in events] == [made.id] * 4
    assert [e.metadata.get("context_tokens") for e in events[::2]] == [10, 13 + 20 + 10]
    assert all(e.charged == {} for e in events[::2])  # making a conversation costs nothing
    assert all(e.overage == {} for e in events)  # the branch point held only the visible input


# -- Gemini cached contents -----------------------------------------------------------------------

GEMINI = "/v1beta/models/gemini-2.5-flash:generateContent"
CORPUS = "word " * 300  # 300 pieces to the fake


def _google(gateway: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gateway.url, headers={"x-goog-api-key": KEY}, timeout=30)


def test_a_cache_created_through_the_gateway_is_charged_and_held_when_used(start_gateway) -> None:
    gateway = start_gateway(defaults={"max_output_tokens": 20})
    create = {"model": "models/gemini-2.5-flash", "contents": [{"role": "user", "parts": [{"text": CORPUS}]}]}
    with _google(gateway) as client:
        made = client.post("/v1beta/cachedContents", json=create)
        assert made.status_code == 200, made.text
        cache = made.json()
        assert cache["usageMetadata"]["totalTokenCount"] == 304  # 300 pieces + 4 for the content
        name = cache["name"]
        listed = client.get("/v1beta/cachedContents").json()["cachedContents"]
        assert [c["name"] for c in listed] == [name]
        assert client.get(f"/v1beta/{name}").json()["name"] == name
        body = {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}], "cachedContent": name}
        used = client.post(GEMINI, json=body)
        assert used.status_code == 200, used.text
        assert used.json()["usageMetadata"]["cachedContentTokenCount"] == 304
        assert client.delete(f"/v1beta/{name}").status_code == 200
        assert client.get(f"/v1beta/{name}").status_code == 404
    creation, call = gateway.observer().events(subject=Subject(user="demo/alice"))
    assert creation.metadata["cached_content"] == name and creation.usage.input_tokens == 304
    assert creation.cost_usd and creation.cost_usd > 0  # charged at the input rate
    assert call.usage.input_tokens == 304 + 6 and call.usage.cache_read_tokens == 304
    assert call.overage == {}  # the cache was held for (the branch point held only "Say hello")


def test_an_unknown_cached_content_is_refused(start_gateway, fake) -> None:
    gateway = start_gateway()
    body = {
        "contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
        "cachedContent": "cachedContents/x1",
    }
    with _google(gateway) as client:
        answer = client.post(GEMINI, json=body)
    assert answer.status_code == 400
    assert "cachedContent" in json.dumps(answer.json())
