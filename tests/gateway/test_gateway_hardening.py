"""Requests that try the gateway's edges: several choices per call, odd bodies and headers, a
client's own request id, keys made through the admin API on uncharged routes. Each is either
refused with a clear 400/402 or served and settled exactly once."""

from __future__ import annotations

import json
import socket
from urllib.parse import quote

import httpx
import pytest

from tests.support.fixtures import KEY
from tokenward.core.budgets import Subject

MESSAGES = [{"role": "user", "content": "Say hello"}]
# Room for the prompt and one choice's minimum output (16 tokens, the default
# min_output_tokens), not for three: "Say hello" in a chat frame estimates at about 10 tokens.
TIGHT = {"name": "tight", "scope": "user", "meter": "total_tokens", "limit": 45}


def post(gateway, path: str, body: object, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}{path}", json=body, headers={"authorization": f"Bearer {KEY}", **headers}
    )


@pytest.mark.parametrize(
    ("path", "one", "three"),
    [
        (
            "/v1/chat/completions",
            {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 20},
            {"n": 3},
        ),
        (
            "/v1/completions",
            {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hello", "max_tokens": 20},
            {"best_of": 3},
        ),
        (
            "/v1beta/models/gemini-2.5-flash:generateContent",
            {
                "contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
                "generationConfig": {"maxOutputTokens": 20},
            },
            {"generationConfig": {"maxOutputTokens": 20, "candidateCount": 3}},
        ),
    ],
)
def test_every_choice_keeps_its_minimum_output_under_a_clamp(start_gateway, path, one, three) -> None:
    """n / best_of / candidateCount choices each may use the output bound and are all billed:
    a clamp that would leave each choice less than the minimum refuses the call instead. (Three
    choices would be clamped to about 35 tokens in all, 11 each; one choice fits unclamped.)"""
    gateway = start_gateway(budgets=[TIGHT])
    many = post(gateway, path, {**one, **three})
    assert many.status_code == 402, many.text
    single = post(gateway, path, one)
    assert single.status_code == 200, single.text
    (event,) = gateway.observer().events()
    assert event.usage.output_tokens == 20 and "clamped_by" not in event.metadata


def test_malformed_bodies_are_refused_with_400_and_nothing_is_held(start_gateway) -> None:
    gateway = start_gateway(budgets=[TIGHT])
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    deep = b'{"model": "gpt-4o-mini", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    lone_surrogate = json.dumps({"model": "gpt-4o-mini-\ud800", "messages": MESSAGES}).encode()
    background = {"model": "gpt-4o-mini", "input": "Say hello", "background": True}
    answers = [
        httpx.post(f"{gateway.url}/v1/chat/completions", content=deep, headers=headers),
        httpx.post(f"{gateway.url}/v1/chat/completions", content=lone_surrogate, headers=headers),
        post(gateway, "/v1/responses", background),
    ]
    assert [a.status_code for a in answers] == [400, 400, 400]
    assert [a.json()["error"]["param"] for a in answers] == ["body", "model", "background"]
    assert gateway.observer().events() == []
    assert all(b.held == 0 for b in gateway.observer().balances(Subject(user="demo/alice")))
    assert gateway.state.unsettled == 0


def test_each_call_gets_its_own_request_id_and_keeps_the_clients(start_gateway) -> None:
    """A client's ``x-request-id`` is not the idempotency key (a reused one would drop a call's
    event): it is kept as ``client_request_id``."""
    gateway = start_gateway()
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    answers = [post(gateway, "/v1/chat/completions", body, **{"x-request-id": "retry-7"}) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    events = gateway.observer().events()
    assert len(events) == 2 and len({e.request_id for e in events}) == 2
    assert {e.request_id for e in events} == {a.headers["x-tokenward-request-id"] for a in answers}
    assert [e.metadata["client_request_id"] for e in events] == ["retry-7", "retry-7"]


def test_a_header_outside_ascii_is_forwarded_and_the_call_settled(start_gateway) -> None:
    """HTTP allows obs-text bytes in header values (RFC 9110 5.5), e.g. ``x-title: Café`` in
    Latin-1; the gateway passes them on as the bytes they came in."""
    gateway = start_gateway()
    body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES}).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        + f"Authorization: Bearer {KEY}\r\n".encode()
        + b"Content-Type: application/json\r\nX-Title: Caf\xe9\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with socket.create_connection(("127.0.0.1", gateway.server.port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    (event,) = gateway.observer().events()
    assert event.status == "ok" and event.usage.output_tokens == 20
    assert gateway.state.unsettled == 0


