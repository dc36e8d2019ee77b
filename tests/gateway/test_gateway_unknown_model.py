"""The unknown-model policy through the gateway: ``defaults.unknown_model: deny`` refuses a call
whose model no price source knows before it reaches the upstream; ``flag`` lets it through and
records it as unpriced (cost unknown, never $0)."""

from __future__ import annotations

import httpx

from tests.support.fixtures import KEY

BODY = {"model": "fixture-model-nobody-prices", "messages": [{"role": "user", "content": "Say hello"}]}


def test_deny_refuses_an_unpriced_model_before_calling_upstream(start_gateway, fake) -> None:
    gateway = start_gateway(defaults={"unknown_model": "deny"})
    before = len(httpx.get(f"{fake.url}/_fake/requests").json())
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {KEY}"}
    )
    assert answer.status_code == 402
    error = answer.json()["error"]
    assert error["code"] == "unpriced_model" and "fixture-model-nobody-prices" in error["message"]
    assert len(httpx.get(f"{fake.url}/_fake/requests").json()) == before  # never forwarded
    assert gateway.observer().events() == []
    # a priced model still goes through
    ok = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={**BODY, "model": "gpt-4o-mini"},
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert ok.status_code == 200


def test_flag_records_the_call_with_an_unknown_cost(start_gateway) -> None:
    gateway = start_gateway()
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=BODY, headers={"authorization": f"Bearer {KEY}"}
    )
    assert answer.status_code == 200
    (event,) = gateway.observer().events()
    assert event.cost_usd is None and event.metadata["unpriced"] == ["model"]
