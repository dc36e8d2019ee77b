"""The ``tool_call`` option: OpenAI chat ``tool_calls``, Anthropic ``tool_use``, Responses
``function_call``, and the endless tool loop an agent runs against it.

Counts by hand (pieces of ``\\w+|[^\\w\\s]``):

* the call ``get_time`` with ``{"tz": "UTC"}``: the name is 1 piece, the arguments' JSON
  ``{"tz":"UTC"}`` is { " tz " : " UTC " } = 9 pieces: 10 output tokens;
* the chat tool ``{"type": "function", "function": {"name": "get_time", "parameters": {"type":
  "object"}}}`` is 37 pieces (see test_fake_provider), so with "Hello, world!" (8) the prompt is 45;
* the Anthropic tool ``{"name": "get_time", "input_schema": {"type": "object"}}`` is 23: prompt 31.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import agents
import anthropic
import httpx
import openai
import pytest
from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, OpenAIResponsesModel, RunConfig, Runner

from tests.fake.helpers import HELLO_WORLD, TWENTY, running, sse, sse_json
from tokenward.fake import create_app

CHAT_TOOL: Any = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
CLAUDE_TOOL: Any = {"name": "get_time", "input_schema": {"type": "object"}}
CALL = {"tool_call": {"name": "get_time", "arguments": {"tz": "UTC"}}}
ARGUMENTS = '{"tz":"UTC"}'


def chat(raw: httpx.Client, **body: Any) -> httpx.Response:
    payload = {"model": "m", "messages": HELLO_WORLD, "tools": [CHAT_TOOL], "fake": CALL, **body}
    return raw.post("/v1/chat/completions", json=payload)


def claude(raw: httpx.Client, **body: Any) -> httpx.Response:
    payload = {"model": "c", "max_tokens": 100, "messages": HELLO_WORLD, "tools": [CLAUDE_TOOL], "fake": CALL}
    return raw.post("/v1/messages", json={**payload, **body})


# ---------------------------------------------------------------- OpenAI chat


def test_chat_tool_call(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="m", messages=HELLO_WORLD, tools=[CHAT_TOOL], extra_body={"fake": CALL}
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert (call.function.name, call.function.arguments) == ("get_time", ARGUMENTS)
    usage = completion.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (45, 10, 55)


def test_chat_arguments_text_is_sent_verbatim(raw: httpx.Client) -> None:
    text = '{"tz": "Europe/Paris"}'  # { " tz " : " Europe / Paris " } = 11, + get_time = 12
    body = chat(raw, fake={"tool_call": {"name": "get_time", "arguments": text}}).json()
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == text
    assert body["usage"]["completion_tokens"] == 12


def test_chat_stream_of_a_tool_call(oai: openai.OpenAI, raw: httpx.Client) -> None:
    stream = oai.chat.completions.create(
        model="m",
        messages=HELLO_WORLD,
        tools=[CHAT_TOOL],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"fake": {**CALL, "chunk_tokens": 4}},
    )
    chunks = list(stream)
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.tool_calls is not None
    opening = first.tool_calls[0]
    assert opening.index == 0 and opening.id and opening.id.startswith("call_") and opening.type == "function"
    assert opening.function is not None
    assert (opening.function.name, opening.function.arguments) == ("get_time", "")
    pieces = []
    for chunk in chunks[1:-2]:
        calls = chunk.choices[0].delta.tool_calls
        assert calls is not None and calls[0].id is None and calls[0].function is not None
        assert calls[0].function.name is None
        pieces.append(calls[0].function.arguments)
    assert pieces == ['{"tz"', ':"UTC"', "}"]  # 4 pieces a chunk: { " tz " | : " UTC " | }
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 10

    with oai.chat.completions.stream(
        model="m", messages=HELLO_WORLD, tools=[CHAT_TOOL], extra_body={"fake": CALL}
    ) as helper:
        final = helper.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.arguments == ARGUMENTS

    decoded = sse_json(chat(raw, stream=True, fake={**CALL, "chunk_tokens": 4, "running_usage": True}).text)
    assert [chunk["usage"]["completion_tokens"] for chunk in decoded] == [1, 5, 9, 10, 10]


def test_chat_tool_call_cut_by_the_bound(raw: httpx.Client) -> None:
    body = chat(raw, max_tokens=6).json()  # the name (1) and 5 pieces: { " tz " :
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"tz":'
    assert body["usage"]["completion_tokens"] == 6

    body = chat(raw, max_completion_tokens=6, fake={**CALL, "reasoning_tokens": 2}).json()
    # 2 hidden, the name, then 3 pieces: { " tz
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"tz'
    assert body["usage"]["completion_tokens"] == 6
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 2

    body = chat(raw, max_tokens=6, fake={**CALL, "ignore_max_tokens": True}).json()
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["usage"]["completion_tokens"] == 10


def test_chat_tool_call_needs_offered_tools(raw: httpx.Client) -> None:
    for extra in ({"tools": []}, {"tool_choice": "none"}):
        body = chat(raw, **extra).json()
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["choices"][0]["message"]["content"] == TWENTY
        assert "tool_calls" not in body["choices"][0]["message"]
    payload = {"model": "m", "messages": HELLO_WORLD, "fake": CALL}
    assert raw.post("/v1/chat/completions", json=payload).json()["choices"][0]["message"]["content"] == TWENTY


@pytest.mark.parametrize(
    "option",
    [
        "get_time",
        {"arguments": {}},
        {"name": "", "arguments": {}},
        {"name": "f", "arguments": "not json"},
        {"name": "f", "arguments": "[1]"},
        {"name": "f", "arguments": 5},
        {"name": "f", "arguments": {}, "extra": 1},
    ],
)
def test_bad_tool_call_option_is_400(raw: httpx.Client, option: Any) -> None:
    response = chat(raw, fake={"tool_call": option})
    assert response.status_code == 400
    assert "tool_call" in response.json()["error"]["message"]


def test_tool_call_arguments_default_to_an_empty_object(raw: httpx.Client) -> None:
    body = chat(raw, fake={"tool_call": {"name": "ping"}}).json()
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert body["usage"]["completion_tokens"] == 3  # ping { }


# ---------------------------------------------------------------- Anthropic


def test_anthropic_tool_use(ant: anthropic.Anthropic) -> None:
    message = ant.messages.create(
        model="c", max_tokens=100, messages=HELLO_WORLD, tools=[CLAUDE_TOOL], extra_body={"fake": CALL}
    )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use"
    assert block.id.startswith("toolu_")
    assert (block.name, block.input) == ("get_time", {"tz": "UTC"})
    assert (message.usage.input_tokens, message.usage.output_tokens) == (31, 10)


def test_anthropic_tool_use_stream(ant: anthropic.Anthropic, raw: httpx.Client) -> None:
    events = sse(claude(raw, stream=True).text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    payloads = [json.loads(data) for _, data in events]
    block = payloads[1]["content_block"]
    assert block["type"] == "tool_use" and block["name"] == "get_time" and block["input"] == {}
    deltas = [payload["delta"] for payload in payloads[3:5]]
    assert all(delta["type"] == "input_json_delta" for delta in deltas)
    assert [delta["partial_json"] for delta in deltas] == ['{"tz":', '"UTC"}']  # 5 pieces a chunk
    assert payloads[6]["delta"]["stop_reason"] == "tool_use"
    assert payloads[6]["usage"] == {"output_tokens": 10}

    with ant.messages.stream(
        model="c", max_tokens=100, messages=HELLO_WORLD, tools=[CLAUDE_TOOL], extra_body={"fake": CALL}
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].input == {"tz": "UTC"}


def test_anthropic_tool_use_cut_by_max_tokens(raw: httpx.Client) -> None:
    body = claude(raw, max_tokens=5).json()
    assert body["stop_reason"] == "max_tokens"
    assert body["content"][0]["type"] == "tool_use" and body["content"][0]["input"] == {}
    assert body["usage"]["output_tokens"] == 5
    payloads = sse_json(claude(raw, max_tokens=5, stream=True).text)
    partial = "".join(p["delta"]["partial_json"] for p in payloads if p["type"] == "content_block_delta")
    assert partial == '{"tz"'  # 4 pieces after the name


def test_anthropic_tool_choice_none_gives_text(raw: httpx.Client) -> None:
    body = claude(raw, tool_choice={"type": "none"}).json()
    assert body["stop_reason"] == "end_turn"
    assert body["content"] == [{"type": "text", "text": TWENTY}]


# ---------------------------------------------------------------- the endless agent loop


# The agent offers one function tool; the fake answers every turn with a call to it, the agent
# runs it and sends the result back, and so on until ``max_turns`` stops the run. Each turn adds
# to the prompt the call (chat: an assistant message, 4 + get_time 1 + arguments 9 = 14;
# Responses: a function_call item, the same 14) and its result "12:00" (12 : 00 = 3, + 4 = 7).
TURN_GROWTH = 14 + 7


def looping_agent(model: agents.Model, calls: list[str]) -> Agent[Any]:
    @agents.function_tool
    def get_time(tz: str) -> str:
        """The time now in a time zone."""
        calls.append(tz)
        return "12:00"

    return Agent(
        name="looper",
        instructions="Be nice.",
        tools=[get_time],
        model=model,
        model_settings=ModelSettings(extra_body={"fake": CALL}),
    )


async def run_loop(base: str, *, responses: bool, streamed: bool, turns: int) -> tuple[list[str], Any]:
    client = openai.AsyncOpenAI(api_key="k", base_url=f"{base}/v1", max_retries=0)
    model: agents.Model = (
        OpenAIResponsesModel(model="fake-gpt", openai_client=client)
        if responses
        else OpenAIChatCompletionsModel(model="fake-gpt", openai_client=client)
    )
    calls: list[str] = []
    agent = looping_agent(model, calls)
    config = RunConfig(tracing_disabled=True)
    try:
        with pytest.raises(agents.MaxTurnsExceeded) as caught:
            if streamed:
                result = Runner.run_streamed(agent, "What time is it?", max_turns=turns, run_config=config)
                async for _ in result.stream_events():
                    pass
            else:
                await Runner.run(agent, "What time is it?", max_turns=turns, run_config=config)
    finally:
        await client.close()
    return calls, caught.value


@pytest.mark.parametrize("responses", [False, True], ids=["chat", "responses"])
def test_agents_sdk_tool_loop_never_ends_on_its_own(responses: bool) -> None:
    with running(create_app()) as base:
        calls, error = asyncio.run(run_loop(base, responses=responses, streamed=False, turns=3))
        recorded = httpx.get(f"{base}/_fake/requests").json()
    assert calls == ["UTC", "UTC", "UTC"]  # the tool ran every turn
    assert [entry["path"] for entry in recorded] == [
        "/v1/responses" if responses else "/v1/chat/completions"
    ] * 3
    if responses:
        last = recorded[-1]["body"]["input"]
        kinds = [item.get("type", "message") for item in last]
        assert kinds == ["message", *["function_call", "function_call_output"] * 2]
        assert [item["output"] for item in last if item.get("type") == "function_call_output"] == [
            "12:00"
        ] * 2
    else:
        last = recorded[-1]["body"]["messages"]
        assert [message["role"] for message in last] == [
            "system",
            "user",
            "assistant",
            "tool",
            "assistant",
            "tool",
        ]
        assert last[2]["tool_calls"][0]["function"] == {"name": "get_time", "arguments": ARGUMENTS}
        assert last[3]["content"] == "12:00"
    usages = [response.usage for response in error.run_data.raw_responses]
    assert [usage.output_tokens for usage in usages] == [10, 10, 10]
    prompts = [usage.input_tokens for usage in usages]
    assert [b - a for a, b in itertools.pairwise(prompts)] == [TURN_GROWTH, TURN_GROWTH]


@pytest.mark.parametrize("responses", [False, True], ids=["chat", "responses"])
def test_agents_sdk_streamed_tool_loop(url: str, responses: bool) -> None:
    calls, _ = asyncio.run(run_loop(url, responses=responses, streamed=True, turns=2))
    assert calls == ["UTC", "UTC"]