def test_a_key_made_through_the_admin_api_works_on_uncharged_routes(start_gateway) -> None:
    gateway = start_gateway(admin_keys=[{"key": "tw-root", "name": "root"}])
    made = httpx.post(
        f"{gateway.url}/admin/keys",
        json={"name": "ci", "user": "robot"},
        headers={"authorization": "Bearer tw-root"},
    ).json()["key"]
    headers = {"x-api-key": made, "anthropic-version": "2023-06-01"}
    counted = httpx.post(
        f"{gateway.url}/v1/messages/count_tokens",
        json={"model": "claude-sonnet-4-5", "messages": MESSAGES},
        headers=headers,
    )
    assert counted.status_code == 200 and counted.json()["input_tokens"] == 6  # fake: 4 + 2 pieces
    models = httpx.get(f"{gateway.url}/v1/models", headers={"authorization": f"Bearer {made}"})
    assert models.status_code == 200
    refused = httpx.get(f"{gateway.url}/v1/models", headers={"authorization": "Bearer tw-nobody"})
    assert refused.status_code == 401


def test_an_answer_that_cannot_be_read_is_charged_its_whole_hold(tmp_path) -> None:
    """A 200 whose body is neither JSON nor a stream says nothing about the output: the call is
    charged the output it was allowed, so a hard budget still cannot be overspent."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from tests.support.servers import serving
    from tokenward.gateway import GatewayConfig, create_app

    async def garbled(request):
        return PlainTextResponse("<html>upstream proxy says hi</html>")

    upstream = Starlette(routes=[Route("/v1/chat/completions", garbled, methods=["POST"])])
    with serving(upstream) as server:
        config = GatewayConfig.from_mapping(
            {
                "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
                "upstreams": [
                    {"name": "odd", "provider": "openai-compatible", "base_url": f"{server.url}/v1"}
                ],
                "keys": [{"key": KEY, "name": "k", "user": "alice"}],
            }
        )
        with serving(create_app(config)) as gateway:
            body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 50}
            answer = httpx.post(
                f"{gateway.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
            )
    assert answer.status_code == 200 and answer.text.startswith("<html>")
    from tokenward.ledger.sqlite import SQLiteLedger

    (event,) = SQLiteLedger(f"sqlite:///{tmp_path / 'ledger.db'}").events()
    assert event.usage.output_tokens == 50 and event.metadata["cost_basis"] == "held_output"
    assert event.charged["output_tokens"] == 50 and event.cost_usd is not None and event.cost_estimated


CONTROL = [chr(c) for c in (0x00, 0x09, 0x0A, 0x1F, 0x7F)]
GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]}


def _model_bodies(model: str) -> list[tuple[str, dict]]:
    return [
        ("/v1/chat/completions", {"model": model, "messages": MESSAGES, "max_tokens": 20}),
        ("/v1/responses", {"model": model, "input": "Say hello", "max_output_tokens": 20}),
        ("/v1/completions", {"model": model, "prompt": "Say hello", "max_tokens": 20}),
        ("/v1/embeddings", {"model": model, "input": "Say hello"}),
        ("/v1/messages", {"model": model, "messages": MESSAGES, "max_tokens": 20}),
    ]


def test_control_characters_in_a_model_are_a_400_and_never_charged(start_gateway, fake) -> None:
    """U+0000-U+001F and U+007F in the model, escaped in a JSON body (``\\u0000``), raw in it (not
    JSON), or percent-escaped in the Gemini URL: a 400, nothing held or charged, nothing sent
    upstream (on the branch point the body's model was served and charged, and the Gemini URL's
    was a 500 charged its whole hold)."""
    gateway = start_gateway(budgets=[{"name": "b", "scope": "user", "meter": "total_tokens", "limit": 10**6}])
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    answers = []
    for char in CONTROL:
        for path, body in _model_bodies(f"gpt-4o-mini{char}x"):
            answers.append(("model", post(gateway, path, body)))
        escaped = json.dumps({"model": f"gpt-4o-mini{char}", "messages": MESSAGES})
        raw = escaped.replace(json.dumps(char)[1:-1], char).encode()
        raw_param = "model" if char == "\x7f" else "body"  # a JSON string may hold a raw U+007F only
        answers.append(
            (raw_param, httpx.post(f"{gateway.url}/v1/chat/completions", content=raw, headers=headers))
        )
        for prefix in ("/v1beta/models", "/v1/models"):
            url = f"{gateway.url}{prefix}/gemini-2.5-flash{quote(char)}x:generateContent"
            answers.append(("model", httpx.post(url, json=GEMINI_BODY, headers=headers)))
    assert [(a.status_code, a.json()["error"].get("param", "model")) for _, a in answers] == [
        (400, param) for param, _ in answers
    ]
    assert gateway.observer().events() == []
    assert all(b.held == 0 for b in gateway.observer().balances(Subject(user="demo/alice")))
    assert gateway.state.unsettled == 0
    assert httpx.get(f"{fake.url}/_fake/requests").json() == []


def test_a_gemini_model_with_query_or_fragment_characters_stays_in_the_path(start_gateway, fake) -> None:
    """``%3F`` and ``%23`` in the Gemini model are part of its name upstream too, not a query or
    a fragment (on the branch point the upstream was called at ``.../gemini-2.5-flash`` with
    ``?key=x`` as its query, and answered 404)."""
    gateway = start_gateway()
    url = f"{gateway.url}/v1beta/models/gemini-2.5-flash%3Fkey=x%23frag:generateContent"
    answer = httpx.post(url, json=GEMINI_BODY, headers={"authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["modelVersion"] == "gemini-2.5-flash?key=x#frag"  # the fake echoes its path's model
    (seen,) = httpx.get(f"{fake.url}/_fake/requests").json()
    # (a non-streamed call is read from the upstream as a stream, to be bounded at its hold)
    assert seen["path"] == "/v1beta/models/gemini-2.5-flash%3Fkey=x%23frag:streamGenerateContent"
    (event,) = gateway.observer().events()
    assert event.model == "gemini-2.5-flash?key=x#frag" and event.status == "ok"


def test_a_body_nested_1000_deep_is_a_400_on_every_endpoint(start_gateway) -> None:
    """Arrays 1,000 deep in any field, on every dialect, the Gemini body included (on the branch
    point that one was an uncaught RecursionError: a 500)."""
    gateway = start_gateway()
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    deep = "[" * 1000 + "]" * 1000
    paths = [path for path, _ in _model_bodies("gpt-4o-mini")] + [
        "/v1beta/models/gemini-2.5-flash:generateContent",
        "/v1/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
    ]
    answers = []
    for path in paths:
        body = GEMINI_BODY if "models/" in path else dict(_model_bodies("gpt-4o-mini"))[path]
        content = json.dumps(body)[:-1] + f', "extra": {deep}}}'
        answers.append(httpx.post(f"{gateway.url}{path}", content=content.encode(), headers=headers))
    assert [a.status_code for a in answers] == [400] * len(paths), [a.text[:100] for a in answers]
    assert gateway.observer().events() == [] and gateway.state.unsettled == 0
