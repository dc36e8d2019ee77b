"""Azure OpenAI through the gateway: the official ``openai.AzureOpenAI`` client in front, the
fake provider speaking Azure's URL layouts and authentication behind.

Expected figures: the fake's documented counts (replies are ``hello`` repeated, k words = k
tokens; prompts count ``\\w+|[^\\w\\s]`` pieces plus 4 per message); prices from OpenAI's
published gpt-4o-mini rates ($0.15 / $0.60 per 1M tokens), which genai-prices' Azure table falls
back on (it has no Azure gpt-4o-mini row), times the deployment's configured multiplier.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.fixtures import KEY, UPSTREAM_KEY, Gateway
from tests.support.servers import ThreadedServer, serving
from tokenward.fake import FakeSettings
from tokenward.fake import create_app as create_fake
from tokenward.gateway import GatewayConfig, create_app
from tokenward.gateway.relay import GatewayState

API_VERSION = "2024-10-21"
MESSAGES = [{"role": "user", "content": "Say hello"}]
FAKE_PROMPT = 2 + 4
HELLO_20 = " ".join(["hello"] * 20)
IDENTITY_SECRET = "fake-identity-header-secret"
MINI_IN, MINI_OUT = Decimal("0.15"), Decimal("0.60")


@pytest.fixture
def azure_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadedServer]:
    monkeypatch.setenv("AZURE_UPSTREAM_KEY", UPSTREAM_KEY)
    settings = FakeSettings(reply_tokens=20, api_key=UPSTREAM_KEY, azure_identity_secret=IDENTITY_SECRET)
    with serving(create_fake(settings)) as server:
        # azure-identity's managed-identity credential reads these (App Service's layout)
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{server.url}/_fake/azure/identity")
        monkeypatch.setenv("IDENTITY_HEADER", IDENTITY_SECRET)
        for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "MSI_ENDPOINT"):
            monkeypatch.delenv(name, raising=False)
        yield server


@pytest.fixture
def azure_gateway(tmp_path: Path, azure_fake: ThreadedServer) -> Iterator[Any]:
    running: list[ThreadedServer] = []

    def start(budgets: list[dict[str, Any]] | None = None, **upstream: Any) -> Gateway:
        ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
        entry = {
            "name": "azure",
            "provider": "azure",
            "base_url": azure_fake.url,
            "api_key_env": "AZURE_UPSTREAM_KEY",
            "api_version": API_VERSION,
            "deployments": {
                "mini-prod": "gpt-4o-mini",
                "mini-eu": {"model": "gpt-4o-mini", "price_multiplier": 1.2},
            },
            **upstream,
        }
        config = GatewayConfig.from_mapping(
            {
                "ledger": ledger_url,
                "upstreams": [entry],
                "keys": [{"key": KEY, "name": "test-key", "user": "alice"}],
                "budgets": budgets or [],
                "defaults": {"service_tier": "default"},
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


def azure_client(gateway: Gateway, **headers: str) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=gateway.url,
        api_key=KEY,
        api_version=API_VERSION,
        default_headers=headers,
        max_retries=0,
    )


def received(fake: ThreadedServer) -> list[dict[str, Any]]:
    return httpx.get(f"{fake.url}/_fake/requests").json()


def events(gateway: Gateway) -> list[Any]:
    return gateway.observer().events()


def test_deployment_chat_is_priced_as_its_model(azure_gateway, azure_fake) -> None:
    gateway = azure_gateway()
    reply = azure_client(gateway).chat.completions.create(model="mini-prod", messages=MESSAGES)
    assert reply.choices[0].message.content == HELLO_20
    [event] = events(gateway)
    assert (event.model, event.provider, event.metadata["deployment"]) == (
        "gpt-4o-mini",
        "azure",
        "mini-prod",
    )
    assert (event.usage.input_tokens, event.usage.output_tokens) == (FAKE_PROMPT, 20)
    # no Azure row of its own: the OpenAI row, marked estimated (multiplier 1)
    assert event.cost_usd == (FAKE_PROMPT * MINI_IN + 20 * MINI_OUT) / 10**6
    assert event.cost_estimated
    [sent] = received(azure_fake)
    assert sent["path"] == "/openai/deployments/mini-prod/chat/completions"
    assert sent["headers"]["api-key"] == "<redacted>"  # the fake checked it is the upstream key


def test_regional_multiplier_and_v1_surface_with_entra_token(azure_gateway, azure_fake) -> None:
    gateway = azure_gateway(api_version=None, auth="entra", api_key_env=None)
    client = openai.OpenAI(base_url=f"{gateway.url}/openai/v1", api_key=KEY, max_retries=0)
    reply = client.chat.completions.create(model="mini-eu", messages=MESSAGES)
    assert reply.choices[0].message.content == HELLO_20
    [event] = events(gateway)
    assert event.cost_usd == (FAKE_PROMPT * MINI_IN + 20 * MINI_OUT) * Decimal("1.2") / 10**6
    assert event.cost_estimated and event.provider == "azure:azure/mini-eu"
    sent = received(azure_fake)
    assert [r["path"] for r in sent] == ["/_fake/azure/identity", "/openai/v1/chat/completions"]
    assert sent[1]["body"]["model"] == "mini-eu"  # the v1 surface names the deployment in the body
    assert sent[1]["headers"]["authorization"] == "<redacted>" and "api-key" not in sent[1]["headers"]


def test_entra_token_refused_without_the_identity(azure_gateway, azure_fake, monkeypatch) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "wrong-secret")
    gateway = azure_gateway(auth="entra", api_key_env=None)
    with pytest.raises(openai.APIStatusError) as failed:
        azure_client(gateway).chat.completions.create(model="mini-prod", messages=MESSAGES)
    assert failed.value.status_code == 502
    [event] = events(gateway)
    assert event.status == "upstream_error" and event.cost_usd == 0
    assert all(r["path"] == "/_fake/azure/identity" for r in received(azure_fake))  # never sent unsigned


def test_stream_cut_off_at_the_hold(azure_gateway) -> None:
    gateway = azure_gateway()
    stream = azure_client(gateway).chat.completions.create(
        model="mini-prod",
        messages=MESSAGES,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"fake": {"ignore_max_tokens": True, "reply_tokens": 200, "chunk_tokens": 5}},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " ".join(["hello"] * 12)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "length"
    ]
    [event] = events(gateway)
    assert event.status == "cut_off" and event.usage.output_tokens == 15  # 3 chunks of 5 arrived


def test_denied_before_the_upstream_is_called(azure_gateway, azure_fake) -> None:
    budget = {"name": "tiny", "scope": "user", "id": "alice", "meter": "total_tokens", "limit": 5}
    gateway = azure_gateway(budgets=[budget])
    with pytest.raises(openai.APIStatusError) as denied:
        azure_client(gateway).chat.completions.create(model="mini-prod", messages=MESSAGES)
    assert denied.value.status_code == 402 and denied.value.body["code"] == "budget_exceeded"
    assert received(azure_fake) == []


def test_content_filtered_prompt_is_charged(azure_gateway) -> None:
    """Azure charges a prompt its filter refused (400 content_filter) for prompt and completion."""
    gateway = azure_gateway()
    client = azure_client(gateway, **{"x-fake-azure-content-filter": "prompt"})
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="mini-prod", messages=MESSAGES, max_tokens=30)
    assert refused.value.body["code"] == "content_filter"
    [event] = events(gateway)
    assert event.metadata["content_filter"] == "prompt" and event.metadata["cost_basis"] == "held_output"
    our_estimate = 3 + 1 + 2 + 3  # OpenAI chat framing + "user" + "Say hello" + reply priming
    assert (event.usage.input_tokens, event.usage.output_tokens) == (our_estimate, 30)
    assert event.cost_usd == (our_estimate * MINI_IN + 30 * MINI_OUT) / 10**6


def test_responses_and_embeddings_on_the_deployments_surface(azure_gateway, azure_fake) -> None:
    gateway = azure_gateway()
    client = azure_client(gateway)
    response = client.responses.create(model="mini-prod", input="Say hello", max_output_tokens=16)
    assert response.output_text == " ".join(["hello"] * 16)
    client.embeddings.create(model="mini-prod", input="Say hello")
    paths = [r["path"] for r in received(azure_fake)]
    assert paths == ["/openai/responses", "/openai/deployments/mini-prod/embeddings"]
    answered, embedded = events(gateway)
    assert answered.endpoint == "openai-responses" and answered.usage.output_tokens == 16
    assert embedded.model == "gpt-4o-mini" and embedded.usage.output_tokens == 0


def test_a_deployment_is_estimated_with_its_models_tokenizer(azure_gateway, caplog) -> None:
    """The deployment name is mapped to its model before the first estimate: no "no tokenizer
    known for model 'mini-prod'" warning (gpt-4o-mini's tokenizer is tiktoken's o200k_base)."""
    from tokenward.core.tokenizers import encoding_for_model

    gateway = azure_gateway()
    encoding_for_model.cache_clear()  # it warns once per model id: a name seen before would not
    with caplog.at_level("WARNING"):
        reply = azure_client(gateway).chat.completions.create(model="mini-eu", messages=MESSAGES)
        with azure_client(gateway).chat.completions.create(
            model="mini-prod", messages=MESSAGES, stream=True
        ) as stream:
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == HELLO_20
    assert reply.choices[0].message.content == HELLO_20
    assert not [r for r in caplog.records if "no tokenizer known" in r.getMessage()]
    assert [e.model for e in events(gateway)] == ["gpt-4o-mini"] * 2
