"""Issue 15 item 16: ``Idempotency-Key`` at the gateway, with the official ``openai`` client
(which sends none by default: ``extra_headers``) against the fake provider, whose record of the
requests it received (``GET /_fake/requests``) counts the upstream calls."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from tests.support.fixtures import KEY, wait_settled
from tokenward.ledger import open_ledger

MESSAGES = [{"role": "user", "content": "Say hello"}]
OTHER_KEY = "tw-admin-key"  # the fixture's second virtual key


def _upstream_calls(fake) -> int:
    return len(httpx.get(f"{fake.url}/_fake/requests").json())


def _client(gateway, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def test_a_repeat_gets_the_stored_answer_without_calling_the_upstream(start_gateway, fake) -> None:
    gateway = start_gateway()
    client = _client(gateway)
    headers = {"Idempotency-Key": "order-42"}
    before = _upstream_calls(fake)
    first = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_tokens=5,
        extra_headers=headers,  # type: ignore[arg-type]
    )
    again = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_tokens=5,
        extra_headers=headers,  # type: ignore[arg-type]
    )
    assert _upstream_calls(fake) == before + 1  # one call reached the provider
    assert (
        again.parse().id == first.parse().id
        and again.parse().choices[0].message.content == "hello hello hello hello hello"
    )
    assert again.headers.get("idempotent-replayed") == "true" and "idempotent-replayed" not in first.headers
    assert again.headers["x-tokenward-request-id"] == first.headers["x-tokenward-request-id"]
    wait_settled(gateway.state)  # a call is settled just after its answer is sent
    ledger = open_ledger(gateway.ledger_url)
    try:
        assert len(ledger.events()) == 1  # charged once
    finally:
        ledger.close()

    # the same key with another body: 422; the same key under another virtual key: its own
    with pytest.raises(openai.UnprocessableEntityError) as reused:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Say bye"}],
            max_tokens=5,
            extra_headers=headers,
        )
    assert reused.value.code == "idempotency_key_reused"
    _client(gateway, OTHER_KEY).chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_tokens=5,
        extra_headers=headers,  # type: ignore[arg-type]
    )
    assert _upstream_calls(fake) == before + 2


def test_a_stream_is_replayed_as_a_stream(start_gateway, fake) -> None:
    gateway = start_gateway()
    # the client has the whole stream a moment before the gateway has stored it: a repeat sent at
    # once may meet the 409 (retry-after: 1), which the official client retries by default
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=2)
    headers = {"Idempotency-Key": "stream-7"}

    def run() -> list[str]:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=12, stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True}, extra_headers=headers,
        )  # fmt: skip
        return [chunk.model_dump_json() for chunk in stream]

    before = _upstream_calls(fake)
    first = run()
    second = run()
    assert _upstream_calls(fake) == before + 1
    assert len(first) > 2 and second == first  # every chunk, again, in order


def test_a_repeat_while_the_first_runs_is_a_409_and_a_refusal_is_not_stored(start_gateway, fake) -> None:
    gateway = start_gateway(
        budgets=[{"name": "tight", "scope": "session", "meter": "total_tokens", "limit": 30}]
    )
    client = _client(gateway)
    slow = {"Idempotency-Key": "slow-1", "x-fake-options": '{"latency_ms": 1500}'}
    answers: list[object] = []
    first = threading.Thread(
        target=lambda: answers.append(
            client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=5, extra_headers=slow
            )  # type: ignore[arg-type]
        )
    )
    first.start()
    time.sleep(0.4)  # the first is waiting on the provider's 1.5 s
    with pytest.raises(openai.ConflictError) as busy:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, max_tokens=5, extra_headers=slow
        )  # type: ignore[arg-type]
    assert busy.value.code == "idempotency_key_in_progress"
    assert busy.value.response.headers["retry-after"] == "1"
    first.join(10)
    (answer,) = answers
    replayed = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=5, extra_headers=slow
    )  # type: ignore[arg-type]
    assert replayed.id == answer.id  # type: ignore[attr-defined]

    session = {"x-tokenward-session": "s-tight"}
    client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=20, extra_headers=session
    )  # type: ignore[arg-type]
    refused = {**session, "Idempotency-Key": "refused-1"}
    calls = _upstream_calls(fake)
    for _ in range(2):  # a 402 frees the key: the retry is judged again, never a stored refusal
        with pytest.raises(openai.APIStatusError) as denied:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=20, extra_headers=refused
            )  # type: ignore[arg-type]
        assert denied.value.status_code == 402 and "idempotent-replayed" not in denied.value.response.headers
    assert _upstream_calls(fake) == calls
    ledger = open_ledger(gateway.ledger_url)
    try:
        assert len(ledger.denials(budget="tight")) == 2  # both refusals recorded
    finally:
        ledger.close()


def test_a_malformed_key_is_a_400(start_gateway) -> None:
    gateway = start_gateway()
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 5},
        headers={"authorization": f"Bearer {KEY}", "idempotency-key": "x" * 256},
    )
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "idempotency-key"
