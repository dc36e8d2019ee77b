"""Non-streamed calls read as streams (``bound_non_streamed: stream``, the default): the client
gets the JSON the provider would have sent, and, when the hold cut the answer, the JSON of a
length-limited one, on every dialect. The provider's own JSON (the fake asked directly, without
streaming) is the reference; the official clients read the answers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.fixtures import KEY
from tests.support.referee import AUTH, Referee, referee
from tokenward.fake.transport import FakeTransport

HELLO = [{"role": "user", "content": "Say hello"}]
TOOLS = [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}]
VOLATILE = {"id", "created", "created_at", "responseId"}


def words(n: int) -> str:
    return " ".join(["hello"] * n)


def _direct(ref: Referee, path: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """The fake's own non-streamed answer to ``body`` (the bound the gateway would send set)."""

    async def call() -> dict[str, Any]:
        async with httpx.AsyncClient(transport=FakeTransport(ref.fake), base_url="http://fake") as client:
            answer = await client.post(path, json=body, headers=headers)
            return dict(answer.json())

    import asyncio

    return asyncio.run(call())


def _stable(answer: dict[str, Any]) -> Any:
    """The answer without its instant and ids (the fake numbers its answers: the gateway's call
    was its first, the direct one its second)."""
    text = json.dumps({k: v for k, v in answer.items() if k not in VOLATILE}, sort_keys=True)
    return json.loads(re.sub(r"_fake_\d{6}", "_fake_N", text))


CALLS = [
    pytest.param(
        "/v1/chat/completions",
        {
            "model": "gpt-4o-mini",
            "messages": HELLO,
            "max_completion_tokens": 64,
            "fake": {"reasoning_tokens": 3},
        },
        id="chat",
    ),
    pytest.param(
        "/v1/chat/completions",
        {
            "model": "gpt-4o-mini",
            "messages": HELLO,
            "max_completion_tokens": 64,
            "tools": TOOLS,
            "fake": {"tool_call": {"name": "get_time", "arguments": {"tz": "UTC", "city": "Paris"}}},
        },
        id="chat-tool-call",
    ),
    pytest.param(
        "/v1/completions",
        {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hello", "max_tokens": 64},
        id="completions",
    ),
    pytest.param(
        "/v1/responses",
        {
            "model": "gpt-4o-mini",
            "input": "Say hello",
            "max_output_tokens": 64,
            "fake": {"reasoning_tokens": 2},
        },
        id="responses",
    ),
    pytest.param(
        "/v1/responses",
        {
            "model": "gpt-4o-mini",
            "input": "Say hello",
            "max_output_tokens": 64,
            "tools": [{"type": "function", "name": "get_time", "parameters": {"type": "object"}}],
            "fake": {"tool_call": {"name": "get_time", "arguments": {"tz": "UTC"}}},
        },
        id="responses-tool-call",
    ),
    pytest.param(
        "/v1/messages",
        {"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": HELLO, "fake": {"cache_read_tokens": 2}},
        id="messages",
    ),
    pytest.param(
        "/v1/messages",
        {
            "model": "claude-sonnet-4-6",
            "max_tokens": 64,
            "messages": HELLO,
            "tools": [{"name": "get_time", "input_schema": {"type": "object"}}],
            "fake": {"tool_call": {"name": "get_time", "arguments": {"tz": "UTC"}}},
        },
        id="messages-tool-use",
    ),
    pytest.param(
        "/v1beta/models/gemini-2.5-flash:generateContent",
        {
            "contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
            "generationConfig": {"maxOutputTokens": 64},
            "fake": {"reasoning_tokens": 4},
        },
        id="gemini",
    ),
]


@pytest.mark.parametrize(("path", "body"), CALLS)
def test_an_answer_that_fits_its_hold_is_the_providers_own_json(
    tmp_path: Path, path: str, body: dict[str, Any]
) -> None:
    headers = {"x-goog-api-key": KEY} if path.startswith("/v1beta") else AUTH
    with referee(tmp_path) as ref:
        through = httpx.post(f"{ref.url}{path}", json=body, headers=headers, timeout=30)
        assert through.status_code == 200 and through.headers["content-type"] == "application/json"
        (event,) = ref.events()
        assert event.metadata["bounded"] == "stream" and event.status == "ok" and not event.disputed
        direct = _direct(ref, path, body, headers)
    assert _stable(through.json()) == _stable(direct)


def test_openai_clients_read_cut_answers_as_length_limited(tmp_path: Path) -> None:
    ignoring = {"fake": {"ignore_max_tokens": True, "reply_tokens": 500}}
    with referee(tmp_path) as ref:
        client = openai.OpenAI(api_key=KEY, base_url=f"{ref.url}/v1", max_retries=0)
        response = client.responses.create(
            model="gpt-4o-mini", input="Say hello", max_output_tokens=16, extra_body=ignoring
        )
        assert response.status == "incomplete"
        assert (
            response.incomplete_details is not None
            and response.incomplete_details.reason == "max_output_tokens"
        )
        assert response.output_text == words(16)
        assert response.usage is not None and response.usage.output_tokens == 16
        completion = client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Say hello", max_tokens=7, extra_body=ignoring
        )
        assert completion.choices[0].finish_reason == "length" and completion.choices[0].text == words(7)
        assert completion.usage is not None and completion.usage.completion_tokens == 7
        chat = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=HELLO,
            max_tokens=5,
            tools=TOOLS,  # type: ignore[arg-type]
            extra_body={
                "fake": {
                    "ignore_max_tokens": True,
                    "tool_call": {"name": "get_time", "arguments": {"tz": "UTC"}},
                }
            },
        )
        (call,) = chat.choices[0].message.tool_calls or []
        assert chat.choices[0].finish_reason == "length"
        # "get_time" is 2 o200k tokens ("get", "_time"), the first arguments chunk '{"tz":' 3 more
        # ('{"', "tz", '":'): the bound of 5 is reached, and the next chunk '"UTC"}' is held back
        assert call.function.name == "get_time" and call.function.arguments == '{"tz":'
        assert all(e.status == "cut_off" for e in ref.events())


