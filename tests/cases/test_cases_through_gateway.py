"""The 2026-12 shared cases through the gateway, against the fake provider.

Usage and stream cases (N01, N02, N03, N04, N06, N07, N08, with their variants): the fake replays
the provider's answer (option ``response`` for a whole JSON answer built from the case's usage and
``response_fields``, option ``events`` for its stream) and the event the gateway records must have
the case's expected tokens and cost. Recording and enforcement cases: N10 (a user budget counts the
spend of every endpoint) and N13 (failed attempts are a known zero and never block the retry).
The expected figures are the cases', worked out by hand in ``../shared/cases``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cases.test_cost_cases import TOKEN_FIELDS as CASE_TOKEN_FIELDS
from tests.cases.test_cost_cases import case_prices_file, whole_response
from tests.support.fixtures import KEY, Gateway
from tests.support.shared import case, cases, variant
from tokenward.core.budgets import Subject

D = Decimal
NEW = ("N01", "N02", "N03", "N04", "N06", "N07", "N08")
TOKEN_FIELDS = (*CASE_TOKEN_FIELDS, "web_search_calls")


def _labelled() -> list[tuple[str, str, str | None]]:
    out: list[tuple[str, str, str | None]] = []
    for case_id in NEW:
        base = cases().get(case_id)
        if base is None:
            continue
        out.append((case_id, case_id, None))
        out += [(f"{case_id}/{v['label']}", case_id, v["label"]) for v in base.get("variants", [])]
    return out


LABELLED = _labelled()


def _request(item: dict[str, Any], stream: bool) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(path, body, headers) of a call in the case's dialect, with its request fields."""
    dialect, model = item["dialect"], item["model"]
    auth = {"authorization": f"Bearer {KEY}"}
    fields = {k: v for k, v in (item.get("request_fields") or {}).items() if k != "stream"}
    if dialect in ("openai-chat", "openai-compatible"):
        body = {"model": model, "messages": [{"role": "user", "content": "Say hello"}], **fields}
        return "/v1/chat/completions", {**body, "stream": stream}, auth
    if dialect == "openai-responses":
        return "/v1/responses", {"model": model, "input": "Say hello", **fields, "stream": stream}, auth
    if dialect == "anthropic-messages":
        body = {"model": model, "max_tokens": 1024, "messages": [{"role": "user", "content": "Say hello"}]}
        return "/v1/messages", {**body, **fields, "stream": stream}, auth
    assert dialect == "gemini"
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}], **fields}
    return f"/v1beta/models/{model}:{method}", body, {"x-goog-api-key": KEY}


def _replayed(gateway: Gateway, item: dict[str, Any]) -> Any:
    stream = "events" in item
    path, body, headers = _request(item, stream)
    if stream:
        body["fake"] = {"events": item["events"]}
    else:
        body["fake"] = {"response": whole_response(item)}
    if item["id"] == "N08":  # the case's pre-flight estimate is 100 tokens (scenario)
        # "hello" + 75 x " hello" is 76 o200k tokens; + 3 (message) + 1 ("user") + 3 (reply
        # priming) = 83, x 1.2 (no tokenizer for deepseek-reasoner) = 99.6, rounded up: 100
        body["messages"] = [{"role": "user", "content": "hello" + " hello" * 75}]
    reply = httpx.post(f"{gateway.url}{path}", json=body, headers=headers, timeout=30)
    assert reply.status_code == 200, reply.text
    events = gateway.observer().events()
    assert len(events) == 1
    assert not events[0].disputed, events[0].metadata  # a case's own figures are never overridden
    return events[0]


