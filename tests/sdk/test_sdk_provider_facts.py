"""The SDK prices and holds the late-2026 provider facts as the gateway does: the official
``anthropic`` and ``openai`` clients wrapped by ``tokenward.Guard``, against the fake provider.

The fake's counts: "Say hello" is 2 pieces + 4 for the message = 6 prompt tokens, the reply 20
tokens; it reports back the ``speed`` and ``inference_geo`` asked for. Rates are fixture rates.
"""

from __future__ import annotations

from decimal import Decimal

import anthropic
import openai
import pytest

import tokenward
from tests.support.fixtures import UPSTREAM_KEY
from tests.support.provider_facts import OPUS, TERRA
from tokenward.core.pricebook import PriceBook

D = Decimal
MESSAGES = [{"role": "user", "content": "Say hello"}]
PRICES = PriceBook({"models": {"claude-opus-4-8": OPUS, "gpt-5.6-terra": TERRA}}, use_genai=False)


def test_fast_us_only_calls_through_the_wrapped_anthropic_client(fake) -> None:
    guard = tokenward.Guard("memory://", prices=PRICES)
    client = guard.wrap(anthropic.Anthropic(api_key=UPSTREAM_KEY, base_url=fake.url, max_retries=0))
    extra = {"speed": "fast", "inference_geo": "us"}
    client.messages.create(model="claude-opus-4-8", max_tokens=64, messages=MESSAGES, extra_body=extra)
    with client.messages.stream(
        model="claude-opus-4-8", max_tokens=64, messages=MESSAGES, extra_body=extra
    ) as s:
        s.until_done()
    # fast x 1.1 (US-only): 6 x 11 + 20 x 55 = 66 + 1100 = 1166 per 1M
    assert [e.cost_usd for e in guard.ledger.events()] == [D("0.001166")] * 2


def test_openai_cache_writes_through_the_wrapped_client(fake) -> None:
    guard = tokenward.Guard("memory://", prices=PRICES)
    client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    fake_options = {"fake": {"cache_write_tokens": 4}}
    client.chat.completions.create(model="gpt-5.6-terra", messages=MESSAGES, extra_body=fake_options)
    list(
        client.chat.completions.create(
            model="gpt-5.6-terra", messages=MESSAGES, stream=True, extra_body=fake_options
        )
    )
    # (6 - 4) x 2.50 + 4 x 3.125 + 20 x 15 = 5 + 12.5 + 300 = 317.5 per 1M
    assert [e.cost_usd for e in guard.ledger.events()] == [D("0.0003175")] * 2


def test_the_sdk_holds_fast_mode_at_its_rates(fake) -> None:
    guard = tokenward.Guard("memory://", prices=PRICES, budgets=["user=alice:cost_usd=0.000001"])
    client = guard.wrap(anthropic.Anthropic(api_key=UPSTREAM_KEY, base_url=fake.url, max_retries=0))
    with guard.session("s-1", user="alice"), pytest.raises(tokenward.BudgetExceeded) as denied:
        client.messages.create(
            model="claude-opus-4-8", max_tokens=16, messages=[{"role": "user", "content": "hello"}],
            extra_body={"speed": "fast"},
        )  # fmt: skip
    # "hello": 1 + 4 = 5 o200k tokens x 1.2 = 6 estimated; fast: 6 x 10 + 16 x 50 = 860 per 1M
    assert denied.value.requested == D("0.00086")
