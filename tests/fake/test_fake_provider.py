"""The fake provider, driven by the official ``openai`` and ``anthropic`` SDKs and by raw HTTP.

Expected numbers are worked out by hand from the documented rules, never by calling the fake's
own helpers:

* reply of k tokens: ``"hello"`` then k - 1 times ``" hello"``;
* prompt count: pieces of ``\\w+|[^\\w\\s]`` over the request's text, plus 4 per message. So
  ``"Hello, world!"`` is Hello , world ! = 4 pieces + 4 = 8, and the system prompt ``"Be nice."``
  is Be nice . = 3 (the system prompt is not a message).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from tests.fake.helpers import HELLO_WORLD, SYSTEM, TWENTY, running, sse, sse_json
from tokenward.core.tokenizers import encoding
from tokenward.errors import ConfigError
from tokenward.fake import FakeSettings, FakeStreamCut, create_app, reply_text
from tokenward.fake.streaming import QuietStreamCuts


def chat(raw: httpx.Client, **body: Any) -> httpx.Response:
    return raw.post("/v1/chat/completions", json={"model": "gpt-test", "messages": HELLO_WORLD, **body})


def messages(raw: httpx.Client, **body: Any) -> httpx.Response:
    payload = {"model": "claude-test", "max_tokens": 100, "messages": HELLO_WORLD, **body}
    return raw.post("/v1/messages", json=payload)


# ---------------------------------------------------------------- reply text


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
@pytest.mark.parametrize("k", [1, 2, 7, 20, 333])
def test_reply_text_is_k_tokens_in_real_encodings(name: str, k: int) -> None:
    assert reply_text(k) == "hello" + " hello" * (k - 1)
    assert len(encoding(name).encode(reply_text(k))) == k


def test_reply_text_of_zero_tokens_is_empty() -> None:
    assert reply_text(0) == ""


# ---------------------------------------------------------------- OpenAI


def test_openai_reply_and_usage(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="gpt-test", messages=HELLO_WORLD)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-test"
    assert completion.id
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == TWENTY
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (8, 20, 28)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 0
    assert (
        usage.completion_tokens_details is not None and usage.completion_tokens_details.reasoning_tokens == 0
    )


def test_openai_stream_has_no_usage_without_include_usage(oai: openai.OpenAI, raw: httpx.Client) -> None:
    chunks = list(oai.chat.completions.create(model="gpt-test", messages=HELLO_WORLD, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(chunk.object == "chat.completion.chunk" and chunk.model == "gpt-test" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    text = [chunk.choices[0].delta.content for chunk in chunks[1:-1]]
    assert text == ["hello hello hello hello hello"] + [" hello hello hello hello hello"] * 3
    assert chunks[-1].choices[0].delta.content is None
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)

    body = chat(raw, stream=True).text
    assert body.endswith("data: [DONE]\n\n")
    assert all("usage" not in chunk for chunk in sse_json(body))


def test_openai_stream_usage_chunk_with_include_usage(oai: openai.OpenAI, raw: httpx.Client) -> None:
    stream = oai.chat.completions.create(
        model="gpt-test", messages=HELLO_WORLD, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices) == TWENTY
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (8, 20, 28)
    assert chunks[-2].choices[0].finish_reason == "stop"

    decoded = sse_json(chat(raw, stream=True, stream_options={"include_usage": True}).text)
    assert [chunk["usage"] for chunk in decoded[:-1]] == [None] * (
        len(decoded) - 1
    )  # OpenAI: null until the end
    assert decoded[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}


def test_openai_max_tokens_truncates(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="gpt-test", messages=HELLO_WORLD, max_tokens=7)
    assert completion.choices[0].message.content == "hello" + " hello" * 6
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 7


def test_openai_max_completion_tokens_wins_over_max_tokens(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="gpt-test", messages=HELLO_WORLD, max_completion_tokens=3, max_tokens=10
    )
    assert completion.choices[0].message.content == "hello hello hello"
    assert completion.choices[0].finish_reason == "length"


def test_openai_bound_equal_to_reply_is_not_truncated(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model="gpt-test", messages=HELLO_WORLD, max_tokens=20)
    assert completion.choices[0].finish_reason == "stop"


def test_openai_max_tokens_zero_means_no_bound(raw: httpx.Client) -> None:
    body = chat(raw, max_tokens=0).json()
    assert body["choices"][0]["message"]["content"] == TWENTY
    assert body["choices"][0]["finish_reason"] == "stop"


def test_openai_streamed_truncation(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(model="gpt-test", messages=HELLO_WORLD, max_tokens=7, stream=True)
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "hello" + " hello" * 6
    assert chunks[-1].choices[0].finish_reason == "length"


def test_openai_prompt_count_covers_parts_tool_calls_and_tools(raw: httpx.Client) -> None:
    tool = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    conversation = [
        # What ' s up ? = 5, + 4 = 9
        {
            "role": "user",
            "content": [{"type": "text", "text": "What's up?"}, {"type": "image_url", "image_url": {}}],
        },
        # get_time = 1; {"tz": "UTC"} = { " tz " : " UTC " } = 9; + 4 = 14
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"tz": "UTC"}'},
                }
            ],
        },
        # 12 : 00 = 3, + 4 = 7
        {"role": "tool", "tool_call_id": "c1", "content": "12:00"},
    ]
    # {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}:
    # braces 3+3, quotes 2 per string x 8 strings = 16, words 8, colons 5, commas 2 -> 37
    body = raw.post(
        "/v1/chat/completions", json={"model": "m", "messages": conversation, "tools": [tool]}
    ).json()
    assert body["usage"]["prompt_tokens"] == 9 + 14 + 7 + 37


def test_openai_async_sdk_over_asgi_transport() -> None:
    asyncio.run(_openai_async())


async def _openai_async() -> None:
    app = create_app()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as http:
        # openai 3.x is typed for httpx2 clients but accepts a legacy httpx one
        client = openai.AsyncOpenAI(
            api_key="k",
            base_url="http://fake/v1",
            http_client=http,  # type: ignore[arg-type]
            max_retries=0,
        )
        completion = await client.chat.completions.create(model="m", messages=HELLO_WORLD, max_tokens=2)
        assert completion.choices[0].message.content == "hello hello"
        stream = await client.chat.completions.create(
            model="m", messages=HELLO_WORLD, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 20


# ---------------------------------------------------------------- Anthropic


def test_anthropic_reply_and_usage(ant: anthropic.Anthropic) -> None:
    message = ant.messages.create(model="claude-test", max_tokens=100, system=SYSTEM, messages=HELLO_WORLD)
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "claude-test"
    assert message.content[0].type == "text"
    assert message.content[0].text == TWENTY
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 3 + 8
    assert message.usage.output_tokens == 20
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0


def test_anthropic_max_tokens_truncates(ant: anthropic.Anthropic) -> None:
    message = ant.messages.create(model="claude-test", max_tokens=5, messages=HELLO_WORLD)
    assert message.content[0].type == "text"
    assert message.content[0].text == "hello hello hello hello hello"
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 5


def test_anthropic_stream_with_sdk_helper(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(
        model="claude-test", max_tokens=100, system=SYSTEM, messages=HELLO_WORLD
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == TWENTY
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 20)


def test_anthropic_stream_event_sequence(raw: httpx.Client) -> None:
    response = messages(raw, stream=True, max_tokens=12, system=SYSTEM)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [json.loads(data) for _, data in events]
    assert [payload["type"] for payload in payloads] == names
    start = payloads[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["model"] == "claude-test"
    assert start["usage"]["input_tokens"] == 11
    assert start["usage"]["cache_read_input_tokens"] == 0
    assert start["usage"]["cache_creation_input_tokens"] == 0
    assert start["usage"]["output_tokens"] == 1
    assert payloads[1]["content_block"] == {"type": "text", "text": ""}
    deltas = [payload["delta"] for payload in payloads[3:6]]
    assert all(delta["type"] == "text_delta" for delta in deltas)
    assert "".join(delta["text"] for delta in deltas) == "hello" + " hello" * 11
    assert payloads[7]["delta"]["stop_reason"] == "max_tokens"
    assert payloads[7]["usage"]["output_tokens"] == 12


def test_anthropic_raw_sdk_stream(ant: anthropic.Anthropic) -> None:
    events = list(ant.messages.create(model="claude-test", max_tokens=100, messages=HELLO_WORLD, stream=True))
    assert events[0].type == "message_start"
    assert events[-1].type == "message_stop"
    delta = events[-2]
    assert delta.type == "message_delta" and delta.usage.output_tokens == 20


def test_anthropic_prompt_count_covers_system_blocks_and_tools(raw: httpx.Client) -> None:
    tool = {"name": "get_time", "input_schema": {"type": "object"}}
    conversation = [
        # Hi ! = 2, + 4 = 6
        {"role": "user", "content": [{"type": "text", "text": "Hi!"}, {"type": "image", "source": {}}]},
        # get_time = 1; {"tz": "UTC"} = 9; + 4 = 14
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "get_time", "input": {"tz": "UTC"}}],
        },
        # 12 : 00 = 3, + 4 = 7
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "12:00"}]},
    ]
    system = [{"type": "text", "text": "Be nice."}]  # 3
    # {"name": "get_time", "input_schema": {"type": "object"}}:
    # braces 2+2, quotes 2 x 5 strings = 10, words 5, colons 3, comma 1 -> 23
    response = messages(raw, messages=conversation, system=system, tools=[tool])
    assert response.json()["usage"]["input_tokens"] == 6 + 14 + 7 + 3 + 23


def test_anthropic_async_sdk_over_asgi_transport() -> None:
    asyncio.run(_anthropic_async())


async def _anthropic_async() -> None:
    app = create_app()
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://fake") as http:
        client = anthropic.AsyncAnthropic(
            api_key="k", base_url="http://fake", http_client=http, max_retries=0
        )
        message = await client.messages.create(model="c", max_tokens=3, messages=HELLO_WORLD)
        assert message.content[0].type == "text"
        assert message.content[0].text == "hello hello hello"
        assert message.stop_reason == "max_tokens"
        async with client.messages.stream(model="c", max_tokens=100, messages=HELLO_WORLD) as stream:
            final = await stream.get_final_message()
        assert final.usage.output_tokens == 20


# ---------------------------------------------------------------- options: shape of the reply


def test_reply_tokens_option_from_body_and_header(raw: httpx.Client) -> None:
    assert (
        chat(raw, fake={"reply_tokens": 3}).json()["choices"][0]["message"]["content"] == "hello hello hello"
    )
    response = raw.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": HELLO_WORLD},
        headers={"x-fake-options": json.dumps({"reply_tokens": 2})},
    )
    assert response.json()["choices"][0]["message"]["content"] == "hello hello"


def test_body_options_win_over_header_options_key_by_key(raw: httpx.Client) -> None:
    response = raw.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": HELLO_WORLD, "fake": {"reply_tokens": 1}},
        headers={"x-fake-options": json.dumps({"reply_tokens": 9, "usage": "zero"})},
    )
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "hello"
    assert body["usage"]["prompt_tokens"] == 0  # usage came from the header


def test_reply_tokens_zero(ant: anthropic.Anthropic) -> None:
    message = ant.messages.create(
        model="c", max_tokens=10, messages=HELLO_WORLD, extra_body={"fake": {"reply_tokens": 0}}
    )
    assert message.content[0].type == "text" and message.content[0].text == ""
    assert message.usage.output_tokens == 0


def test_chunk_tokens_option(oai: openai.OpenAI, raw: httpx.Client) -> None:
    stream = oai.chat.completions.create(
        model="m",
        messages=HELLO_WORLD,
        stream=True,
        extra_body={"fake": {"reply_tokens": 7, "chunk_tokens": 3}},
    )
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices[0].delta.content]
    assert pieces == ["hello hello hello", " hello hello hello", " hello"]
    events = sse_json(messages(raw, stream=True, fake={"reply_tokens": 4, "chunk_tokens": 1}).text)
    texts = [event["delta"]["text"] for event in events if event["type"] == "content_block_delta"]
    assert texts == ["hello", " hello", " hello", " hello"]


def test_fake_key_is_not_echoed(raw: httpx.Client) -> None:
    response = chat(raw, fake={"reply_tokens": 1})
    assert "fake" not in response.text.replace("chatcmpl-fake", "").replace("tokenward_fake", "")


# ---------------------------------------------------------------- options: timing


def test_latency_ms_delays_the_first_byte(url: str) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        started = time.perf_counter()
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "m", "messages": HELLO_WORLD, "stream": True, "fake": {"latency_ms": 300}},
        ) as response:
            assert response.status_code == 200
            first = time.perf_counter() - started
            response.read()
    assert first >= 0.3


def test_latency_ms_server_setting() -> None:
    with running(create_app(FakeSettings(latency_ms=250))) as base:
        client = openai.OpenAI(api_key="k", base_url=f"{base}/v1", max_retries=0)
        started = time.perf_counter()
        client.chat.completions.create(model="m", messages=HELLO_WORLD)
        assert time.perf_counter() - started >= 0.25


def test_chunk_delay_ms_spaces_the_events(url: str) -> None:
    arrivals = []
    with httpx.Client(base_url=url, timeout=10) as client:
        body = {"model": "m", "messages": HELLO_WORLD, "stream": True}
        body["fake"] = {"reply_tokens": 2, "chunk_tokens": 1, "chunk_delay_ms": 150}
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    arrivals.append(time.perf_counter())
    # role, hello, " hello", finish, [DONE]: five events, four gaps of 150 ms
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] >= 4 * 0.15 - 0.01


# ---------------------------------------------------------------- options: output bound and usage


def test_ignore_max_tokens(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    completion = oai.chat.completions.create(
        model="m", messages=HELLO_WORLD, max_tokens=5, extra_body={"fake": {"ignore_max_tokens": True}}
    )
    assert completion.choices[0].message.content == TWENTY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 20
    message = ant.messages.create(
        model="c", max_tokens=5, messages=HELLO_WORLD, extra_body={"fake": {"ignore_max_tokens": True}}
    )
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 20


def test_usage_omit(raw: httpx.Client) -> None:
    assert "usage" not in chat(raw, fake={"usage": "omit"}).json()
    stream = chat(raw, stream=True, stream_options={"include_usage": True}, fake={"usage": "omit"}).text
    decoded = sse_json(stream)
    assert all("usage" not in chunk and chunk["choices"] for chunk in decoded)
    assert stream.endswith("data: [DONE]\n\n")
    assert "usage" not in messages(raw, fake={"usage": "omit"}).json()
    events = sse_json(messages(raw, stream=True, fake={"usage": "omit"}).text)
    assert "usage" not in events[0]["message"]
    assert all("usage" not in event for event in events)


def test_usage_zero(raw: httpx.Client) -> None:
    usage = chat(raw, fake={"usage": "zero", "cache_read_tokens": 2, "reasoning_tokens": 3}).json()["usage"]
    assert usage == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    usage = messages(raw, fake={"usage": "zero"}).json()["usage"]
    assert usage["input_tokens"] == usage["output_tokens"] == usage["cache_read_input_tokens"] == 0
    events = sse_json(messages(raw, stream=True, fake={"usage": "zero"}).text)
    assert events[0]["message"]["usage"]["output_tokens"] == 0
    assert events[-2]["usage"] == {"output_tokens": 0}


def test_usage_under(raw: httpx.Client) -> None:
    # true: prompt 8 (3 cached), completion 20 + 5 reasoning = 25
    usage = chat(raw, fake={"usage": "under", "cache_read_tokens": 3, "reasoning_tokens": 5}).json()["usage"]
    assert usage == {
        "prompt_tokens": 4,
        "completion_tokens": 12,
        "total_tokens": 16,
        "prompt_tokens_details": {"cached_tokens": 1},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    # true: prompt 11 = 5 read + 6 fresh, output 21
    usage = messages(
        raw, system=SYSTEM, fake={"usage": "under", "cache_read_tokens": 5, "reply_tokens": 21}
    ).json()["usage"]
    assert (usage["input_tokens"], usage["cache_read_input_tokens"], usage["output_tokens"]) == (3, 2, 10)


def test_usage_null_prompt(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    completion = oai.chat.completions.create(
        model="m", messages=HELLO_WORLD, extra_body={"fake": {"usage": "null_prompt"}}
    )
    assert completion.usage is not None
    assert completion.usage.prompt_tokens is None
    assert completion.usage.completion_tokens == 20
    message = ant.messages.create(
        model="c", max_tokens=50, messages=HELLO_WORLD, extra_body={"fake": {"usage": "null_prompt"}}
    )
    assert message.usage.input_tokens is None
    assert message.usage.output_tokens == 20


def test_running_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="m", messages=HELLO_WORLD, stream=True, extra_body={"fake": {"running_usage": True}}
    )
    chunks = list(stream)
    assert len(chunks) == 6  # role, four text chunks, finish; no usage-only chunk without include_usage
    running = [chunk.usage.completion_tokens for chunk in chunks if chunk.usage is not None]
    assert running == [0, 5, 10, 15, 20, 20]
    assert all(chunk.usage is not None and chunk.usage.prompt_tokens == 8 for chunk in chunks)


def test_running_usage_with_include_usage_adds_the_final_chunk(raw: httpx.Client) -> None:
    body = chat(raw, stream=True, stream_options={"include_usage": True}, fake={"running_usage": True})
    decoded = sse_json(body.text)
    assert decoded[-1]["choices"] == [] and decoded[-1]["usage"]["total_tokens"] == 28
    assert [chunk["usage"]["completion_tokens"] for chunk in decoded] == [0, 5, 10, 15, 20, 20, 20]


def test_cache_read_tokens(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    completion = oai.chat.completions.create(
        model="m", messages=HELLO_WORLD, extra_body={"fake": {"cache_read_tokens": 6}}
    )
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert (usage.prompt_tokens, usage.prompt_tokens_details.cached_tokens) == (8, 6)
    message = ant.messages.create(
        model="c",
        max_tokens=50,
        system=SYSTEM,
        messages=HELLO_WORLD,
        extra_body={"fake": {"cache_read_tokens": 5, "cache_write_tokens": 4}},
    )
    # prompt 11 = 2 fresh + 5 read + 4 written
    assert message.usage.input_tokens == 2
    assert message.usage.cache_read_input_tokens == 5
    assert message.usage.cache_creation_input_tokens == 4
    assert message.usage.cache_creation is not None
    assert message.usage.cache_creation.ephemeral_5m_input_tokens == 4


def test_anthropic_stream_start_carries_cache_counts(raw: httpx.Client) -> None:
    events = sse_json(messages(raw, stream=True, fake={"cache_read_tokens": 3, "cache_write_tokens": 1}).text)
    usage = events[0]["message"]["usage"]
    assert (
        usage["input_tokens"],
        usage["cache_read_input_tokens"],
        usage["cache_creation_input_tokens"],
    ) == (4, 3, 1)


def test_cache_counts_above_the_prompt_are_rejected(raw: httpx.Client) -> None:
    response = chat(raw, fake={"cache_read_tokens": 9})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    response = messages(raw, fake={"cache_read_tokens": 5, "cache_write_tokens": 4})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_reasoning_tokens(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="m", messages=HELLO_WORLD, extra_body={"fake": {"reasoning_tokens": 5}}
    )
    assert completion.choices[0].message.content == TWENTY
    usage = completion.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert (
        usage.completion_tokens,
        usage.completion_tokens_details.reasoning_tokens,
        usage.total_tokens,
    ) == (
        25,
        5,
        33,
    )


def test_reasoning_tokens_count_against_the_bound(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="m", messages=HELLO_WORLD, max_completion_tokens=8, extra_body={"fake": {"reasoning_tokens": 5}}
    )
    assert completion.choices[0].message.content == "hello hello hello"
    assert completion.choices[0].finish_reason == "length"
    usage = completion.usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert (usage.completion_tokens, usage.completion_tokens_details.reasoning_tokens) == (8, 5)


def test_reasoning_tokens_in_anthropic_output(ant: anthropic.Anthropic) -> None:
    message = ant.messages.create(
        model="c", max_tokens=100, messages=HELLO_WORLD, extra_body={"fake": {"reasoning_tokens": 4}}
    )
    assert message.content[0].type == "text" and message.content[0].text == TWENTY
    assert message.usage.output_tokens == 24


# ---------------------------------------------------------------- options: broken streams


def test_break_after_chunks_openai(oai: openai.OpenAI, url: str) -> None:
    stream = oai.chat.completions.create(
        model="m",
        messages=HELLO_WORLD,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"fake": {"break_after_chunks": 2}},
    )
    received = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 2
    assert received[1].choices[0].delta.content == "hello hello hello hello hello"

    with httpx.Client(base_url=url, timeout=10) as client:
        body = {"model": "m", "messages": HELLO_WORLD, "stream": True, "fake": {"break_after_chunks": 3}}
        lines: list[str] = []
        with (
            pytest.raises(httpx.RemoteProtocolError),
            client.stream("POST", "/v1/chat/completions", json=body) as r,
        ):
            lines.extend(line for line in r.iter_lines() if line)
    assert len(lines) == 3
    assert "data: [DONE]" not in lines


def test_break_after_chunks_anthropic(ant: anthropic.Anthropic) -> None:
    stream = ant.messages.create(
        model="c",
        max_tokens=100,
        messages=HELLO_WORLD,
        stream=True,
        extra_body={"fake": {"break_after_chunks": 4}},
    )
    received = []
    with pytest.raises((anthropic.APIConnectionError, httpx2.RemoteProtocolError)):
        for event in stream:
            received.append(event.type)
    # message_start, content_block_start, ping (skipped by the SDK), one delta
    assert received == ["message_start", "content_block_start", "content_block_delta"]


def test_cut_is_logged_as_one_line() -> None:
    try:
        raise FakeStreamCut("cut after 2 events")
    except FakeStreamCut:
        record = logging.LogRecord(
            "uvicorn.error", logging.ERROR, "", 0, "Exception in ASGI app", (), sys.exc_info()
        )
    assert QuietStreamCuts().filter(record)
    assert (record.levelno, record.getMessage(), record.exc_info) == (
        logging.INFO,
        "cut after 2 events",
        None,
    )


def test_break_after_more_chunks_than_the_stream_has(raw: httpx.Client) -> None:
    text = chat(raw, stream=True, fake={"break_after_chunks": 100}).text
    assert text.endswith("data: [DONE]\n\n")


def test_done_false_leaves_out_done(raw: httpx.Client) -> None:
    text = chat(raw, stream=True, fake={"done": False}).text
    assert "[DONE]" not in text
    assert sse_json(text)[-1]["choices"][0]["finish_reason"] == "stop"


def test_events_replayed_openai(raw: httpx.Client) -> None:
    custom = [
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": "odd"}}],
        },
        {"weird": True},
    ]
    text = chat(raw, stream=True, fake={"events": custom}).text
    assert sse(text) == [(None, json.dumps(event, separators=(",", ":"))) for event in custom] + [
        (None, "[DONE]")
    ]
    text = chat(raw, stream=True, fake={"events": custom, "done": False}).text
    assert [json.loads(data) for _, data in sse(text)] == custom


def test_events_replayed_anthropic(raw: httpx.Client) -> None:
    custom = [
        {"type": "message_start", "message": {}},
        {"type": "error", "error": {"type": "overloaded_error"}},
    ]
    events = sse(messages(raw, stream=True, fake={"events": custom}).text)
    assert [name for name, _ in events] == ["message_start", "error"]
    assert [json.loads(data) for _, data in events] == custom


def test_events_error_event_reaches_the_sdk(ant: anthropic.Anthropic) -> None:
    custom = [{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]
    stream = ant.messages.create(
        model="c", max_tokens=10, messages=HELLO_WORLD, stream=True, extra_body={"fake": {"events": custom}}
    )
    with pytest.raises(anthropic.APIStatusError):
        list(stream)


# ---------------------------------------------------------------- options: errors


@pytest.mark.parametrize(
    ("status", "error"),
    [(429, openai.RateLimitError), (503, openai.InternalServerError), (404, openai.NotFoundError)],
)
def test_status_openai(oai: openai.OpenAI, status: int, error: type[openai.APIStatusError]) -> None:
    with pytest.raises(error) as caught:
        oai.chat.completions.create(model="m", messages=HELLO_WORLD, extra_body={"fake": {"status": status}})
    assert caught.value.status_code == status
    body = caught.value.body
    assert isinstance(body, dict) and {"message", "type", "param", "code"} <= set(body)


def test_status_openai_error_types(raw: httpx.Client) -> None:
    assert chat(raw, fake={"status": 429}).json()["error"]["code"] == "rate_limit_exceeded"
    assert chat(raw, fake={"status": 503}).json()["error"]["type"] == "server_error"
    assert chat(raw, stream=True, fake={"status": 500}).json()["error"]["type"] == "server_error"


@pytest.mark.parametrize(
    ("status", "kind"), [(429, "rate_limit_error"), (529, "overloaded_error"), (500, "api_error")]
)
def test_status_anthropic(ant: anthropic.Anthropic, raw: httpx.Client, status: int, kind: str) -> None:
    with pytest.raises(anthropic.APIStatusError) as caught:
        ant.messages.create(
            model="c", max_tokens=10, messages=HELLO_WORLD, extra_body={"fake": {"status": status}}
        )
    assert caught.value.status_code == status
    body = messages(raw, fake={"status": status}).json()
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert body["error"]["message"]


@pytest.mark.parametrize(
    "options",
    [
        {"nonsense": 1},
        {"reply_tokens": -1},
        {"reply_tokens": "5"},
        {"reply_tokens": True},
        {"chunk_tokens": 0},
        {"latency_ms": -5},
        {"usage": "sometimes"},
        {"running_usage": "yes"},
        {"events": [1, 2]},
        {"events": {"type": "ping"}},
        {"status": 200},
        {"status": 600},
    ],
)
def test_bad_options_are_400(raw: httpx.Client, options: dict[str, Any]) -> None:
    response = chat(raw, fake=options)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    response = messages(raw, fake=options)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_bad_option_header_is_400(raw: httpx.Client) -> None:
    for header in ("{not json", "[1]"):
        body = {"model": "m", "messages": HELLO_WORLD}
        response = raw.post("/v1/chat/completions", json=body, headers={"x-fake-options": header})
        assert response.status_code == 400
    assert chat(raw, fake="reply_tokens=3").status_code == 400


# ---------------------------------------------------------------- malformed requests


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HELLO_WORLD}, "model"),
        ({"model": 5, "messages": HELLO_WORLD}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        ({"model": "m", "messages": [{"content": "hi"}]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0]"),
        ({"model": "m", "messages": HELLO_WORLD, "max_tokens": "10"}, "max_tokens"),
        ({"model": "m", "messages": HELLO_WORLD, "max_completion_tokens": -1}, "max_completion_tokens"),
        ({"model": "m", "messages": HELLO_WORLD, "stream": "yes"}, "stream"),
        ({"model": "m", "messages": HELLO_WORLD, "stream_options": []}, "stream_options"),
        ({"model": "m", "messages": HELLO_WORLD, "tools": {}}, "tools"),
        ({"model": "m", "messages": HELLO_WORLD, "n": 2}, "n"),
    ],
)
def test_openai_malformed_bodies_are_400(raw: httpx.Client, body: dict[str, Any], param: str) -> None:
    response = raw.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"] and "code" in error


@pytest.mark.parametrize("content", [b"not json", b"", b"[1, 2]", b'"text"', b'{"model": NaN}', b"\xff\xfe"])
def test_openai_unparsable_bodies_are_400(raw: httpx.Client, content: bytes) -> None:
    response = raw.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    "body",
    [
        {"messages": HELLO_WORLD, "max_tokens": 10},
        {"model": "c", "messages": HELLO_WORLD},
        {"model": "c", "messages": HELLO_WORLD, "max_tokens": 0},
        {"model": "c", "messages": HELLO_WORLD, "max_tokens": "10"},
        {"model": "c", "max_tokens": 10},
        {"model": "c", "max_tokens": 10, "messages": []},
        {"model": "c", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]},
        {"model": "c", "max_tokens": 10, "messages": [{"role": "user"}]},
        {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": [{"text": "x"}]}]},
        {"model": "c", "max_tokens": 10, "messages": HELLO_WORLD, "system": 5},
        {"model": "c", "max_tokens": 10, "messages": HELLO_WORLD, "stream": 1},
    ],
)
def test_anthropic_malformed_bodies_are_400(raw: httpx.Client, body: dict[str, Any]) -> None:
    response = raw.post("/v1/messages", json=body)
    assert response.status_code == 400
    payload = response.json()
    assert payload["type"] == "error"
    assert payload["error"]["type"] == "invalid_request_error"
    assert payload["error"]["message"]


def test_anthropic_missing_max_tokens_names_it(raw: httpx.Client) -> None:
    response = raw.post("/v1/messages", json={"model": "c", "messages": HELLO_WORLD})
    assert "max_tokens" in response.json()["error"]["message"]


def test_anthropic_unparsable_body_is_400(raw: httpx.Client) -> None:
    response = raw.post("/v1/messages", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["type"] == "error"


def test_sdk_sees_bad_request(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="m", messages=[])


# ---------------------------------------------------------------- authentication


@pytest.fixture(scope="module")
def secured() -> Iterator[str]:
    with running(create_app(FakeSettings(api_key="sk-right"))) as base:
        yield base


def test_api_key_accepted_from_both_sdks(secured: str) -> None:
    client = openai.OpenAI(api_key="sk-right", base_url=f"{secured}/v1", max_retries=0)
    assert (
        client.chat.completions.create(model="m", messages=HELLO_WORLD).choices[0].message.content == TWENTY
    )
    claude = anthropic.Anthropic(api_key="sk-right", base_url=secured, max_retries=0)
    assert claude.messages.create(model="c", max_tokens=10, messages=HELLO_WORLD).usage.output_tokens == 10


def test_x_api_key_header_accepted(secured: str) -> None:
    body = {"model": "c", "max_tokens": 10, "messages": HELLO_WORLD}
    response = httpx.post(f"{secured}/v1/messages", json=body, headers={"x-api-key": "sk-right"})
    assert response.status_code == 200


def test_wrong_or_missing_key_is_401(secured: str) -> None:
    client = openai.OpenAI(api_key="sk-wrong", base_url=f"{secured}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="m", messages=HELLO_WORLD)
    claude = anthropic.Anthropic(api_key="sk-wrong", base_url=secured, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        claude.messages.create(model="c", max_tokens=10, messages=HELLO_WORLD)

    response = httpx.post(f"{secured}/v1/chat/completions", json={"model": "m", "messages": HELLO_WORLD})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    response = httpx.post(
        f"{secured}/v1/messages", json={"model": "c", "max_tokens": 5, "messages": HELLO_WORLD}
    )
    assert response.status_code == 401
    assert response.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    assert httpx.get(f"{secured}/v1/models").status_code == 401
    assert httpx.get(f"{secured}/healthz").json() == {"status": "ok"}


# ---------------------------------------------------------------- recorded requests and other endpoints


def test_recorded_requests() -> None:
    app = create_app(FakeSettings(api_key="sk-secret", max_recorded=2))
    with running(app) as base:
        client = openai.OpenAI(api_key="sk-secret", base_url=f"{base}/v1", max_retries=0)
        client.chat.completions.create(
            model="m", messages=HELLO_WORLD, max_tokens=3, extra_body={"fake": {"reply_tokens": 1}}
        )
        httpx.post(f"{base}/v1/messages", content=b"not json", headers={"x-api-key": "sk-secret"})
        recorded = httpx.get(f"{base}/_fake/requests").json()
        assert len(recorded) == 2
        first, second = recorded
        assert first["path"] == "/v1/chat/completions"
        assert first["body"] == {"model": "m", "messages": HELLO_WORLD, "max_tokens": 3}
        assert first["headers"]["authorization"] == "<redacted>"
        assert all(name == name.lower() for name in first["headers"])
        assert "sk-secret" not in json.dumps(recorded)
        assert second == {"path": "/v1/messages", "headers": second["headers"], "body": "not json"}
        assert second["headers"]["x-api-key"] == "<redacted>"

        client.chat.completions.create(model="third", messages=HELLO_WORLD)
        recorded = httpx.get(f"{base}/_fake/requests").json()
        assert [entry["path"] for entry in recorded] == ["/v1/messages", "/v1/chat/completions"]  # bounded
        assert recorded[-1]["body"]["model"] == "third"
        assert list(app.state.received) == recorded

        assert httpx.delete(f"{base}/_fake/requests").status_code == 200
        assert httpx.get(f"{base}/_fake/requests").json() == []


def test_healthz_and_models(oai: openai.OpenAI, ant: anthropic.Anthropic, raw: httpx.Client) -> None:
    assert raw.get("/healthz").json() == {"status": "ok"}
    ids = [model.id for model in oai.models.list()]
    assert ids and all(isinstance(model_id, str) for model_id in ids)
    listing = raw.get("/v1/models").json()
    assert listing["object"] == "list"
    assert all(entry["object"] == "model" for entry in listing["data"])
    assert [model.id for model in ant.models.list()] == ids


def test_unknown_v1_path_is_provider_shaped_404(raw: httpx.Client) -> None:
    response = raw.post("/v1/audio/translations", json={})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_ids_are_deterministic_counters() -> None:
    app = create_app()
    with running(app) as base:
        first = httpx.post(f"{base}/v1/chat/completions", json={"model": "m", "messages": HELLO_WORLD}).json()
        second = httpx.post(
            f"{base}/v1/chat/completions", json={"model": "m", "messages": HELLO_WORLD}
        ).json()
    assert first["id"] != second["id"]
    assert first["choices"] == second["choices"] and first["usage"] == second["usage"]


@pytest.mark.parametrize(
    "kwargs",
    [{"reply_tokens": -1}, {"chunk_tokens": 0}, {"latency_ms": -1}, {"max_recorded": 0}, {"api_key": ""}],
)
def test_settings_are_validated(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        FakeSettings(**kwargs)


def test_server_reply_tokens_setting() -> None:
    with running(create_app(FakeSettings(reply_tokens=4, chunk_tokens=2))) as base:
        client = openai.OpenAI(api_key="k", base_url=f"{base}/v1", max_retries=0)
        pieces = [
            chunk.choices[0].delta.content
            for chunk in client.chat.completions.create(model="m", messages=HELLO_WORLD, stream=True)
            if chunk.choices[0].delta.content
        ]
    assert pieces == ["hello hello", " hello hello"]
