"""The fake's OpenAI legacy completions and embeddings, and Anthropic's count_tokens.

Counts by hand: a completion prompt or an embedding input has no per-message overhead, so
``"Hello, world!"`` counts 4 and ``"Be nice."`` 3; as a Messages prompt, "Hello, world!" is a
message (8) and "Be nice." the system prompt (3).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.fake.helpers import HELLO_WORLD, SYSTEM, TWENTY, hello, running, sse, sse_json
from tokenward.fake import FakeSettings, create_app


def complete(raw: httpx.Client, **body: Any) -> httpx.Response:
    return raw.post(
        "/v1/completions", json={"model": "gpt-3.5-turbo-instruct", "prompt": "Hello, world!", **body}
    )


def embed(raw: httpx.Client, **body: Any) -> httpx.Response:
    return raw.post("/v1/embeddings", json={"model": "text-embedding-3-small", **body})


# ---------------------------------------------------------------- legacy completions


def test_completion_defaults_to_16_tokens(oai: openai.OpenAI) -> None:
    completion = oai.completions.create(model="gpt-3.5-turbo-instruct", prompt="Hello, world!")
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert completion.model == "gpt-3.5-turbo-instruct"
    [choice] = completion.choices
    assert (choice.index, choice.text, choice.finish_reason) == (0, hello(16), "length")
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (4, 16, 20)


def test_completion_under_its_bound_stops(oai: openai.OpenAI) -> None:
    completion = oai.completions.create(model="m", prompt="Hello, world!", max_tokens=30)
    assert completion.choices[0].text == TWENTY
    assert completion.choices[0].finish_reason == "stop"


def test_completion_batch_has_one_choice_per_prompt(oai: openai.OpenAI) -> None:
    completion = oai.completions.create(model="m", prompt=["Hello, world!", SYSTEM], max_tokens=5)
    assert [(choice.index, choice.text, choice.finish_reason) for choice in completion.choices] == [
        (0, hello(5), "length"),
        (1, hello(5), "length"),
    ]
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (4 + 3, 10, 17)


@pytest.mark.parametrize(("prompt", "tokens", "choices"), [([1, 2, 3], 3, 1), ([[1, 2], [3, 4, 5]], 5, 2)])
def test_completion_token_prompts(raw: httpx.Client, prompt: Any, tokens: int, choices: int) -> None:
    body = complete(raw, prompt=prompt, max_tokens=2).json()
    assert body["usage"]["prompt_tokens"] == tokens
    assert len(body["choices"]) == choices


def test_completion_stream(oai: openai.OpenAI, raw: httpx.Client) -> None:
    chunks = list(
        oai.completions.create(
            model="m",
            prompt="Hello, world!",
            max_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"fake": {"reply_tokens": 7, "chunk_tokens": 3}},
        )
    )
    assert all(chunk.object == "text_completion" for chunk in chunks)
    texts = [chunk.choices[0].text for chunk in chunks[:-1]]
    assert texts == ["hello hello hello", " hello hello hello", " hello", ""]
    assert [chunk.choices[0].finish_reason for chunk in chunks[:-1]] == [None, None, None, "stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (4, 7)

    text = complete(raw, stream=True, stream_options={"include_usage": True}).text
    assert text.endswith("data: [DONE]\n\n")
    decoded = sse_json(text)
    assert all(chunk["usage"] is None for chunk in decoded[:-1])
    assert "usage" not in sse_json(complete(raw, stream=True).text)[0]


def test_completion_stream_of_a_batch(raw: httpx.Client) -> None:
    decoded = sse_json(complete(raw, prompt=["a", "b"], stream=True, fake={"reply_tokens": 2}).text)
    steps = [
        (c["choices"][0]["index"], c["choices"][0]["text"], c["choices"][0]["finish_reason"]) for c in decoded
    ]
    assert steps == [(0, "hello hello", None), (0, "", "stop"), (1, "hello hello", None), (1, "", "stop")]


def test_completion_running_usage(raw: httpx.Client) -> None:
    decoded = sse_json(
        complete(raw, stream=True, fake={"reply_tokens": 4, "chunk_tokens": 2, "running_usage": True}).text
    )
    assert [chunk["usage"]["completion_tokens"] for chunk in decoded] == [2, 4, 4]
    assert all(chunk["usage"]["prompt_tokens"] == 4 for chunk in decoded)


def test_completion_usage_modes_and_options(raw: httpx.Client) -> None:
    assert "usage" not in complete(raw, fake={"usage": "omit"}).json()
    usage = complete(raw, max_tokens=9, fake={"usage": "under"}).json()["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (2, 4, 6)
    usage = complete(raw, fake={"usage": "null_prompt"}).json()["usage"]
    assert (usage["prompt_tokens"], usage["total_tokens"]) == (None, None)
    body = complete(raw, max_tokens=3, fake={"ignore_max_tokens": True}).json()
    assert body["choices"][0]["text"] == TWENTY and body["usage"]["completion_tokens"] == 20
    assert complete(raw, fake={"status": 503}).json()["error"]["type"] == "server_error"
    events = sse(complete(raw, fake={"events": [{"odd": 1}]}).text)
    assert events == [(None, '{"odd":1}'), (None, "[DONE]")]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "hi"}, "model"),
        ({"model": "m"}, "prompt"),
        ({"model": "m", "prompt": []}, "prompt"),
        ({"model": "m", "prompt": 5}, "prompt"),
        ({"model": "m", "prompt": ["a", 1]}, "prompt"),
        ({"model": "m", "prompt": "hi", "n": 2}, "n"),
        ({"model": "m", "prompt": "hi", "max_tokens": -1}, "max_tokens"),
    ],
)
def test_completion_malformed_bodies_are_400(raw: httpx.Client, body: dict[str, Any], param: str) -> None:
    response = raw.post("/v1/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


# ---------------------------------------------------------------- embeddings


def documented_vector(text: str, dimensions: int) -> list[float]:
    """The documented rule, written out: SHAKE-256 -> little-endian uint32 -> [-1, 1) -> unit length."""
    digest = hashlib.shake_256(text.encode()).digest(4 * dimensions)
    values = [int.from_bytes(digest[4 * i : 4 * i + 4], "little") / 2**31 - 1 for i in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


def test_embeddings(oai: openai.OpenAI) -> None:
    result = oai.embeddings.create(
        model="text-embedding-3-small", input=["Hello, world!", SYSTEM], dimensions=8
    )
    assert result.object == "list" and result.model == "text-embedding-3-small"
    assert [item.index for item in result.data] == [0, 1]
    first, second = (item.embedding for item in result.data)
    assert len(first) == len(second) == 8
    assert first == pytest.approx(documented_vector("Hello, world!", 8))
    assert math.fsum(v * v for v in first) == pytest.approx(1.0)
    assert first != second
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (4 + 3, 7)

    alone = oai.embeddings.create(model="e", input="Hello, world!", dimensions=8)
    assert alone.data[0].embedding == first  # the same input gives the same vector in any batch


def test_embeddings_base64(oai: openai.OpenAI) -> None:
    floats = oai.embeddings.create(model="e", input="Hello, world!", dimensions=4, encoding_format="float")
    packed = oai.embeddings.create(model="e", input="Hello, world!", dimensions=4, encoding_format="base64")
    encoded = packed.data[0].embedding
    assert isinstance(encoded, str)
    decoded = struct.unpack("<4f", base64.b64decode(encoded))
    assert list(decoded) == pytest.approx(floats.data[0].embedding, abs=1e-6)


def test_embeddings_dimension_defaults() -> None:
    for settings, expected in ((FakeSettings(), 1536), (FakeSettings(embedding_dimensions=3), 3)):
        with running(create_app(settings)) as base:
            body = httpx.post(f"{base}/v1/embeddings", json={"model": "e", "input": "x"}).json()
        assert len(body["data"][0]["embedding"]) == expected


def test_embeddings_token_inputs(raw: httpx.Client) -> None:
    assert embed(raw, input=[1, 2, 3]).json()["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    body = embed(raw, input=[[1, 2], [3, 4, 5]], dimensions=2).json()
    assert len(body["data"]) == 2 and body["usage"]["prompt_tokens"] == 5


def test_embeddings_usage_modes(raw: httpx.Client) -> None:
    text = "Hello, world! How are you?"  # Hello , world ! How are you ? = 8
    assert embed(raw, input=text).json()["usage"] == {"prompt_tokens": 8, "total_tokens": 8}
    assert embed(raw, input=text, fake={"usage": "under"}).json()["usage"] == {
        "prompt_tokens": 4,
        "total_tokens": 4,
    }
    assert embed(raw, input=text, fake={"usage": "zero"}).json()["usage"] == {
        "prompt_tokens": 0,
        "total_tokens": 0,
    }
    assert embed(raw, input=text, fake={"usage": "null_prompt"}).json()["usage"] == {
        "prompt_tokens": None,
        "total_tokens": None,
    }
    assert "usage" not in embed(raw, input=text, fake={"usage": "omit"}).json()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "e"}, "input"),
        ({"model": "e", "input": ""}, "input"),
        ({"model": "e", "input": []}, "input"),
        ({"model": "e", "input": ["a", ""]}, "input"),
        ({"model": "e", "input": [[1], []]}, "input"),
        ({"model": "e", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "e", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"model": "e", "input": "x", "fake": {"events": []}}, "events"),
    ],
)
def test_embeddings_malformed_bodies_are_400(raw: httpx.Client, body: dict[str, Any], param: str) -> None:
    response = raw.post("/v1/embeddings", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_embeddings_status_option(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        oai.embeddings.create(model="e", input="x", extra_body={"fake": {"status": 429}})


# ---------------------------------------------------------------- Anthropic count_tokens


def test_count_tokens_matches_the_messages_prompt(ant: anthropic.Anthropic) -> None:
    tool: Any = {"name": "get_time", "input_schema": {"type": "object"}}  # 23 pieces
    counted = ant.messages.count_tokens(model="c", system=SYSTEM, messages=HELLO_WORLD, tools=[tool])
    assert counted.input_tokens == 3 + 8 + 23
    message = ant.messages.create(
        model="c",
        max_tokens=5,
        system=SYSTEM,
        messages=HELLO_WORLD,
        tools=[tool],
        extra_body={"fake": {"cache_read_tokens": 4}},
    )
    usage = message.usage
    assert usage.input_tokens + (usage.cache_read_input_tokens or 0) == counted.input_tokens


def test_count_tokens_usage_modes(raw: httpx.Client) -> None:
    def count(**options: Any) -> httpx.Response:
        body = {"model": "c", "messages": HELLO_WORLD, "system": SYSTEM, "fake": options}
        return raw.post("/v1/messages/count_tokens", json=body)

    assert count().json() == {"input_tokens": 11}
    assert count(usage="under").json() == {"input_tokens": 5}
    assert count(usage="zero").json() == {"input_tokens": 0}
    assert count(usage="null_prompt").json() == {"input_tokens": None}
    assert count(usage="omit").json() == {}
    error = count(status=529).json()
    assert error["type"] == "error" and error["error"]["type"] == "overloaded_error"
    assert count(events=[]).status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        {"messages": HELLO_WORLD},
        {"model": "c"},
        {"model": "c", "messages": []},
        {"model": "c", "messages": [{"role": "system", "content": "x"}]},
        {"model": "c", "messages": HELLO_WORLD, "system": 5},
    ],
)
def test_count_tokens_malformed_bodies_are_400(raw: httpx.Client, body: dict[str, Any]) -> None:
    response = raw.post("/v1/messages/count_tokens", json=body)
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_recorded_paths_of_new_endpoints() -> None:
    app = create_app()
    with running(app) as base:
        httpx.post(f"{base}/v1/embeddings", json={"model": "e", "input": "x", "dimensions": 2})
        httpx.post(f"{base}/v1/messages/count_tokens", json={"model": "c", "messages": HELLO_WORLD})
        recorded = httpx.get(f"{base}/_fake/requests").json()
    assert [entry["path"] for entry in recorded] == ["/v1/embeddings", "/v1/messages/count_tokens"]
    assert json.dumps(recorded[0]["body"]) == json.dumps({"model": "e", "input": "x", "dimensions": 2})
