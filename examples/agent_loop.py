"""A small agent loop that runs into its budget and finishes gracefully with a partial answer.

Runs offline: the "LLM" is tokenward's fake provider, in-process, told to answer every call that
offers tools with a tool call, so the agent would loop for ever. The session's budget stops it:
before each step the agent reads what is left (``guard.remaining()``, ``guard.budget_note()``),
and when only its final-answer reserve is left it stops calling tools and writes its answer with
the reserve (``guard.final_answer()``).

    pip install -e '.[examples]'      # once: tokenward and the OpenAI client
    python examples/agent_loop.py
"""

from __future__ import annotations

import asyncio
import json

import httpx2
from openai import AsyncOpenAI

import tokenward
from tokenward.fake import create_app

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the notes.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    }
]
STEP_TOKENS = 60  # the most output one step may use


def search(query: str) -> str:
    return f"no notes match {query!r} yet"


async def main() -> None:
    guard = tokenward.Guard("memory://")
    fake = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=create_app()))
    behaviour = {"tool_call": {"name": "search", "arguments": {"query": "budgets"}}, "reply_tokens": 40}
    client = guard.wrap(
        AsyncOpenAI(
            base_url="http://fake/v1",
            api_key="unused",
            http_client=fake,
            default_headers={"x-fake-options": json.dumps(behaviour)},
        )
    )
    messages: list[dict] = [
        {"role": "system", "content": "You research a question with the search tool, then answer."},
        {"role": "user", "content": "What do we know about token budgets?"},
    ]
    with guard.session(
        "demo", user="alice", budget="total_tokens=1200", reserve={"total_tokens": 250}
    ) as session:
        step = 0
        while True:
            step += 1
            left = session.remaining().get("total_tokens", 0)
            print(f"step {step}: {session.budget_note()}")
            if left < STEP_TOKENS + 150:  # not enough for another research step
                break
            try:
                reply = await client.chat.completions.create(
                    model="gpt-4o-mini", messages=messages, tools=TOOLS, max_tokens=STEP_TOKENS
                )
            except tokenward.BudgetExceeded as exc:
                print(f"  the budget refused the step: {exc}")
                break
            message = reply.choices[0].message
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls or []:
                result = search(**json.loads(call.function.arguments))
                print(f"  tool {call.function.name} -> {result}")
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
            if not message.tool_calls:
                print(f"  answer: {message.content}")
                return
        # Out of room for research: answer with what we have, using the final-answer reserve.
        messages.append({"role": "user", "content": "Budget nearly spent: give your best answer now."})
        with guard.final_answer():
            final = await client.chat.completions.create(
                model="gpt-4o-mini", messages=messages, max_tokens=40
            )
        print(f"partial answer after {step - 1} research steps: {final.choices[0].message.content}")
    spent = sum(e.charged["total_tokens"] for e in guard.ledger.events())
    print(f"tokens spent: {spent} of 1200 ({len(guard.ledger.events())} calls)")


if __name__ == "__main__":
    asyncio.run(main())
