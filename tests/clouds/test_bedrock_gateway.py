"""Amazon Bedrock through the gateway: boto3's ``bedrock-runtime`` client and
``anthropic.AnthropicBedrock`` in front, the fake provider speaking Bedrock Runtime behind (its
event streams included), the gateway signing with SigV4 from the standard AWS credential chain
(environment variables here), which the fake recomputes with botocore.

Expected figures: the fake's documented counts (replies are ``hello`` repeated, k words = k
tokens; Messages prompts count ``\\w+|[^\\w\\s]`` pieces plus 4 per message); prices from AWS's
published Bedrock rates as genai-prices holds them (Claude 3.5 Sonnet v1 in a region: $3 / $15 per
1M tokens).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EventStreamError

from tests.support.fixtures import KEY, Gateway
from tests.support.servers import ThreadedServer, serving
from tokenward.fake import FakeSettings
from tokenward.fake import create_app as create_fake
from tokenward.fake.transport import FakeTransport
from tokenward.gateway import GatewayConfig, create_app
from tokenward.gateway.relay import GatewayState

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
AKID, SECRET = "AKIAFAKEGATEWAY", "gateway-secret-access-key"
HELLO_20 = " ".join(["hello"] * 20)
MESSAGES = [{"role": "user", "content": [{"text": "Say hello"}]}]


def cost(prompt: int, output: int) -> Decimal:
    return (prompt * Decimal(3) + output * Decimal(15)) / 10**6


@pytest.fixture
def bedrock_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedServer]:
    settings = FakeSettings(reply_tokens=20, aws_access_key_id=AKID, aws_secret_access_key=SECRET)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AKID)  # the gateway's own credentials (standard chain)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    with serving(create_fake(settings)) as server:
        yield server


@pytest.fixture
def bedrock_gateway(tmp_path: Path, bedrock_fake: ThreadedServer) -> Iterator[Any]:
    running: list[ThreadedServer] = []

    def start(
        budgets: list[dict[str, Any]] | None = None, transports: dict[str, Any] | None = None, **upstream: Any
    ) -> Gateway:
        ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
        entry = {"name": "bedrock", "provider": "bedrock", "base_url": bedrock_fake.url, "region": "us-east-1",
                 "models": ["anthropic.*"], **upstream}  # fmt: skip
        config = GatewayConfig.from_mapping(
            {
                "ledger": ledger_url,
                "upstreams": [entry],
                "keys": [{"key": KEY, "name": "test-key", "user": "alice", "sigv4_secret": "client-secret"}],
                "budgets": budgets or [],
            }
        )
        states: list[GatewayState] = []
        server = ThreadedServer(create_app(config, transports=transports, on_ready=states.append))
        server.start()
        running.append(server)
        return Gateway(server, states[0], ledger_url)

    yield start
    for server in running:
        server.stop()


def runtime(gateway: Gateway, secret: str = "client-secret") -> Any:
    """boto3 signing with the tokenward key's name as its access key and the key's SigV4 secret."""
    return boto3.client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=gateway.url,
        aws_access_key_id="test-key", aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip


def with_fake_options(client: Any, options: dict[str, Any]) -> Any:
    """Send the fake's per-request options as its ``x-fake-options`` header (boto3 has no extra
    body keys to carry them), added before the request is signed."""
    import json

    def add(request: Any, **_: Any) -> None:
        request.headers["x-fake-options"] = json.dumps(options)

    client.meta.events.register("before-sign.bedrock-runtime.*", add)
    return client


def received(fake: ThreadedServer) -> list[dict[str, Any]]:
    return httpx.get(f"{fake.url}/_fake/requests").json()


def test_converse_signed_both_ways(bedrock_gateway, bedrock_fake) -> None:
    gateway = bedrock_gateway()
    answer = runtime(gateway).converse(modelId=MODEL, messages=MESSAGES, inferenceConfig={"maxTokens": 64})
    assert answer["output"]["message"]["content"][0]["text"] == HELLO_20
    assert answer["usage"] == {"inputTokens": 6, "outputTokens": 20, "totalTokens": 26}
    [event] = gateway.observer().events()
    assert (event.model, event.provider, event.endpoint) == (MODEL, "aws", "bedrock-converse")
    assert (event.usage.input_tokens, event.usage.output_tokens) == (6, 20)
    assert event.cost_usd == cost(6, 20)
    [sent] = received(bedrock_fake)  # read as a stream, to be stopped at the hold (issue 14)
    assert sent["path"] == f"/model/{MODEL}/converse-stream"
    assert sent["body"]["inferenceConfig"] == {"maxTokens": 64} and "model" not in sent["body"]
    assert event.metadata.get("bounded") == "stream"


def test_converse_trusted_is_forwarded_as_it_is(bedrock_gateway, bedrock_fake) -> None:
    gateway = bedrock_gateway(bound_non_streamed="trust")
    answer = runtime(gateway).converse(modelId=MODEL, messages=MESSAGES, inferenceConfig={"maxTokens": 64})
    assert answer["output"]["message"]["content"][0]["text"] == HELLO_20
    [sent] = received(bedrock_fake)
    assert sent["path"] == f"/model/{MODEL}/converse"


def test_non_streamed_converse_is_stopped_at_the_hold(bedrock_gateway, bedrock_fake) -> None:
    """An upstream that ignores the bound (2,000 tokens generated, 12 allowed) is stopped at the
    hold for a non-streamed boto3 ``converse``: the answer ends as Bedrock ends a length-limited
    one, and the ledger charges at least what the fake (in process, generating as it is read: the
    referee of issue 14) generated before it was stopped."""
    fake = create_fake(FakeSettings(reply_tokens=20, aws_access_key_id=AKID, aws_secret_access_key=SECRET))
    gateway = bedrock_gateway(transports={"bedrock": FakeTransport(fake)})
    options = {"ignore_max_tokens": True, "reply_tokens": 2000, "chunk_tokens": 1}
    client = with_fake_options(runtime(gateway), options)
    answer = client.converse(modelId=MODEL, messages=MESSAGES, inferenceConfig={"maxTokens": 12})
    assert answer["output"]["message"]["content"][0]["text"].split() == ["hello"] * 12
    assert answer["stopReason"] == "max_tokens"
    usage = answer["usage"]  # the upstream sent none before the cut: tokenward's count, its estimate
    assert usage["outputTokens"] == 12 and usage["totalTokens"] == usage["inputTokens"] + 12
    [event] = gateway.observer().events()
    assert event.status == "cut_off" and event.metadata.get("bounded") == "stream"
    [tally] = fake.state.tally.all()  # what the fake generated
    assert tally["path"] == f"/model/{MODEL}/converse-stream" and not tally["finished"]
    assert 0 < tally["output_tokens"] < 2000  # stopped near the hold, not read to the end
    assert event.charged["output_tokens"] >= tally["output_tokens"]
    assert event.charged["total_tokens"] >= tally["input_tokens"] + tally["output_tokens"]


def test_converse_stream_cut_off_read_by_boto3(bedrock_gateway) -> None:
    gateway = bedrock_gateway()
    client = with_fake_options(runtime(gateway), {"ignore_max_tokens": True, "reply_tokens": 200})
    answer = client.converse_stream(modelId=MODEL, messages=MESSAGES, inferenceConfig={"maxTokens": 12})
    events = list(answer["stream"])  # decoded by botocore's own event-stream reader
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text.split() == ["hello"] * 12
    stops = [e["messageStop"]["stopReason"] for e in events if "messageStop" in e]
    assert stops == ["max_tokens"] and "metadata" in events[-1]
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 12
    [event] = gateway.observer().events()
    assert event.status == "cut_off"


def test_invoke_model_for_claude_json_and_stream(bedrock_gateway, bedrock_fake) -> None:
    gateway = bedrock_gateway()
    client = anthropic.AnthropicBedrock(
        aws_access_key="test-key", aws_secret_key="client-secret", aws_region="us-east-1", base_url=gateway.url,
        max_retries=0,
    )  # fmt: skip
    message = client.messages.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert message.content[0].text == HELLO_20
    with client.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "Say hello"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == HELLO_20
    events = gateway.observer().events()
    assert [(e.usage.input_tokens, e.usage.output_tokens) for e in events] == [(6, 20), (6, 20)]
    assert all(e.cost_usd == cost(6, 20) for e in events)
    paths = [r["path"] for r in received(bedrock_fake)]
    assert paths == [f"/model/{MODEL}/invoke-with-response-stream"] * 2  # the first bounded as a stream


def test_non_streamed_invoke_model_is_stopped_at_the_hold(bedrock_gateway) -> None:
    """InvokeModel for Claude, not streamed, from an upstream that ignores the bound: read as
    InvokeModelWithResponseStream, cut at the hold, answered as the Messages JSON ending as
    Anthropic ends a length-limited answer."""
    import json

    gateway = bedrock_gateway()
    client = anthropic.AnthropicBedrock(
        aws_access_key="test-key", aws_secret_key="client-secret", aws_region="us-east-1", base_url=gateway.url,
        max_retries=0,
    )  # fmt: skip
    options = json.dumps({"ignore_max_tokens": True, "reply_tokens": 200})
    message = client.messages.create(
        model=MODEL, max_tokens=12, messages=[{"role": "user", "content": "Say hello"}],
        extra_headers={"x-fake-options": options},
    )  # fmt: skip
    assert message.content[0].text.split() == ["hello"] * 12
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 12
    [event] = gateway.observer().events()
    assert event.status == "cut_off" and event.metadata.get("bounded") == "stream"
    assert event.usage.output_tokens == 12


def test_denied_with_the_aws_error_shape(bedrock_gateway, bedrock_fake) -> None:
    budget = {"name": "tiny", "scope": "user", "id": "alice", "meter": "total_tokens", "limit": 5}
    gateway = bedrock_gateway(budgets=[budget])
    with pytest.raises(ClientError) as denied:
        runtime(gateway).converse(modelId=MODEL, messages=MESSAGES)
    assert denied.value.response["Error"]["Code"] == "BudgetExceededException"
    assert denied.value.response["ResponseMetadata"]["HTTPStatusCode"] == 402
    assert received(bedrock_fake) == []


def test_a_bad_client_signature_is_refused_and_nothing_is_sent(bedrock_gateway, bedrock_fake) -> None:
    gateway = bedrock_gateway()
    with pytest.raises(ClientError) as refused:
        runtime(gateway, secret="not-the-secret").converse(modelId=MODEL, messages=MESSAGES)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401
    assert received(bedrock_fake) == []


def test_upstream_stream_failure_reaches_boto3_as_a_stream_error(bedrock_gateway) -> None:
    gateway = bedrock_gateway()
    client = with_fake_options(runtime(gateway), {"break_after_chunks": 3})
    answer = client.converse_stream(modelId=MODEL, messages=MESSAGES)
    with pytest.raises(EventStreamError):
        list(answer["stream"])
    [event] = gateway.observer().events()
    assert event.status == "stream_broken"


def test_the_fake_refuses_a_gateway_signing_with_the_wrong_secret(bedrock_gateway, monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-gateway-secret")
    gateway = bedrock_gateway()
    with pytest.raises(ClientError) as refused:
        runtime(gateway).converse(modelId=MODEL, messages=MESSAGES)
    assert refused.value.response["Error"]["Code"] == "InvalidSignatureException"
    [event] = gateway.observer().events()
    assert event.status == "upstream_error" and event.cost_usd == 0


def test_upstream_bedrock_api_key(tmp_path, monkeypatch) -> None:
    """The gateway sends a Bedrock API key (auth: api-key) instead of signing."""
    monkeypatch.setenv("UPSTREAM_BEDROCK_KEY", "bedrock-api-key-upstream")
    with serving(create_fake(FakeSettings(reply_tokens=20, api_key="bedrock-api-key-upstream"))) as fake:
        config = GatewayConfig.from_mapping(
            {
                "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
                "upstreams": [
                    {
                        "name": "bedrock",
                        "provider": "bedrock",
                        "base_url": fake.url,
                        "region": "us-east-1",
                        "auth": "api-key",
                        "api_key_env": "UPSTREAM_BEDROCK_KEY",
                    }
                ],
                "keys": [{"key": KEY, "name": "test-key", "user": "alice", "sigv4_secret": "client-secret"}],
            }
        )
        with serving(create_app(config)) as gateway:
            answer = runtime(gateway).converse(modelId=MODEL, messages=MESSAGES)
        assert answer["output"]["message"]["content"][0]["text"] == HELLO_20
        [sent] = received(fake)
        assert sent["headers"]["authorization"] == "<redacted>"  # the fake checked it is its key


def test_an_invoke_stream_event_that_is_not_json_is_passed_on_and_the_call_settled(bedrock_gateway) -> None:
    """A ``chunk`` whose Messages event cannot be decoded (a usage count of 5,000 digits, which
    Python will not turn into an int; text that is not JSON) was a bare error out of the relay:
    the stream dropped mid-body and the call was charged its whole bound as interrupted. It is
    passed on as it came, and the call settled from tokenward's own count."""
    import base64
    import json

    from tokenward.guard.wire.eventstream import event_message

    def chunk(text: str) -> bytes:
        return event_message(
            "chunk", json.dumps({"bytes": base64.b64encode(text.encode()).decode()}).encode()
        )

    events = [
        {"type": "message_start", "message": {"id": "m1", "type": "message", "role": "assistant", "model": MODEL,
                                              "content": [], "usage": {"input_tokens": 6, "output_tokens": 0}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hello hello"}},
        {"type": "content_block_stop", "index": 0},
    ]  # fmt: skip
    body = b"".join(chunk(json.dumps(e)) for e in events)
    body += chunk(
        '{"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": '
    )
    undecodable = chunk('{"type": "message_delta", "usage": {"output_tokens": ' + "9" * 5000 + "}}")
    body += undecodable
    body += chunk(json.dumps({"type": "message_stop"}))
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, headers={"content-type": "application/vnd.amazon.eventstream"}, content=body
        )
    )
    gateway = bedrock_gateway(transports={"bedrock": transport})
    # read raw: a client decoding the events fails on the undecodable one, as it would from Bedrock
    with httpx.stream(
        "POST",
        f"{gateway.url}/model/{MODEL}/invoke-with-response-stream",
        headers={"authorization": f"Bearer {KEY}"},
        json={
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "Say hello"}],
        },
        timeout=30,
    ) as answer:
        relayed = b"".join(answer.iter_bytes())
    assert answer.status_code == 200
    assert undecodable in relayed  # passed on as it came
    assert relayed.endswith(chunk(json.dumps({"type": "message_stop"}, separators=(",", ":"))))
    [event] = gateway.observer().events()
    assert event.status == "ok" and event.usage.output_tokens == 2
