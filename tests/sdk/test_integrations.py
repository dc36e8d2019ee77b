"""Agent frameworks with the real packages against the fake provider: LangChain, pydantic-ai and
the OpenAI Agents SDK. The fake answers with a tool call whenever tools are offered (option
``tool_call``), so an agent loops until its budget stops it."""

from __future__ import annotations

import asyncio
import json

import pytest

import tokenward
from tests.support.fixtures import UPSTREAM_KEY

TOOL_LOOP = json.dumps({"tool_call": {"name": "lookup", "arguments": {"query": "hello"}}, "reply_tokens": 8})


def test_langchain_calls_are_guarded_and_a_spent_budget_ends_the_run(fake) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    from tokenward.sdk.integrations.langchain import GuardedChatOpenAI

    @tool
    def lookup(query: str) -> str:
        """Look something up."""
        return "nothing found"

    guard = tokenward.Guard("memory://")
    llm = GuardedChatOpenAI(
        guard=guard,
        model="gpt-4o-mini",
        base_url=f"{fake.url}/v1",
        api_key=UPSTREAM_KEY,
        max_retries=0,
        max_tokens=20,
        default_headers={"x-fake-options": TOOL_LOOP},
    ).bind_tools([lookup])
    messages = [HumanMessage("Find hello")]
    with guard.session("s-lc", budget="total_tokens=400"):
        for _ in range(50):  # a tool loop that would never end on its own
            reply = llm.invoke(messages)
            messages.append(reply)
            if not reply.tool_calls:
                break
            for call in reply.tool_calls:
                messages.append(ToolMessage(lookup.invoke(call["args"]), tool_call_id=call["id"]))
    final = messages[-1]
    assert not final.tool_calls
    assert final.response_metadata["tokenward"]["stopped"] is True
    assert final.response_metadata["tokenward"]["budget"] == "session=s-lc:total_tokens"
    events = guard.ledger.events()
    assert len(events) >= 3
    assert sum(e.charged["total_tokens"] for e in events) <= 400


def test_pydantic_ai_runs_and_stops_with_a_partial_result(fake) -> None:
    from pydantic_ai import Agent

    from tokenward.sdk.integrations.pydantic_ai import guarded_openai_model, run_within_budget

    guard = tokenward.Guard("memory://")
    model = guarded_openai_model(guard, "gpt-4o-mini", base_url=f"{fake.url}/v1", api_key=UPSTREAM_KEY)
    agent = Agent(model)
    with guard.session("s-pai"):
        result = asyncio.run(agent.run("Say hello"))
    assert result.output == " ".join(["hello"] * 20)
    (event,) = guard.ledger.events()
    assert event.usage.output_tokens == 20 and event.subject.session == "s-pai"

    looping = Agent(
        guarded_openai_model(
            guard,
            "gpt-4o-mini",
            openai_client=__import__("openai").AsyncOpenAI(
                base_url=f"{fake.url}/v1", api_key=UPSTREAM_KEY, default_headers={"x-fake-options": TOOL_LOOP}
            ),
        )
    )

    @looping.tool_plain
    def lookup(query: str) -> str:
        """Look something up."""
        return "nothing found"

    with guard.session("s-pai-loop", budget="total_tokens=300"):
        run = asyncio.run(run_within_budget(looping, "Find hello", model_settings={"max_tokens": 20}))
    assert run.output is None and isinstance(run.stopped_by, tokenward.BudgetExceeded)
    assert len(run.messages) >= 3


def test_openai_agents_run_ends_with_a_partial_result(fake) -> None:
    from agents import Agent, ModelSettings, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    from tokenward.sdk.integrations.openai_agents import guarded_model, run_within_budget

    set_tracing_disabled(True)

    @function_tool
    def lookup(query: str) -> str:
        """Look something up."""
        return "nothing found"

    guard = tokenward.Guard("memory://")
    client = AsyncOpenAI(
        base_url=f"{fake.url}/v1", api_key=UPSTREAM_KEY, default_headers={"x-fake-options": TOOL_LOOP}
    )
    agent = Agent(
        name="looper",
        instructions="Use the tool.",
        tools=[lookup],
        model=guarded_model(guard, "gpt-4o-mini", openai_client=client),
        model_settings=ModelSettings(max_tokens=20),
    )
    with guard.session("s-agents", budget="total_tokens=500"):
        run = asyncio.run(run_within_budget(agent, "Find hello", max_turns=100))
    assert not run.complete and isinstance(run.stopped_by, tokenward.BudgetExceeded)
    assert run.stopped_by.budget == "session=s-agents:total_tokens"
    assert any(type(item).__name__ == "ToolCallItem" for item in run.new_items)
    assert sum(e.charged["total_tokens"] for e in guard.ledger.events()) <= 500


def test_openai_agents_complete_run(fake) -> None:
    from agents import Agent, set_tracing_disabled

    from tokenward.sdk.integrations.openai_agents import guarded_model, run_within_budget

    set_tracing_disabled(True)
    guard = tokenward.Guard("memory://")
    agent = Agent(
        name="greeter",
        model=guarded_model(guard, "gpt-4o-mini", base_url=f"{fake.url}/v1", api_key=UPSTREAM_KEY),
    )
    run = asyncio.run(run_within_budget(agent, "Say hello"))
    assert run.complete and run.final_output == " ".join(["hello"] * 20)
    assert len(guard.ledger.events()) == 1


def test_missing_framework_names_the_extra(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "langchain_openai", None)
    monkeypatch.delitem(sys.modules, "tokenward.sdk.integrations.langchain", raising=False)
    with pytest.raises(tokenward.MissingDependency, match=r"tokenward\[langchain\]"):
        __import__("tokenward.sdk.integrations.langchain")