@pytest.mark.skipif(
    not LABELLED, reason="../shared/cases is not available (it sits beside the project in CI)"
)
@pytest.mark.parametrize(("label", "case_id", "variant_label"), LABELLED, ids=[x[0] for x in LABELLED])
def test_new_case_through_the_gateway(
    start_gateway, tmp_path: Path, label: str, case_id: str, variant_label: str | None
) -> None:
    item = case(case_id) if variant_label is None else variant(case(case_id), variant_label)
    item = {k: v for k, v in item.items() if k != "variants"}
    if variant_label is not None and item.get("raw_usage") is None and "events" not in item:
        pytest.fail(f"{label}: nothing to replay")
    if "events" in item:
        item.pop("raw_usage", None)
    gateway = start_gateway(prices=str(case_prices_file(tmp_path, item)))
    event = _replayed(gateway, item)
    expected = item["expected"]
    for name in TOKEN_FIELDS:
        if name in expected:
            assert getattr(event.usage, name) == expected[name], f"{label}: {name}"
    if "cost_usd" in expected:
        assert event.cost_usd == D(expected["cost_usd"]), label
    if "usage_complete" in expected and expected["usage_complete"] is False:
        assert not event.usage.complete
    if "output_tokens_for_budgets" in expected:
        assert event.charged["output_tokens"] == expected["output_tokens_for_budgets"], label
    if "budget_input_tokens" in expected:
        assert event.charged["input_tokens"] == expected["budget_input_tokens"], label
    for name in ("input_source", "output_source"):
        if name in expected:
            assert getattr(event.usage, name) == expected[name], f"{label}: {name}"
    if "cost_estimated" in expected:
        assert event.cost_estimated is expected["cost_estimated"], label
    if "speed" in expected and expected["speed"] == "fast":
        assert event.metadata["speed"] == "fast", label


def _user_budget(item: dict[str, Any]) -> dict[str, Any]:
    budget = item["scenario"]["budget"]
    return {
        "name": f"{item['id']}-user-usd",
        "scope": budget["scope"],
        "id": "alice",
        "meter": "cost_usd",
        "limit": budget["limit_usd"],
    }


def test_n10_a_user_budget_counts_every_endpoint(start_gateway, tmp_path: Path) -> None:
    item = case("N10")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"models": item["prices_per_million"]}))
    gateway = start_gateway(prices=str(prices), budgets=[_user_budget(item)])
    auth = {"authorization": f"Bearer {KEY}"}
    say_hello = [{"role": "user", "content": "Say hello"}]  # the fake: 2 pieces + 4 = 6 prompt tokens
    for call in item["scenario"]["calls"]:
        path, model, stream = call["path"], call["model"], call["stream"]
        if path == "/v1/chat/completions":
            body: dict[str, Any] = {"model": model, "messages": say_hello, "stream": stream}
        elif path == "/v1/responses":
            body = {"model": model, "input": say_hello, "stream": stream}
        elif path == "/v1/messages":
            body = {"model": model, "max_tokens": 64, "messages": say_hello, "stream": stream}
        else:
            body = {"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]}
        reply = httpx.post(f"{gateway.url}{path}", json=body, headers=auth, timeout=30)
        assert reply.status_code == 200, reply.text
    events = gateway.observer().events()
    assert len(events) == item["expected"]["events"]
    for event, call in zip(events, item["scenario"]["calls"], strict=True):
        assert (event.usage.input_tokens, event.usage.output_tokens) == (6, 20)
        assert event.cost_usd == D(call["cost_usd"]), call["path"]
        assert not event.disputed, event.metadata
    (balance,) = gateway.observer().balances(Subject(user="alice"))
    assert balance.spent == D(item["expected"]["spent_usd"]) and balance.held == 0


def test_n13_failed_attempts_are_a_known_zero_and_never_block_the_retry(
    start_gateway, tmp_path: Path
) -> None:
    item = case("N13")
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"models": {item["model"]: item["prices_per_million"]}}))
    gateway = start_gateway(prices=str(prices), budgets=[_user_budget(item)])
    decisions = []
    for attempt in item["scenario"]["attempts"]:
        body: dict[str, Any] = {
            "model": item["model"],
            "messages": [{"role": "user", "content": "Say hello"}],
        }
        if attempt["upstream_status"] != 200:
            body["fake"] = {"status": attempt["upstream_status"]}
        reply = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {KEY}"},
            timeout=30,
        )
        decisions.append("deny" if reply.status_code in (402, 429) else "admit")
        assert reply.status_code == attempt["upstream_status"]
        if attempt["usage"] is not None:
            usage = reply.json()["usage"]
            assert (usage["prompt_tokens"], usage["completion_tokens"]) == (6, 20)
    expected = item["expected"]
    assert decisions == expected["decisions"]
    events = gateway.observer().events()
    assert [(e.status, e.cost_usd) for e in events] == [
        (x["status"], D(x["cost_usd"])) for x in expected["events"]
    ]
    assert not any(e.disputed for e in events)  # a failed attempt stays a known zero, undisputed
    (balance,) = gateway.observer().balances(Subject(user="alice"))
    assert balance.spent == D(expected["spent_usd"]) and balance.held == D(expected["held_usd_after"])
