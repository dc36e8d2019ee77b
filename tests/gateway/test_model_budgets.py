"""Per-model budgets at the gateway (issue 15 item 5), through the official ``openai`` client: a
budget with ``models`` counts the calls sent to those models only, judged on the model actually
sent, so a call degraded to a cheaper model is charged to that model, not to the budget it would
have broken.

Every call is ``max_tokens: 20`` against the fake: "Say hello" is 6 prompt tokens, so a call
charges 26 total tokens, and a second call cannot fit 30 (4 left, below 6 + the 16-token minimum).
"""

from __future__ import annotations

import openai
import pytest

from tests.support.fixtures import KEY
from tests.support.servers import free_port

MESSAGES = [{"role": "user", "content": "Say hello"}]
GPT_4O = {
    "name": "gpt-4o-cap",
    "scope": "user",
    "meter": "total_tokens",
    "limit": 30,
    "models": ["openai/gpt-4o"],
}


def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0)


def call(c: openai.OpenAI, model: str):
    return c.chat.completions.create(model=model, messages=MESSAGES, max_tokens=20)


def test_a_model_budget_counts_only_its_models_calls(start_gateway) -> None:
    gateway = start_gateway(budgets=[GPT_4O])
    c = client(gateway)
    for _ in range(3):
        call(c, "gpt-4o-mini")  # another model: not counted
    call(c, "gpt-4o")
    with pytest.raises(openai.APIStatusError) as denied:
        call(c, "gpt-4o")
    assert denied.value.status_code == 402
    assert denied.value.body["budget"]["budget"] == "gpt-4o-cap"  # type: ignore[index]
    call(c, "gpt-4o-mini")  # still fine
    (balance,) = gateway.observer().budget_balances("gpt-4o-cap")
    assert balance.spent == 26
    assert [e.subject.model for e in gateway.observer().events()] == ["gpt-4o-mini"] * 3 + [
        "gpt-4o",
        "gpt-4o-mini",
    ]


def test_a_call_degraded_to_another_model_is_judged_on_the_model_sent(start_gateway) -> None:
    """The gpt-4o budget refuses the second call; the degrade policy sends it to gpt-4o-mini, which
    that budget does not count, so it is admitted and charged to gpt-4o-mini alone."""
    degrade = {"models": {"gpt-4o": "gpt-4o-mini"}, "below": 0.01}
    gateway = start_gateway(budgets=[GPT_4O], degrade=degrade)
    c = client(gateway)
    call(c, "gpt-4o")
    reply = call(c, "gpt-4o")  # refused for gpt-4o, admitted degraded
    assert reply.model == "gpt-4o-mini"
    (balance,) = gateway.observer().budget_balances("gpt-4o-cap")
    assert (balance.spent, balance.held) == (26, 0)
    first, second = gateway.observer().events()
    assert (first.model, first.subject.model) == ("gpt-4o", "gpt-4o")
    assert (second.model, second.subject.model) == ("gpt-4o-mini", "gpt-4o-mini")
    assert second.metadata["degraded"]["model"] == "gpt-4o-mini"


def test_a_fallback_is_judged_on_the_fallback_model(start_gateway, fake) -> None:
    """gpt-4o's only upstream is down, so each call falls back to gpt-4o-mini: charged to the
    gpt-4o-mini budget (26 of 30, then 402 before anything is sent), never to gpt-4o's."""
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: the primary fails to connect
    budgets = [
        {**GPT_4O, "limit": 1000},
        {
            "name": "mini-cap",
            "scope": "user",
            "meter": "total_tokens",
            "limit": 30,
            "models": ["gpt-4o-mini"],
        },
    ]
    gateway = start_gateway(
        budgets=budgets,
        upstreams=[
            {"name": "primary", "provider": "fake", "base_url": dead, "models": ["gpt-4o"]},
            {
                "name": "mini",
                "provider": "fake",
                "base_url": fake.url,
                "api_key_env": "FAKE_UPSTREAM_KEY",
                "models": ["gpt-4o-mini"],
            },
        ],
        fallbacks={"gpt-4o": ["gpt-4o-mini"]},
    )
    c = client(gateway)
    assert call(c, "gpt-4o").model == "gpt-4o-mini"
    with pytest.raises(openai.APIStatusError) as denied:
        call(c, "gpt-4o")
    assert denied.value.status_code == 402
    assert denied.value.body["budget"]["budget"] == "mini-cap"  # type: ignore[index]
    observer = gateway.observer()
    assert [b.spent for b in observer.budget_balances("gpt-4o-cap")] in ([], [0])
    assert [(b.spent, b.held) for b in observer.budget_balances("mini-cap")] == [(26, 0)]
    assert [(e.subject.model, e.status) for e in observer.events()] == [
        ("gpt-4o", "upstream_error"),
        ("gpt-4o-mini", "ok"),
        ("gpt-4o", "upstream_error"),
    ]


def test_a_dated_snapshot_cannot_escape_its_models_budget(start_gateway) -> None:
    """Naming the snapshot (``gpt-4o-2024-08-06``) is the same model as far as the budget goes."""
    gateway = start_gateway(budgets=[GPT_4O])
    c = client(gateway)
    call(c, "gpt-4o")
    with pytest.raises(openai.APIStatusError) as denied:
        call(c, "gpt-4o-2024-08-06")
    assert denied.value.status_code == 402
    assert denied.value.body["budget"]["budget"] == "gpt-4o-cap"  # type: ignore[index]