def test_anthropic_client_reads_a_cut_answer_as_max_tokens(tmp_path: Path) -> None:
    with referee(tmp_path) as ref:
        client = anthropic.Anthropic(api_key=KEY, base_url=ref.url, max_retries=0)
        message = client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=9,
            messages=HELLO,
            extra_body={"fake": {"ignore_max_tokens": True, "reply_tokens": 500}},
        )
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text == words(9)  # type: ignore[union-attr]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (6, 9)  # the fake's prompt count


def test_google_genai_reads_a_cut_answer_as_max_tokens(tmp_path: Path) -> None:
    genai = pytest.importorskip("google.genai")
    types = pytest.importorskip("google.genai.types")
    with referee(tmp_path) as ref:
        client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=ref.url))
        config = types.GenerateContentConfig(max_output_tokens=11)
        response = client.models.generate_content(
            model="gemini-2.5-flash",
            contents="Say hello",
            config={
                **config.model_dump(exclude_none=True),
                "http_options": {"extra_body": {"fake": {"ignore_max_tokens": True, "reply_tokens": 300}}},
            },
        )
        (event,) = ref.events()
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert response.text == words(11)
    assert response.usage_metadata.candidates_token_count == 11
    # the chunk of words 11-15 crossed the bound: 4 arrived past it; Gemini's tokenizer is not
    # ours, so they floor the charge at floor(15 x 0.6) = 9, below the 11 relayed: 11 are charged
    assert event.status == "cut_off" and event.metadata["received_beyond_cut_tokens"] == 4
    assert event.charged["output_tokens"] == 11


def test_bound_non_streamed_is_stream_unless_set_and_a_bad_value_names_the_choices() -> None:
    from tokenward.errors import ConfigError
    from tokenward.gateway import GatewayConfig

    def config(**upstream: Any) -> GatewayConfig:
        entry = {"name": "fake", "provider": "fake", **upstream}
        return GatewayConfig.from_mapping({"upstreams": [entry], "keys": [{"key": "k"}]})

    assert config().upstreams[0].bound_non_streamed == "stream"
    assert config(bound_non_streamed="trust").upstreams[0].bound_non_streamed == "trust"
    with pytest.raises(ConfigError, match=r"upstreams\[0\]\.bound_non_streamed must be one of stream, trust"):
        config(bound_non_streamed="yes")


def test_embeddings_keep_the_plain_json_path(tmp_path: Path) -> None:
    """No output to stop: an embeddings call is forwarded as it is, its hold its whole price."""
    with referee(tmp_path) as ref:
        body = {"model": "text-embedding-3-small", "input": "Say hello"}
        answer = httpx.post(f"{ref.url}/v1/embeddings", json=body, headers=AUTH, timeout=30)
        assert answer.status_code == 200 and answer.json()["object"] == "list"
        (event,) = ref.events()
        assert "bounded" not in event.metadata and event.usage.output_tokens == 0
