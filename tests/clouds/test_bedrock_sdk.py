"""boto3's ``bedrock-runtime`` client wrapped by ``tokenward.Guard`` (botocore's event hooks),
against the fake provider speaking Bedrock Runtime and checking the client's own SigV4
signature: the bounded body is written before botocore signs it. Expected figures: the fake's
documented counts; Claude 3.5 Sonnet v1 in a region at $3 / $15 per 1M tokens (genai-prices' AWS
rows)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

import tokenward
from tests.support.servers import serving
from tokenward.fake import FakeSettings
from tokenward.fake import create_app as create_fake

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
AKID, SECRET = "AKIAFAKECLIENT", "client-secret-access-key"
MESSAGES = [{"role": "user", "content": [{"text": "Say hello"}]}]


@pytest.fixture
def signed_fake():
    with serving(
        create_fake(FakeSettings(reply_tokens=20, aws_access_key_id=AKID, aws_secret_access_key=SECRET))
    ) as fake:
        yield fake


def runtime(fake: Any, options: dict[str, Any] | None = None) -> Any:
    client = boto3.client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=fake.url,
        aws_access_key_id=AKID, aws_secret_access_key=SECRET, config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip
    if options:
        client.meta.events.register(
            "before-sign.bedrock-runtime.*",
            lambda request, **_: request.headers.__setitem__("x-fake-options", json.dumps(options)),
        )
    return client


def test_converse_clamped_signed_and_recorded(signed_fake) -> None:
    guard = tokenward.Guard("memory://", budgets=["session:total_tokens=40"])
    client = guard.wrap(runtime(signed_fake))
    with guard.session("s-1"):
        answer = client.converse(modelId=MODEL, messages=MESSAGES, inferenceConfig={"maxTokens": 64})
        with pytest.raises(tokenward.BudgetExceeded):
            client.converse(modelId=MODEL, messages=MESSAGES, inferenceConfig={"maxTokens": 64})
    text = answer["output"]["message"]["content"][0]["text"]
    [event] = guard.ledger.events()
    assert (event.provider, event.model, event.usage.input_tokens) == ("aws", MODEL, 6)
    assert event.usage.output_tokens == len(text.split())
    assert event.cost_usd == (6 * Decimal(3) + event.usage.output_tokens * Decimal(15)) / 10**6
    sent = httpx.get(f"{signed_fake.url}/_fake/requests").json()
    # the hold clamped maxTokens below the 64 asked (40 tokens in all), and the fake accepted the signature
    assert len(sent) == 1 and sent[0]["body"]["inferenceConfig"]["maxTokens"] < 64


def test_converse_stream_cut_off_and_invoke(signed_fake) -> None:
    guard = tokenward.Guard("memory://")
    client = guard.wrap(runtime(signed_fake, {"ignore_max_tokens": True, "reply_tokens": 200}))
    with guard.session("s-2"):
        answer = client.converse_stream(modelId=MODEL, messages=MESSAGES, inferenceConfig={"maxTokens": 12})
        events = list(answer["stream"])
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text.split() == ["hello"] * 12
    assert [e["messageStop"]["stopReason"] for e in events if "messageStop" in e] == ["max_tokens"]
    plain = guard.wrap(runtime(signed_fake))
    with guard.session("s-3"):
        body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
                           "messages": [{"role": "user", "content": "Say hello"}]})  # fmt: skip
        reply = json.loads(plain.invoke_model(modelId=MODEL, body=body)["body"].read())
    assert (reply["usage"]["input_tokens"], reply["usage"]["output_tokens"]) == (6, 20)
    cut, invoked = guard.ledger.events()
    assert cut.status == "cut_off" and cut.usage.output_tokens >= 12
    assert (invoked.endpoint, invoked.usage.input_tokens, invoked.usage.output_tokens) == (
        "anthropic-messages",
        6,
        20,
    )


def test_anthropic_bedrock_signed_again_after_the_bound_is_written(signed_fake) -> None:
    import anthropic

    guard = tokenward.Guard("memory://", budgets=["session:total_tokens=40"])
    client = guard.wrap(
        anthropic.AnthropicBedrock(
            aws_access_key=AKID,
            aws_secret_key=SECRET,
            aws_region="us-east-1",
            base_url=signed_fake.url,
            max_retries=0,
        )
    )
    with guard.session("s-4"):
        message = client.messages.create(
            model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
        )
        with client.messages.stream(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "Say hello"}]
        ) as stream:
            text = "".join(stream.text_stream)
    assert message.content[0].text.split() == ["hello"] * message.usage.output_tokens
    assert text.split() == ["hello"] * 5
    sent = httpx.get(f"{signed_fake.url}/_fake/requests").json()
    assert sent[0]["body"]["max_tokens"] < 64  # clamped by the budget, and still accepted: signed again
    first, second = guard.ledger.events()
    assert (first.provider, first.usage.input_tokens) == ("aws", 6) and second.usage.output_tokens == 5
