"""Issue 15 item 15: the gateway says at start when an upstream's provider key is missing, and a
502 names the upstream (every upstream tried) that failed."""

from __future__ import annotations

import logging

import httpx
import openai
import pytest

from tests.support.fixtures import KEY
from tests.support.servers import free_port, serving
from tokenward.gateway import GatewayConfig, create_app

MESSAGES = [{"role": "user", "content": "Say hello"}]


def _config(*upstreams: dict[str, object]) -> GatewayConfig:
    return GatewayConfig.from_mapping(
        {
            "ledger": "memory://",
            "upstreams": list(upstreams),
            "keys": [{"key": KEY, "name": "k", "user": "alice"}],
        }
    )


def test_an_unset_api_key_env_is_a_warning_at_start(
    fake, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TW_TEST_UNSET_KEY", raising=False)
    config = _config(
        {
            "name": "keyless",
            "provider": "openai-compatible",
            "base_url": f"{fake.url}/v1",
            "api_key_env": "TW_TEST_UNSET_KEY",
        },
        {"name": "hosted", "provider": "anthropic", "models": ["claude-*"]},
        {
            "name": "local",
            "provider": "openai-compatible",
            "base_url": "http://127.0.0.1:9/v1",
            "models": ["llama"],
        },
    )
    with caplog.at_level(logging.WARNING, logger="tokenward.gateway"), serving(create_app(config)):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'keyless'" in w and "TW_TEST_UNSET_KEY" in w and "not set" in w for w in warnings), warnings
    assert any("'hosted' (anthropic) has no api_key_env" in w for w in warnings), warnings
    assert not any("'local'" in w for w in warnings)  # a local server may need no key


def test_a_502_names_every_upstream_that_failed() -> None:
    dead = [free_port(), free_port()]
    config = _config(
        {"name": "primary", "provider": "openai-compatible", "base_url": f"http://127.0.0.1:{dead[0]}/v1"},
        {"name": "backup", "provider": "openai-compatible", "base_url": f"http://127.0.0.1:{dead[1]}/v1"},
    )
    with serving(create_app(config)) as gateway:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)
        assert failed.value.status_code == 502
        message = failed.value.response.json()["error"]["message"]
        assert (
            message
            == "every upstream tried failed: 'primary' failed: ConnectError; 'backup' failed: ConnectError"
        )
        assert failed.value.response.headers["x-tokenward-upstream"] == "backup"
        models = httpx.get(f"{gateway.url}/v1/models", headers={"authorization": f"Bearer {KEY}"})
        assert models.status_code == 502
        assert models.json()["error"]["message"] == "upstream 'primary' failed: ConnectError"


def test_an_upstream_error_status_is_passed_through_with_the_upstreams_name(fake) -> None:
    config = _config(
        {"name": "flaky", "provider": "fake", "base_url": fake.url, "api_key_env": "FAKE_UPSTREAM_KEY"}
    )
    with serving(create_app(config)) as gateway:
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES, "fake": {"status": 503}},
            headers={"authorization": f"Bearer {KEY}"},
        )
    assert response.status_code == 503
    assert response.headers["x-tokenward-upstream"] == "flaky"
