"""The fake's Gemini endpoints over plain HTTP (and through google-genai when it is installed).

Counts by hand: one user content "Hello, world!" is 4 pieces + 4 = 8; the system instruction
"Be nice." adds 3 (not a content, no overhead): a prompt of 11.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fake.helpers import SYSTEM, TWENTY, hello, running
from tokenward.fake import FakeSettings, create_app

CONTENTS: Any = [{"role": "user", "parts": [{"text": "Hello, world!"}]}]
SYSTEM_INSTRUCTION: Any = {"parts": [{"text": SYSTEM}]}
GENERATE = "/v1beta/models/gemini-test:generateContent"
STREAM = "/v1beta/models/gemini-test:streamGenerateContent"


def generate(raw: httpx.Client, path: str = GENERATE, **body: Any) -> httpx.Response:
    return raw.post(path, json={"contents": CONTENTS, "systemInstruction": SYSTEM_INSTRUCTION, **body})


def sse_objects(text: str) -> list[dict[str, Any]]:
    assert "\r\n\r\n" in text  # Google ends SSE lines with CRLF
    return [json.loads(line[len("data: ") :]) for line in text.splitlines() if line.startswith("data: ")]


def test_generate_content(raw: httpx.Client) -> None:
    body = generate(raw).json()
    [candidate] = body["candidates"]
    assert candidate["content"] == {"parts": [{"text": TWENTY}], "role": "model"}
    assert (candidate["finishReason"], candidate["index"]) == ("STOP", 0)
    assert body["usageMetadata"] == {
        "promptTokenCount": 11,
        "candidatesTokenCount": 20,
        "totalTokenCount": 31,
    }
    assert body["modelVersion"] == "gemini-test"
    assert body["responseId"]


def test_max_output_tokens_and_snake_case(raw: httpx.Client) -> None:
    body = raw.post(
        GENERATE,
        json={
            "contents": CONTENTS,
            "system_instruction": SYSTEM_INSTRUCTION,
            "generation_config": {"max_output_tokens": 7},
        },
    ).json()
    assert body["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert body["candidates"][0]["content"]["parts"][0]["text"] == hello(7)
    assert body["usageMetadata"] == {"promptTokenCount": 11, "candidatesTokenCount": 7, "totalTokenCount": 18}


def test_prompt_count_covers_function_parts_and_tools(raw: httpx.Client) -> None:
    contents = [
        {"role": "user", "parts": [{"text": "What's up?"}]},  # What ' s up ? = 5, + 4 = 9
        # get_time 1 + { " tz " : " UTC " } 9, + 4 = 14
        {"role": "model", "parts": [{"functionCall": {"name": "get_time", "args": {"tz": "UTC"}}}]},
        # { " time " : " 12 : 00 " } = 11, + 4 = 15 (the name is not counted)
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_time", "response": {"time": "12:00"}}}],
        },
    ]
    # { " functionDeclarations " : [ { " name " : " get_time " } ] } = 17
    tools = [{"functionDeclarations": [{"name": "get_time"}]}]
    body = raw.post(GENERATE, json={"contents": contents, "tools": tools}).json()
    assert body["usageMetadata"]["promptTokenCount"] == 9 + 14 + 15 + 17


def test_thoughts_and_cached_content(raw: httpx.Client) -> None:
    usage = generate(raw, fake={"reasoning_tokens": 4, "cache_read_tokens": 3}).json()["usageMetadata"]
    assert usage == {
        "promptTokenCount": 11,  # the 3 cached tokens are inside it
        "candidatesTokenCount": 20,  # the 4 thoughts are not
        "totalTokenCount": 11 + 20 + 4,
        "cachedContentTokenCount": 3,
        "thoughtsTokenCount": 4,
    }
    # thoughts take the bound first: no text left, so no parts
    body = generate(raw, generationConfig={"maxOutputTokens": 5}, fake={"reasoning_tokens": 5}).json()
    assert body["candidates"][0]["content"] == {"role": "model"}
    assert body["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert body["usageMetadata"]["thoughtsTokenCount"] == 5
    assert body["usageMetadata"]["candidatesTokenCount"] == 0
    assert generate(raw, fake={"cache_read_tokens": 12}).status_code == 400


def test_sse_stream_carries_running_totals(raw: httpx.Client) -> None:
    response = generate(
        raw, f"{STREAM}?alt=sse", fake={"reply_tokens": 7, "chunk_tokens": 3, "reasoning_tokens": 2}
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in response.text
    chunks = sse_objects(response.text)
    texts = [chunk["candidates"][0]["content"]["parts"][0]["text"] for chunk in chunks]
    assert texts == ["hello hello hello", " hello hello hello", " hello"]
    assert ["finishReason" in chunk["candidates"][0] for chunk in chunks] == [False, False, True]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    usages = [chunk["usageMetadata"] for chunk in chunks]
    assert [usage["candidatesTokenCount"] for usage in usages] == [3, 6, 7]
    assert [usage["totalTokenCount"] for usage in usages] == [16, 19, 20]  # 11 + text + 2 thoughts
    assert all(usage["promptTokenCount"] == 11 and usage["thoughtsTokenCount"] == 2 for usage in usages)
    assert len({chunk["responseId"] for chunk in chunks}) == 1


def test_stream_without_sse_is_a_json_array(raw: httpx.Client) -> None:
    response = generate(raw, STREAM, generationConfig={"maxOutputTokens": 7})
    assert response.headers["content-type"].startswith("application/json")
    chunks = response.json()
    assert [chunk["candidates"][0]["content"]["parts"][0]["text"] for chunk in chunks] == [
        "hello hello hello hello hello",
        " hello hello",
    ]
    assert chunks[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 7


def test_stream_of_an_empty_reply(raw: httpx.Client) -> None:
    [chunk] = sse_objects(generate(raw, f"{STREAM}?alt=sse", fake={"reply_tokens": 0}).text)
    assert chunk["candidates"][0] == {"content": {"role": "model"}, "finishReason": "STOP", "index": 0}


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("zero", {"promptTokenCount": 0, "candidatesTokenCount": 0, "totalTokenCount": 0}),
        ("under", {"promptTokenCount": 5, "candidatesTokenCount": 10, "totalTokenCount": 15}),
        ("null_prompt", {"candidatesTokenCount": 20}),
    ],
)
def test_usage_modes(raw: httpx.Client, mode: str, expected: dict[str, int]) -> None:
    assert generate(raw, fake={"usage": mode}).json()["usageMetadata"] == expected


def test_usage_omit(raw: httpx.Client) -> None:
    assert "usageMetadata" not in generate(raw, fake={"usage": "omit"}).json()
    chunks = sse_objects(generate(raw, f"{STREAM}?alt=sse", fake={"usage": "omit"}).text)
    assert chunks and all("usageMetadata" not in chunk for chunk in chunks)


def test_tool_call_option_is_ignored(raw: httpx.Client) -> None:
    tools = [{"functionDeclarations": [{"name": "get_time"}]}]
    body = generate(raw, tools=tools, fake={"tool_call": {"name": "get_time", "arguments": {}}}).json()
    assert body["candidates"][0]["content"]["parts"] == [{"text": TWENTY}]


def test_v1_path_as_google_genai_3_sends(raw: httpx.Client) -> None:
    body = generate(raw, "/v1/models/gemini-test:generateContent").json()
    assert body["usageMetadata"]["totalTokenCount"] == 31


def test_errors_are_google_shaped(raw: httpx.Client) -> None:
    error = generate(raw, fake={"status": 429}).json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert generate(raw, fake={"status": 503}).json()["error"]["status"] == "UNAVAILABLE"
    response = raw.post("/v1beta/models/gemini-test:countTokens", json={"contents": CONTENTS})
    assert response.status_code == 404 and response.json()["error"]["status"] == "NOT_FOUND"
    response = raw.get("/v1beta/models")
    assert response.status_code == 404 and response.json()["error"]["code"] == 404
    response = raw.post(GENERATE, content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"contents": []},
        {"contents": "hi"},
        {"contents": ["hi"]},
        {"contents": [{"role": "user"}]},
        {"contents": [{"role": "robot", "parts": [{"text": "x"}]}]},
        {"contents": [{"role": "user", "parts": ["x"]}]},
        {"contents": CONTENTS, "systemInstruction": "x"},
        {"contents": CONTENTS, "tools": {}},
        {"contents": CONTENTS, "generationConfig": []},
        {"contents": CONTENTS, "generationConfig": {"maxOutputTokens": "5"}},
        {"contents": CONTENTS, "generationConfig": {"maxOutputTokens": 0}},
    ],
)
def test_malformed_bodies_are_400(raw: httpx.Client, body: dict[str, Any]) -> None:
    response = raw.post(GENERATE, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_events_replayed_as_data_lines(raw: httpx.Client) -> None:
    custom = [{"candidates": []}, {"odd": True}]
    response = generate(raw, f"{STREAM}?alt=sse", fake={"events": custom})
    assert sse_objects(response.text) == custom


def test_break_after_chunks(url: str) -> None:
    body = {"contents": CONTENTS, "fake": {"break_after_chunks": 2, "chunk_tokens": 1}}
    lines: list[str] = []
    with (
        httpx.Client(base_url=url, timeout=10) as client,
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", f"{STREAM}?alt=sse", json=body) as response,
    ):
        lines.extend(line for line in response.iter_lines() if line.startswith("data: "))
    assert len(lines) == 2


# ---------------------------------------------------------------- authentication


@pytest.fixture(scope="module")
def keyed() -> Iterator[str]:
    with running(create_app(FakeSettings(api_key="g-key"))) as base:
        yield base


def test_api_key_from_header_or_query(keyed: str) -> None:
    body = {"contents": CONTENTS}
    assert httpx.post(f"{keyed}{GENERATE}", json=body, headers={"x-goog-api-key": "g-key"}).status_code == 200
    assert httpx.post(f"{keyed}{GENERATE}?key=g-key", json=body).status_code == 200
    assert httpx.post(f"{keyed}{STREAM}?alt=sse&key=g-key", json=body).status_code == 200


def test_missing_or_wrong_key_answers_as_google_does(keyed: str) -> None:
    body = {"contents": CONTENTS}
    for headers in ({}, {"authorization": "Bearer g-key"}):
        response = httpx.post(f"{keyed}{GENERATE}", json=body, headers=headers)
        assert response.status_code == 403
        assert response.json()["error"]["status"] == "PERMISSION_DENIED"
    response = httpx.post(f"{keyed}{GENERATE}?key=nope", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": 400,
        "message": "API key not valid. Please pass a valid API key.",
        "status": "INVALID_ARGUMENT",
    }


def test_google_key_is_redacted_in_the_record() -> None:
    app = create_app(FakeSettings(api_key="g-secret"))
    with running(app) as base:
        httpx.post(f"{base}{GENERATE}", json={"contents": CONTENTS}, headers={"x-goog-api-key": "g-secret"})
        recorded = httpx.get(f"{base}/_fake/requests").json()
    assert recorded[0]["path"] == GENERATE
    assert recorded[0]["headers"]["x-goog-api-key"] == "<redacted>"
    assert "g-secret" not in json.dumps(recorded)


# ---------------------------------------------------------------- google-genai (optional)


def test_google_genai_client(url: str) -> None:
    genai = pytest.importorskip("google.genai")
    types = pytest.importorskip("google.genai.types")
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=url))
    config = types.GenerateContentConfig(system_instruction=SYSTEM, max_output_tokens=7)
    response = client.models.generate_content(model="gemini-test", contents="Hello, world!", config=config)
    assert response.text == hello(7)
    assert response.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    usage = response.usage_metadata
    assert (usage.prompt_token_count, usage.candidates_token_count, usage.total_token_count) == (11, 7, 18)
    extra = types.HttpOptions(extra_body={"fake": {"reasoning_tokens": 2}})
    chunks = list(
        client.models.generate_content_stream(
            model="gemini-test",
            contents="Hello, world!",
            config=types.GenerateContentConfig(http_options=extra),
        )
    )
    assert "".join(chunk.text for chunk in chunks) == TWENTY
    last = chunks[-1].usage_metadata
    assert (last.candidates_token_count, last.thoughts_token_count, last.total_token_count) == (20, 2, 30)
