"""``openai.AzureOpenAI`` / ``AsyncAzureOpenAI`` wrapped by ``tokenward.Guard``, against the fake
provider speaking Azure's deployments surface (its ``api-key`` checked). Expected figures: the
fake's documented counts and OpenAI's published gpt-4o-mini rates ($0.15 / $0.60 per 1M tokens),
the row genai-prices' Azure table falls back on, times the configured multiplier.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import openai
import pytest

import tokenward
from tests.support.fixtures import UPSTREAM_KEY

API_VERSION = "2024-10-21"
MESSAGES = [{"role": "user", "content": "Say hello"}]
FAKE_PROMPT = 6
HELLO_20 = " ".join(["hello"] * 20)
DEPLOYMENTS = {"mini-prod": "gpt-4o-mini", "mini-eu": {"model": "gpt-4o-mini", "price_multiplier": "1.25"}}


def azure(fake, guard: tokenward.Guard, cls=openai.AzureOpenAI, **headers: str):
    client = cls(
        azure_endpoint=fake.url,
        api_key=UPSTREAM_KEY,
        api_version=API_VERSION,
        default_headers=headers,
        max_retries=0,
    )
    return guard.wrap(client, deployments=DEPLOYMENTS)


def test_sync_json_and_stream_priced_as_the_deployed_model(fake) -> None:
    guard = tokenward.Guard("memory://", project="demo")
    client = azure(fake, guard)
    reply = client.chat.completions.create(model="mini-prod", messages=MESSAGES)
    chunks = list(client.chat.completions.create(model="mini-eu", messages=MESSAGES, stream=True))
    assert reply.choices[0].message.content == HELLO_20
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == HELLO_20
    plain, regional = guard.ledger.events()
    base = (FAKE_PROMPT * Decimal("0.15") + 20 * Decimal("0.60")) / 10**6
    assert (plain.model, plain.provider, plain.metadata["deployment"]) == (
        "gpt-4o-mini",
        "azure",
        "mini-prod",
    )
    assert plain.cost_usd == base and plain.cost_estimated
    assert regional.cost_usd == base * Decimal("1.25") and regional.metadata["deployment"] == "mini-eu"
    sent = httpx.get(f"{fake.url}/_fake/requests").json()
    assert [r["path"] for r in sent] == ["/openai/deployments/mini-prod/chat/completions",
                                         "/openai/deployments/mini-eu/chat/completions"]  # fmt: skip
    assert sent[0]["body"]["model"] == "mini-prod"


def test_async_stream_cut_off_and_denial(fake) -> None:
    guard = tokenward.Guard("memory://", budgets=["session:total_tokens=40"])
    client = azure(fake, guard, openai.AsyncAzureOpenAI)

    async def main() -> str:
        with guard.session("s-1", user="alice"):
            stream = await client.chat.completions.create(
                model="mini-prod",
                messages=MESSAGES,
                max_tokens=12,
                stream=True,
                extra_body={"fake": {"ignore_max_tokens": True, "reply_tokens": 200}},
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            with pytest.raises(tokenward.BudgetExceeded):
                await client.chat.completions.create(model="mini-prod", messages=MESSAGES, max_tokens=30)
        return text

    assert asyncio.run(main()) == " ".join(["hello"] * 12)
    [event] = guard.ledger.events()
    assert event.status == "cut_off" and event.model == "gpt-4o-mini"


def test_content_filtered_prompt_is_charged(fake) -> None:
    guard = tokenward.Guard("memory://", project="demo")
    client = azure(fake, guard, **{"x-fake-azure-content-filter": "prompt"})
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="mini-prod", messages=MESSAGES, max_tokens=30)
    [event] = guard.ledger.events()
    our_estimate = 3 + 1 + 2 + 3  # OpenAI chat framing + "user" + "Say hello" + reply priming
    assert event.metadata["content_filter"] == "prompt"
    assert (event.usage.input_tokens, event.usage.output_tokens) == (our_estimate, 30)


def test_a_deployment_is_estimated_with_its_models_tokenizer(fake, caplog) -> None:
    """The wrapped client maps the deployment to its model before the first estimate: no "no
    tokenizer known for model 'mini-prod'" warning."""
    from tokenward.core.tokenizers import encoding_for_model

    guard = tokenward.Guard("memory://", project="demo")
    client = azure(fake, guard)
    encoding_for_model.cache_clear()  # it warns once per model id: a name seen before would not
    with caplog.at_level("WARNING"):
        reply = client.chat.completions.create(model="mini-prod", messages=MESSAGES)
    assert reply.choices[0].message.content == HELLO_20
    assert not [r for r in caplog.records if "no tokenizer known" in r.getMessage()]
    assert [e.model for e in guard.ledger.events()] == ["gpt-4o-mini"]
