"""Google Vertex AI through the gateway: ``google.genai.Client(vertexai=True)`` and
``anthropic.AnthropicVertex`` in front, the fake provider speaking Vertex's publisher-model paths
behind, the gateway's Google access token coming from application-default credentials (a
service-account key file, made for the test, whose ``token_uri`` is the fake's OAuth endpoint,
which checks the JWT's signature against the account's public key).

Expected figures: the fake's documented counts (replies are ``hello`` repeated, k words = k
tokens; Anthropic prompts count ``\\w+|[^\\w\\s]`` pieces plus 4 per message); prices from
Google's published Vertex rates as genai-prices holds them (gemini-2.5-flash $0.30 / $2.50, Claude
Sonnet 4.5 $3 / $15 per 1M tokens), Claude on a regional endpoint times 1.1 (Anthropic's
Claude-on-Vertex page).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import google.oauth2.credentials
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google import genai
from google.genai import types

from tests.clouds.conftest import service_account
from tests.support.fixtures import KEY, Gateway
from tests.support.servers import ThreadedServer
from tokenward.gateway import GatewayConfig, create_app
from tokenward.gateway.relay import GatewayState

MESSAGES = [{"role": "user", "content": "Say hello"}]
CLAUDE = "claude-sonnet-4-5@20250929"
HELLO_20 = " ".join(["hello"] * 20)


@pytest.fixture
def vertex_gateway(tmp_path: Path, vertex_fake: ThreadedServer) -> Iterator[Any]:
    running: list[ThreadedServer] = []

    def start(budgets: list[dict[str, Any]] | None = None, **upstream: Any) -> Gateway:
        ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
        entry = {
            "name": "vertex",
            "provider": "vertex",
            "base_url": vertex_fake.url,
            "project": "proj",
            "location": "us-east5",
            "models": ["gemini-*", "claude-*"],
            **upstream,
        }
        config = GatewayConfig.from_mapping(
            {
                "ledger": ledger_url,
                "upstreams": [entry],
                "keys": [{"key": KEY, "name": "test-key", "user": "alice"}],
                "budgets": budgets or [],
            }
        )
        states: list[GatewayState] = []
        server = ThreadedServer(create_app(config, on_ready=states.append))
        server.start()
        running.append(server)
        return Gateway(server, states[0], ledger_url)

    yield start
    for server in running:
        server.stop()


def received(fake: ThreadedServer) -> list[dict[str, Any]]:
    return [r for r in httpx.get(f"{fake.url}/_fake/requests").json() if not r["path"].startswith("/_fake")]


def claude(gateway: Gateway) -> anthropic.AnthropicVertex:
    return anthropic.AnthropicVertex(
        region="us-east5", project_id="proj", access_token=KEY, base_url=f"{gateway.url}/v1", max_retries=0
    )


def gemini_cost(prompt: int, output: int) -> Decimal:
    return (prompt * Decimal("0.30") + output * Decimal("2.50")) / 10**6


def test_google_genai_express_mode_key_and_adc_upstream(vertex_gateway, vertex_fake) -> None:
    gateway = vertex_gateway()
    client = genai.Client(vertexai=True, api_key=KEY, http_options=types.HttpOptions(base_url=gateway.url))
    reply = client.models.generate_content(model="gemini-2.5-flash", contents="Say hello")
    assert reply.text == HELLO_20
    [event] = gateway.observer().events()
    prompt = reply.usage_metadata.prompt_token_count
    assert (event.model, event.provider, event.usage.output_tokens) == ("gemini-2.5-flash", "google", 20)
    assert event.cost_usd == gemini_cost(prompt, 20) and not event.cost_estimated
    [sent] = received(vertex_fake)
    # read from Vertex as a stream, to be stopped at its hold (bound_non_streamed: stream)
    assert (
        sent["path"]
        == "/v1/projects/proj/locations/us-east5/publishers/google/models/gemini-2.5-flash:streamGenerateContent"
    )
    assert "x-goog-api-key" not in sent["headers"]  # the fake checked the ADC bearer token


def test_google_genai_project_mode_stream(vertex_gateway, vertex_fake) -> None:
    gateway = vertex_gateway()
    token = google.oauth2.credentials.Credentials(token=KEY)  # the tokenward key as the bearer token
    client = genai.Client(
        vertexai=True, project="proj", location="us-east5", credentials=token,
        http_options=types.HttpOptions(base_url=gateway.url),
    )  # fmt: skip
    text = "".join(
        c.text or ""
        for c in client.models.generate_content_stream(model="gemini-2.5-flash", contents="Say hello")
    )
    assert text == HELLO_20
    [event] = gateway.observer().events()
    assert event.usage.output_tokens == 20 and event.status == "ok"
    assert received(vertex_fake)[0]["path"].endswith("/gemini-2.5-flash:streamGenerateContent")


def test_anthropic_vertex_regional_uplift(vertex_gateway, vertex_fake) -> None:
    gateway = vertex_gateway()
    message = claude(gateway).messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)
    assert message.content[0].text == HELLO_20
    [event] = gateway.observer().events()
    assert (event.usage.input_tokens, event.usage.output_tokens) == (6, 20)
    assert event.cost_usd == (6 * Decimal(3) + 20 * Decimal(15)) * Decimal("1.1") / 10**6
    [sent] = received(vertex_fake)
    assert sent["path"].endswith(f"/publishers/anthropic/models/{CLAUDE}:streamRawPredict")  # bounded
    assert "model" not in sent["body"] and sent["body"]["anthropic_version"]


def test_anthropic_vertex_global_has_no_uplift_and_streams_are_cut(vertex_gateway) -> None:
    gateway = vertex_gateway(location="global")
    with claude(gateway).messages.stream(
        model=CLAUDE,
        max_tokens=12,
        messages=MESSAGES,
        extra_body={"fake": {"ignore_max_tokens": True, "reply_tokens": 200}},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == " ".join(["hello"] * 12) and final.stop_reason == "max_tokens"
    [event] = gateway.observer().events()
    assert event.status == "cut_off"
    assert (
        event.cost_usd
        == (event.usage.input_tokens * Decimal(3) + event.usage.output_tokens * Decimal(15)) / 10**6
    )


def test_denied_before_vertex_is_called(vertex_gateway, vertex_fake) -> None:
    budget = {"name": "tiny", "scope": "user", "id": "alice", "meter": "total_tokens", "limit": 5}
    gateway = vertex_gateway(budgets=[budget])
    with pytest.raises(anthropic.APIStatusError) as denied:
        claude(gateway).messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)
    assert denied.value.status_code == 402
    assert received(vertex_fake) == []


def test_no_google_token_means_nothing_is_sent(vertex_gateway, vertex_fake, tmp_path, monkeypatch) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )  # a key the service account does not have: the fake refuses its signature
    bad = service_account(tmp_path / "bad.json", f"{vertex_fake.url}/_fake/google/token", other.decode())
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(bad))
    gateway = vertex_gateway()
    with pytest.raises(anthropic.APIStatusError) as failed:
        claude(gateway).messages.create(model=CLAUDE, max_tokens=64, messages=MESSAGES)
    assert failed.value.status_code == 502
    assert received(vertex_fake) == []
