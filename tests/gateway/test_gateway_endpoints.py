"""Every endpoint through the gateway with the official clients, streamed and not, against the
fake provider. Counts follow the fake's documented rules (replies are ``hello`` repeated, k words
= k tokens; prompts count ``\\w+|[^\\w\\s]`` pieces plus 4 per message or input item, none for
completion prompts and embedding inputs)."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai

from tests.support.fixtures import KEY

HELLO_20 = " ".join(["hello"] * 20)


def oai(gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0)


def test_responses_json_and_stream(start_gateway) -> None:
    gateway = start_gateway()
    client = oai(gateway)
    reply = client.responses.create(model="gpt-4o-mini", input="Say hello")
    assert reply.output_text == HELLO_20
    with client.responses.stream(model="gpt-4o-mini", input="Say hello") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == HELLO_20 and final.usage.output_tokens == 20
    events = gateway.observer().events()
    assert [e.endpoint for e in events] == ["openai-responses"] * 2
    # "Say hello" is one input item: 2 pieces + 4
    assert all((e.usage.input_tokens, e.usage.output_tokens) == (6, 20) and e.usage.complete for e in events)


def test_responses_stream_cut_off_ends_incomplete(start_gateway) -> None:
    gateway = start_gateway()
    stream = oai(gateway).responses.create(
        model="gpt-4o-mini",
        input="Say hello",
        max_output_tokens=16,
        stream=True,
        extra_body={"fake": {"ignore_max_tokens": True, "reply_tokens": 100}},
    )
    events = list(stream)
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == " ".join(["hello"] * 16)
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    (event,) = gateway.observer().events()
    # chunks of 5 words: the one that crossed 16 held words 16-20; 1 was relayed, 4 were
    # received past the cut, and what was received is charged: 16 + 4 = 20
    assert event.status == "cut_off" and event.usage.output_tokens == 20
    assert event.metadata["received_beyond_cut_tokens"] == 4


def test_legacy_completions_json_and_stream(start_gateway) -> None:
    gateway = start_gateway()
    client = oai(gateway)
    reply = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello", max_tokens=10)
    assert reply.choices[0].text == " ".join(["hello"] * 10)
    chunks = list(client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == " ".join(
        ["hello"] * 16
    )  # the API's default bound
    events = gateway.observer().events()
    assert [(e.usage.input_tokens, e.usage.output_tokens) for e in events] == [(2, 10), (2, 16)]


def test_embeddings_charge_input_only(start_gateway) -> None:
    gateway = start_gateway()
    reply = oai(gateway).embeddings.create(model="text-embedding-3-small", input=["Say hello", "and goodbye"])
    assert len(reply.data) == 2 and reply.usage.prompt_tokens == 4
    (event,) = gateway.observer().events()
    assert (event.usage.input_tokens, event.usage.output_tokens) == (4, 0)
    assert event.usage.complete and not event.cost_estimated
    assert event.cost_usd is not None and event.cost_usd > 0


def test_anthropic_count_tokens_is_forwarded_and_free(start_gateway) -> None:
    gateway = start_gateway()
    client = anthropic.Anthropic(api_key=KEY, base_url=gateway.url, max_retries=0)
    counted = client.messages.count_tokens(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "Say hello"}]
    )
    assert counted.input_tokens == 6
    assert gateway.observer().events() == []


def test_models_list(start_gateway) -> None:
    gateway = start_gateway()
    models = oai(gateway).models.list()
    assert len(models.data) >= 1


def test_gemini_generate_content_and_stream(start_gateway) -> None:
    gateway = start_gateway()
    body = {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]}
    headers = {"x-goog-api-key": KEY}
    reply = httpx.post(
        f"{gateway.url}/v1beta/models/gemini-2.5-flash:generateContent", json=body, headers=headers
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["candidates"][0]["content"]["parts"][0]["text"] == HELLO_20
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        json=body,
        headers=headers,
    ) as stream:
        chunks = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: ")]
    assert "".join(p["text"] for c in chunks for p in c["candidates"][0]["content"]["parts"]) == HELLO_20
    events = gateway.observer().events()
    assert [e.endpoint for e in events] == ["gemini", "gemini"]
    # Gemini: 4 per content + 2 pieces
    assert all((e.usage.input_tokens, e.usage.output_tokens) == (6, 20) and e.usage.complete for e in events)


def test_gemini_key_in_the_query_and_unknown_method(start_gateway) -> None:
    gateway = start_gateway()
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    ok = httpx.post(f"{gateway.url}/v1beta/models/gemini-2.5-flash:generateContent?key={KEY}", json=body)
    assert ok.status_code == 200
    unknown = httpx.post(f"{gateway.url}/v1beta/models/gemini-2.5-flash:embedSomething?key={KEY}", json=body)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["status"] == "NOT_FOUND"


def test_gemini_errors_come_in_the_google_shape(start_gateway) -> None:
    """Google's error model (https://ai.google.dev/gemini-api/docs/troubleshooting):
    ``error.code`` is the HTTP status, ``error.status`` its google.rpc.Code name."""
    budget = {"name": "tiny", "scope": "user", "meter": "total_tokens", "limit": 5}
    gateway = start_gateway(budgets=[budget])
    url = f"{gateway.url}/v1beta/models/gemini-2.5-flash:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    cases = [
        (httpx.post(url, json=body, headers={"x-goog-api-key": KEY}), 402, "RESOURCE_EXHAUSTED"),
        (httpx.post(url, json=body, headers={"x-goog-api-key": "wrong"}), 401, "UNAUTHENTICATED"),
        (httpx.post(url, json={"contents": []}, headers={"x-goog-api-key": KEY}), 400, "INVALID_ARGUMENT"),
    ]
    for answer, status, name in cases:
        error = answer.json()["error"]
        assert (answer.status_code, error["code"], error["status"]) == (status, status, name)
        assert error["message"] and answer.headers["x-tokenward-request-id"].startswith("req_")
    assert cases[0][0].json()["error"]["budget"]["budget"] == "tiny"


def test_unknown_routes_and_methods_answer_json(start_gateway) -> None:
    gateway = start_gateway()
    missing = httpx.post(f"{gateway.url}/v1/no/such/thing", json={})
    wrong_method = httpx.get(f"{gateway.url}/v1/chat/completions")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["error"]["code"]) == (405, "method_not_allowed")
    assert wrong_method.headers["allow"] == "POST"
    assert all(r.headers["x-tokenward-request-id"].startswith("req_") for r in (missing, wrong_method))
