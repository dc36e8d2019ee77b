"""The pure rules of what a guarded call holds and when it waits: request readers (tiers,
server-side tools, proto3 integers, stored context), calibration per upstream, and the waiting
helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tokenward.core.budgets import Subject
from tokenward.core.calibration import EstimateStats, calibration_key, correction, upstream_key
from tokenward.core.events import UsageEvent
from tokenward.core.usage import Usage
from tokenward.errors import BudgetExceeded, Stopped, ValidationError
from tokenward.guard.context import event_tokens, looked_up
from tokenward.guard.flow import GuardSettings
from tokenward.guard.waiting import backoff, worth_waiting
from tokenward.guard.wire.endpoints import AnthropicMessages, Gemini, OpenAIChat, OpenAIResponses
from tokenward.guard.wire.endpoints.billable import ContextRef, positive_int, requested_tier

D = Decimal


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (8, 8),
        ("8", 8),
        (" 12 ", 12),
        (0, None),
        ("0", None),
        ("eight", None),
        (True, None),
        (2.0, None),
        (-1, None),
    ],
)
def test_proto3_integers_may_be_numbers_or_decimal_strings(value: object, expected: int | None) -> None:
    assert positive_int(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("priority", "priority"),
        ("Flex", "flex"),
        ("auto", None),
        (None, None),
        ("standard_only", "default"),
        (3, None),
    ],
)
def test_the_tier_a_request_names(value: object, expected: str | None) -> None:
    assert requested_tier(value) == expected


def test_server_tools_each_provider_enables() -> None:
    responses = {
        "tools": [{"type": "function", "name": "f"}, {"type": "web_search_preview"}],
        "max_tool_calls": 4,
    }
    assert OpenAIResponses().request_facts(responses).server_tools == (("web_search", 4),)
    assert OpenAIChat().request_facts({"web_search_options": {}}).server_tools == (("web_search", None),)
    claude = {"tools": [{"type": "web_search_20250305", "max_uses": 2}, {"type": "web_fetch_20250910"}]}
    assert AnthropicMessages().request_facts(claude).server_tools == (("web_search", 2), ("web_fetch", None))
    gemini = {"tools": [{"googleSearch": {}}, {"url_context": {}}, {"functionDeclarations": []}]}
    assert Gemini().request_facts(gemini).server_tools == (("web_search", None), ("web_fetch", None))


def test_stored_context_each_endpoint_names() -> None:
    body = {"previous_response_id": "resp_1", "conversation": {"id": "conv_1"}}
    assert OpenAIResponses().stored_context(body) == (
        ContextRef("previous_response_id", "response_id", "resp_1"),
        ContextRef("conversation", "conversation", "conv_1"),
    )
    assert OpenAIResponses().request_metadata(body) == {
        "conversation": "conv_1",
        "previous_response_id": "resp_1",
    }
    assert Gemini().stored_context({"cachedContent": "cachedContents/x"}) == (
        ContextRef("cachedContent", "cached_content", "cachedContents/x"),
    )
    assert OpenAIChat().stored_context(body) == ()


def test_a_known_event_stands_for_its_tokens_and_an_unknown_one_follows_the_policy() -> None:
    at = datetime(2025, 1, 1, tzinfo=UTC)
    answered = UsageEvent("r", at, Subject(), Usage(input_tokens=31, output_tokens=20))
    assert event_tokens(answered, "response_id") == 51  # its input holds the turns before it
    assert event_tokens(answered, "cached_content") == 31  # a cache is its size
    ref = ContextRef("previous_response_id", "response_id", "resp_x")
    assert looked_up(ref, answered, GuardSettings()) == 51
    with pytest.raises(ValidationError) as refused:
        looked_up(ref, None, GuardSettings())
    assert refused.value.field == "previous_response_id"
    assert looked_up(ref, None, GuardSettings(unknown_context=4000)) == 4000


def test_exact_models_are_calibrated_per_upstream_and_only_against_a_far_higher_count() -> None:
    key = upstream_key("gpt-4o-mini-2024-07-18", "127.0.0.1:9100")
    assert key == "gpt-4o-mini@(127.0.0.1_9100)" and calibration_key(key) == key
    slightly = EstimateStats(key).add(100, 104)
    assert not correction(slightly, exact=True).applied  # framing noise: not worth a margin
    assert correction(slightly).applied  # an approximated model is corrected up at once
    far = EstimateStats(key).add(9, 240)
    learnt = correction(far, exact=True)
    assert learnt.applied and learnt.apply(9) == 253  # 26.666667 x 1.05 = 28.00000035; 9 x that, rounded up
    lower = EstimateStats(key)
    for _ in range(20):
        lower = lower.add(100, 50)
    assert not correction(lower, exact=True).applied  # never lowered for an exact tokenizer


def _denial(used: int, held: int, requested: int, limit: int = 100, mode: str = "hard") -> BudgetExceeded:
    return BudgetExceeded(
        budget="b", scope="session", subject_id="s", meter="total_tokens", limit=D(limit),
        used=D(used), held=D(held), requested=D(requested), reset_at=None, mode=mode,
    )  # fmt: skip


def test_only_a_refusal_caused_by_holds_in_flight_is_worth_waiting_for() -> None:
    assert worth_waiting(_denial(used=10, held=80, requested=30))  # 10 + 30 fit once holds settle
    assert not worth_waiting(_denial(used=80, held=10, requested=30))  # the spend alone is too much
    assert not worth_waiting(_denial(used=10, held=0, requested=100))  # nothing to wait for
    assert not worth_waiting(_denial(used=10, held=80, requested=30, mode="shadow"))
    stopped = Stopped(
        stopped_scope="session", stopped_id="s", stopped_at=datetime(2025, 1, 1, tzinfo=UTC),
        budget="b", scope="session", subject_id="s", meter="total_tokens", limit=D(100), used=D(0),
        held=D(50), requested=D(1), reset_at=None,
    )  # fmt: skip
    assert not worth_waiting(stopped)


def test_the_backoff_doubles_to_a_quarter_second_with_jitter() -> None:
    assert [backoff(n, lambda: 1.0) for n in range(7)] == [0.01, 0.02, 0.04, 0.08, 0.16, 0.25, 0.25]
    assert backoff(0, lambda: 0.0) == 0.005
