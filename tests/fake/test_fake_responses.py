"""The fake's OpenAI Responses endpoint, driven by ``openai`` (create and stream) and raw HTTP.

Counts by hand: ``input="Hello, world!"`` is one user item, 4 pieces + 4 = 8; the instructions
``"Be nice."`` add 3 (not an item, no overhead).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import openai
import pytest

from tests.fake.helpers import SYSTEM, TWENTY, hello, sse, sse_json
from tokenward.fake import create_app

TOOL: Any = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}
# { " type " : " function " , " name " : " get_time " , " parameters " : { " type " : " object " } }:
# braces 4, quotes 14 (7 strings), words 7, colons 4, commas 2 -> 31
TOOL_PIECES = 31
CALL = {"tool_call": {"name": "get_time", "arguments": {"tz": "UTC"}}}  # get_time 1 + {"tz":"UTC"} 9


def create(raw: httpx.Client, **body: Any) -> httpx.Response:
    return raw.post("/v1/responses", json={"model": "gpt-test", "input": "Hello, world!", **body})


def test_create(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="gpt-test", input="Hello, world!", instructions=SYSTEM)
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.model == "gpt-test"
    assert response.status == "completed"
    assert response.incomplete_details is None
    assert response.instructions == SYSTEM
    assert response.output_text == TWENTY
    [item] = response.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    assert item.content[0].type == "output_text"
    usage = response.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (11, 20, 31)
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.input_tokens_details.cache_write_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0


def test_prompt_count_covers_items_instructions_and_tools(raw: httpx.Client) -> None:
    items = [
        # What ' s up ? = 5, + 4 = 9 (the image counts nothing)
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "What's up?"},
                {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
            ],
        },
        # get_time 1 + { " tz " : " UTC " } 9, + 4 = 14
        {"type": "function_call", "call_id": "c1", "name": "get_time", "arguments": '{"tz": "UTC"}'},
        # 12 : 00 = 3, + 4 = 7
        {"type": "function_call_output", "call_id": "c1", "output": "12:00"},
        # a message of the assistant, with output_text parts: Done . = 2, + 4 = 6
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]},
    ]
    body = create(raw, input=items, instructions=SYSTEM, tools=[TOOL]).json()
    assert body["usage"]["input_tokens"] == 9 + 14 + 7 + 6 + 3 + TOOL_PIECES


def test_max_output_tokens_makes_it_incomplete(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="m", input="Hello, world!", max_output_tokens=7)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.max_output_tokens == 7
    assert response.output_text == hello(7)
    assert response.output[0].type == "message" and response.output[0].status == "incomplete"
    assert response.usage is not None and response.usage.output_tokens == 7


def test_reasoning_item_and_counts(raw: httpx.Client) -> None:
    body = create(raw, fake={"reasoning_tokens": 3}).json()
    assert [item["type"] for item in body["output"]] == ["reasoning", "message"]
    assert body["output"][0]["summary"] == []
    usage = body["usage"]
    assert (usage["output_tokens"], usage["output_tokens_details"]["reasoning_tokens"]) == (23, 3)
    assert usage["total_tokens"] == 8 + 23

    # the bound covers reasoning first: nothing left for text, so no message item
    body = create(raw, max_output_tokens=5, fake={"reasoning_tokens": 5}).json()
    assert body["status"] == "incomplete"
    assert [item["type"] for item in body["output"]] == ["reasoning"]
    assert body["usage"]["output_tokens"] == 5


def test_cache_counts_inside_input(raw: httpx.Client) -> None:
    usage = create(raw, fake={"cache_read_tokens": 3, "cache_write_tokens": 2}).json()["usage"]
    assert usage["input_tokens"] == 8
    assert usage["input_tokens_details"] == {"cached_tokens": 3, "cache_write_tokens": 2}
    response = create(raw, fake={"cache_read_tokens": 5, "cache_write_tokens": 4})
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (
            "zero",
            {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0, "cached": 0, "reasoning": 0},
        ),
        # true: input 8 (3 cached), output 20 + 5 reasoning = 25
        (
            "under",
            {"input_tokens": 4, "output_tokens": 12, "total_tokens": 16, "cached": 1, "reasoning": 2},
        ),
        (
            "null_prompt",
            {"input_tokens": None, "output_tokens": 25, "total_tokens": None, "cached": 3, "reasoning": 5},
        ),
    ],
)
def test_usage_modes(raw: httpx.Client, mode: str, expected: dict[str, Any]) -> None:
    usage = create(raw, fake={"usage": mode, "cache_read_tokens": 3, "reasoning_tokens": 5}).json()["usage"]
    assert {
        "input_tokens": usage["input_tokens"],
        "output_tokens": usage["output_tokens"],
        "total_tokens": usage["total_tokens"],
        "cached": usage["input_tokens_details"]["cached_tokens"],
        "reasoning": usage["output_tokens_details"]["reasoning_tokens"],
    } == expected


def test_usage_omit(raw: httpx.Client) -> None:
    assert "usage" not in create(raw, fake={"usage": "omit"}).json()
    events = sse_json(create(raw, stream=True, fake={"usage": "omit"}).text)
    assert all("usage" not in event.get("response", {}) for event in events)


def test_function_call(oai: openai.OpenAI, raw: httpx.Client) -> None:
    response = oai.responses.create(model="m", input="Hello, world!", tools=[TOOL], extra_body={"fake": CALL})
    [item] = response.output
    assert item.type == "function_call"
    assert (item.name, item.arguments, item.status) == ("get_time", '{"tz":"UTC"}', "completed")
    assert item.call_id.startswith("call_") and item.id is not None and item.id.startswith("fc_")
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (8 + TOOL_PIECES, 10)

    body = create(raw, tools=[TOOL], tool_choice="none", fake=CALL).json()
    assert body["output"][0]["type"] == "message"
    body = create(raw, fake=CALL).json()  # no tools offered
    assert body["output"][0]["type"] == "message"

    body = create(raw, tools=[TOOL], max_output_tokens=4, fake=CALL).json()  # name + { " tz
    assert body["status"] == "incomplete"
    assert body["output"][0]["status"] == "incomplete" and body["output"][0]["arguments"] == '{"tz'
    assert body["usage"]["output_tokens"] == 4


# ---------------------------------------------------------------- streams


def test_stream_event_sequence(raw: httpx.Client) -> None:
    response = create(raw, stream=True, instructions=SYSTEM, fake={"reply_tokens": 7, "chunk_tokens": 3})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in response.text
    events = sse(response.text)
    names = [name for name, _ in events]
    assert names == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    payloads = [json.loads(data) for _, data in events]
    assert [payload["type"] for payload in payloads] == names
    assert [payload["sequence_number"] for payload in payloads] == list(range(len(names)))
    created = payloads[0]["response"]
    assert (created["status"], created["output"], created["usage"]) == ("in_progress", [], None)
    added = payloads[2]["item"]
    assert added["status"] == "in_progress" and added["content"] == []
    deltas = [payload["delta"] for payload in payloads[4:7]]
    assert deltas == ["hello hello hello", " hello hello hello", " hello"]
    assert payloads[7]["text"] == hello(7)
    assert payloads[9]["item"]["content"][0]["text"] == hello(7)
    final = payloads[-1]["response"]
    assert final["status"] == "completed" and final["id"] == created["id"]
    assert final["output"] == [payloads[9]["item"]]
    assert (final["usage"]["input_tokens"], final["usage"]["output_tokens"]) == (11, 7)


def test_stream_with_sdk_helper(oai: openai.OpenAI) -> None:
    with oai.responses.stream(
        model="m", input="Hello, world!", extra_body={"fake": {"chunk_tokens": 4}}
    ) as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == TWENTY
    assert final.output_text == TWENTY
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens) == (8, 20)

    raw_events = list(oai.responses.create(model="m", input="Hello, world!", stream=True))
    assert raw_events[0].type == "response.created" and raw_events[-1].type == "response.completed"


def test_stream_incomplete(oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model="m", input="Hello, world!", max_output_tokens=3, stream=True))
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.usage is not None and last.response.usage.output_tokens == 3


def test_stream_function_call(oai: openai.OpenAI, raw: httpx.Client) -> None:
    payloads = sse_json(create(raw, stream=True, tools=[TOOL], fake=CALL).text)
    assert [payload["type"] for payload in payloads] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert payloads[2]["item"]["arguments"] == "" and payloads[2]["item"]["name"] == "get_time"
    assert [payload["delta"] for payload in payloads[3:5]] == ['{"tz":', '"UTC"}']  # 5 pieces a chunk
    assert payloads[5]["arguments"] == '{"tz":"UTC"}'

    with oai.responses.stream(
        model="m", input="Hello, world!", tools=[TOOL], extra_body={"fake": CALL}
    ) as stream:
        final = stream.get_final_response()
    assert final.output[0].type == "function_call" and final.output[0].arguments == '{"tz":"UTC"}'


def test_stream_with_reasoning_item(raw: httpx.Client) -> None:
    payloads = sse_json(create(raw, stream=True, fake={"reasoning_tokens": 2, "reply_tokens": 3}).text)
    items = [(p["type"], p["output_index"]) for p in payloads if p["type"].startswith("response.output_item")]
    assert items == [
        ("response.output_item.added", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1),
        ("response.output_item.done", 1),
    ]
    assert payloads[-1]["response"]["usage"]["output_tokens_details"]["reasoning_tokens"] == 2


def test_stream_cut(url: str) -> None:
    body = {"model": "m", "input": "hi", "stream": True, "fake": {"break_after_chunks": 3}}
    lines: list[str] = []
    with (
        httpx.Client(base_url=url, timeout=10) as client,
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", "/v1/responses", json=body) as response,
    ):
        lines.extend(line for line in response.iter_lines() if line.startswith("data: "))
    assert len(lines) == 3


def test_events_replayed_with_names(raw: httpx.Client) -> None:
    custom = [{"type": "response.created", "response": {}}, {"type": "error", "message": "boom"}]
    events = sse(create(raw, stream=True, fake={"events": custom}).text)
    assert [name for name, _ in events] == ["response.created", "error"]
    assert [json.loads(data) for _, data in events] == custom


def test_status_option(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        oai.responses.create(model="m", input="hi", extra_body={"fake": {"status": 429}})


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": 5}, "input"),
        ({"model": "m", "input": ["hi"]}, "input[0]"),
        ({"model": "m", "input": [{"role": "robot", "content": "hi"}]}, "input[0]"),
        ({"model": "m", "input": [{"role": "user"}]}, "input[0]"),
        ({"model": "m", "input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"model": "m", "input": "hi", "instructions": 5}, "instructions"),
        ({"model": "m", "input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "m", "input": "hi", "tools": {}}, "tools"),
        ({"model": "m", "input": "hi", "stream": "yes"}, "stream"),
    ],
)
def test_malformed_bodies_are_400(raw: httpx.Client, body: dict[str, Any], param: str) -> None:
    response = raw.post("/v1/responses", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_async_sdk_over_asgi_transport() -> None:
    asyncio.run(_async_responses())


async def _async_responses() -> None:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as http:
        client = openai.AsyncOpenAI(
            api_key="k",
            base_url="http://fake/v1",
            http_client=http,  # type: ignore[arg-type]
            max_retries=0,
        )
        response = await client.responses.create(model="m", input="Hello, world!", max_output_tokens=2)
        assert response.output_text == "hello hello"
        async with client.responses.stream(model="m", input="Hello, world!") as stream:
            final = await stream.get_final_response()
        assert final.usage is not None and final.usage.output_tokens == 20
