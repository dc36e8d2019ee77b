"""``Session.fit`` (issue 19, item 3): conversations with parallel tool calls trimmed to an input
bound, pairs kept together, the result counted here independently (tiktoken ``o200k_base`` with
the OpenAI cookbook's chat framing: 3 tokens to prime the reply, 3 per message, plus the role,
content, and each tool call's name and arguments); summaries charged to the session.
"""

from __future__ import annotations

import json

import openai
import pytest

import tokenward
from tests.support.fixtures import UPSTREAM_KEY
from tokenward.core.budgets import Subject
from tokenward.core.tokenizers import encoding

ENC = encoding("o200k_base")


def _tokens(text: str) -> int:
    return len(ENC.encode(text))


def cookbook_count(messages: list[dict]) -> int:
    """The OpenAI cookbook's count of a chat prompt (gpt-4o family)."""
    total = 3
    for m in messages:
        total += 3 + _tokens(m["role"])
        if isinstance(m.get("content"), str):
            total += _tokens(m["content"])
        for call in m.get("tool_calls") or []:
            total += _tokens(call["function"]["name"]) + _tokens(call["function"]["arguments"])
    return total


def chat_history(turns: int = 6, parallel: int = 3) -> list[dict]:
    messages: list[dict] = [{"role": "system", "content": "You are a careful travel agent."}]
    for t in range(turns):
        messages.append({"role": "user", "content": f"Turn {t}: compare the weather in three cities please."})
        calls = [
            {
                "id": f"call_{t}_{k}",
                "type": "function",
                "function": {"name": "weather", "arguments": json.dumps({"city": f"city-{t}-{k}"})},
            }
            for k in range(parallel)
        ]
        messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        for k in range(parallel):
            messages.append(
                {"role": "tool", "tool_call_id": f"call_{t}_{k}", "content": f"sunny, {20 + k} degrees"}
            )
        messages.append({"role": "assistant", "content": f"In turn {t} all three cities are sunny and warm."})
    return messages


def _pairs_whole_chat(messages: list[dict]) -> None:
    asked = {c["id"] for m in messages for c in m.get("tool_calls") or []}
    answered = {m["tool_call_id"] for m in messages if m["role"] == "tool"}
    assert asked == answered


@pytest.fixture
def guard() -> tokenward.Guard:
    g = tokenward.Guard("memory://", on_unattributed="ignore")
    yield g
    g.close()


def test_chat_with_parallel_tool_calls_fits_and_keeps_pairs(guard) -> None:
    history = chat_history()
    full = cookbook_count(history)
    bound = full // 2
    with guard.session("s-fit") as session:
        fitted = session.fit(history, model="gpt-4o-mini", max_input_tokens=bound, keep_last=2)
    assert cookbook_count(list(fitted)) <= bound < full
    assert fitted.tokens <= bound and fitted.dropped > 0
    assert fitted[0] == history[0]  # the system prompt
    assert fitted[-2:] == history[-2:]  # the last turns
    _pairs_whole_chat(list(fitted))
    assert list(fitted) == [history[0], *history[len(history) - len(fitted) + 1 :]]  # oldest dropped
    # Tight bounds too: at every bound the pairs stay whole and the count fits.
    for tight in range(bound, 60, -37):
        try:
            out = guard_session_fit(guard, history, tight)
        except tokenward.ContextTooLarge as exc:
            assert exc.needed > tight
            break
        assert cookbook_count(list(out)) <= tight
        _pairs_whole_chat(list(out))


def guard_session_fit(guard, history, bound):
    with guard.session("s-fit-2") as session:
        return session.fit(history, model="gpt-4o-mini", max_input_tokens=bound, keep_last=1)


def test_responses_items_keep_function_call_pairs(guard) -> None:
    items: list[dict] = [{"type": "message", "role": "developer", "content": "Be brief."}]
    for t in range(5):
        items.append({"type": "message", "role": "user", "content": f"question {t} about three files"})
        for k in range(3):
            items.append(
                {"type": "function_call", "call_id": f"fc_{t}_{k}", "name": "read", "arguments": '{"f": 1}'}
            )
        for k in range(3):
            items.append(
                {"type": "function_call_output", "call_id": f"fc_{t}_{k}", "output": "file text " * 5}
            )
    with guard.session("s-resp") as session:
        whole = session.fit(items, model="gpt-4o-mini", max_input_tokens=100_000)
        fitted = session.fit(items, model="gpt-4o-mini", max_input_tokens=whole.tokens // 2)
    assert fitted.tokens <= whole.tokens // 2 and fitted.dropped > 0 and fitted[0] == items[0]
    calls = {i["call_id"] for i in fitted if i["type"] == "function_call"}
    outputs = {i["call_id"] for i in fitted if i["type"] == "function_call_output"}
    assert calls == outputs
    assert fitted[1]["type"] == "message" and fitted[1]["role"] == "user"  # cut at a turn's start


@pytest.mark.parametrize(
    ("call", "arguments"),
    [
        ("custom_tool_call", {"name": "code_exec", "input": "print(1) " * 40}),
        ("computer_call", {"action": {"type": "screenshot"}, "pending_safety_checks": []}),
        ("local_shell_call", {"action": {"type": "exec", "command": ["ls", "-la"]}}),
    ],
)
def test_responses_tool_calls_of_every_kind_stay_with_their_outputs(guard, call, arguments) -> None:
    # A Responses tool call of any kind is answered by ``<type>_output`` with its call_id (OpenAI
    # API reference, Responses input items); an output kept without its call is refused by the API.
    items: list[dict] = [{"type": "message", "role": "user", "content": "old question " * 200}]
    items.append({"type": call, "call_id": "c1", **arguments})
    items.append({"type": f"{call}_output", "call_id": "c1", "output": "result " * 150})
    items.append({"type": "message", "role": "user", "content": "thanks"})
    fits = 0
    with guard.session("s-kinds") as session:
        whole = session.fit(items, model="gpt-4o-mini", max_input_tokens=100_000)
        for bound in range(whole.tokens, 0, -10):  # every cut the bound can force
            try:
                fitted = session.fit(items, model="gpt-4o-mini", max_input_tokens=bound)
            except tokenward.ContextTooLarge:
                break
            fits += 1
            assert fitted.tokens <= bound
            calls = {i["call_id"] for i in fitted if i["type"] == call}
            outputs = {i["call_id"] for i in fitted if i["type"] == f"{call}_output"}
            assert calls == outputs, (bound, [i["type"] for i in fitted])
    assert fits > 1


def test_anthropic_tool_use_and_result_stay_together(guard) -> None:
    messages: list[dict] = []
    for t in range(5):
        messages.append({"role": "user", "content": f"step {t}: look up two records"})
        messages.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": f"tu_{t}_{k}", "name": "lookup", "input": {"id": t * 10 + k}}
                    for k in range(2)
                ],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"tu_{t}_{k}", "content": "record " * 8}
                    for k in range(2)
                ],
            }
        )
        messages.append({"role": "assistant", "content": f"done with step {t}"})
    with guard.session("s-claude") as session:
        whole = session.fit(messages, model="claude-sonnet-4-5", max_input_tokens=100_000, system="Be exact.")
        fitted = session.fit(
            messages, model="claude-sonnet-4-5", max_input_tokens=whole.tokens // 2, system="Be exact."
        )
    assert fitted.dropped > 0 and fitted.tokens <= whole.tokens // 2
    uses = {
        b["id"]
        for m in fitted
        if isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "tool_use"
    }
    results = {
        b["tool_use_id"]
        for m in fitted
        if isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "tool_result"
    }
    assert uses == results
    assert fitted[0]["role"] == "user" and isinstance(fitted[0]["content"], str)


def test_what_must_be_kept_over_the_bound_is_an_error(guard) -> None:
    history = chat_history(turns=2)
    with guard.session("s-small") as session, pytest.raises(tokenward.ContextTooLarge) as caught:
        session.fit(history, model="gpt-4o-mini", max_input_tokens=20, keep_last=1)
    assert caught.value.bound == 20 and caught.value.needed > 20
    assert "max_input_tokens" in str(caught.value)


@pytest.mark.parametrize(
    "bound",
    [{"max_input_tokens": "12"}, {"max_input_tokens": 1.5}, {"max_input_tokens": -1}, {"share": "abc"},
     {"share": "nan"}, {"share": "2"}],
)  # fmt: skip
def test_a_bad_bound_is_a_validation_error(guard, bound) -> None:
    with (
        guard.session("s-bad", budget="total_tokens=1000") as session,
        pytest.raises(tokenward.ValidationError),
    ):
        session.fit(chat_history(turns=1), model="gpt-4o-mini", **bound)


def test_share_of_what_the_session_can_pay_for(guard) -> None:
    history = chat_history()
    with guard.session("s-share", budget="total_tokens=400") as session:
        fitted = session.fit(history, model="gpt-4o-mini", share="0.5")
    assert fitted.bound == 200 and cookbook_count(list(fitted)) <= 200


def test_summarize_charges_the_session_and_falls_back_when_refused(fake, guard) -> None:
    client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    history = chat_history()
    bound = cookbook_count(history) // 2
    with guard.session("s-sum", budget="total_tokens=100000") as session:
        fitted = session.fit(
            history, model="gpt-4o-mini", max_input_tokens=bound, strategy="summarize",
            client=client, summary_model="gpt-4o-mini", summary_max_tokens=12,
        )  # fmt: skip
    assert fitted.summarised and fitted.fallback is None and fitted.tokens <= bound
    assert fitted[1]["content"] == "Summary of the earlier conversation: " + " ".join(["hello"] * 12)
    _pairs_whole_chat(list(fitted))
    (event,) = guard.ledger.events(subject=Subject(session="s-sum"))
    assert event.usage.output_tokens == 12 and event.model == "gpt-4o-mini"

    # A session whose budget cannot pay for the summary call: the oldest turns are dropped.
    with guard.session("s-poor", budget="total_tokens=30;action=deny") as session:
        fallback = session.fit(
            history, model="gpt-4o-mini", max_input_tokens=bound, strategy="summarize",
            client=client, summary_model="gpt-4o-mini", summary_max_tokens=12,
        )  # fmt: skip
    assert not fallback.summarised and fallback.fallback.startswith("summary call refused")
    assert fallback.tokens <= bound and cookbook_count(list(fallback)) <= bound
    assert guard.ledger.events(subject=Subject(session="s-poor")) == []


def test_async_fit_summarizes_through_an_async_client(fake, guard) -> None:
    import asyncio

    client = guard.wrap(openai.AsyncOpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    history = chat_history()
    bound = cookbook_count(history) // 2

    async def main():
        with guard.session("s-async-sum") as session:
            return await session.afit(
                history, model="gpt-4o-mini", max_input_tokens=bound, strategy="summarize",
                client=client, summary_model="gpt-4o-mini", summary_max_tokens=8,
            )  # fmt: skip

    fitted = asyncio.run(main())
    assert fitted.summarised and cookbook_count(list(fitted)) <= bound
    (event,) = guard.ledger.events(subject=Subject(session="s-async-sum"))
    assert event.usage.output_tokens == 8


@pytest.mark.parametrize(
    "messages, options",
    [
        (["hello", "world"], {}),  # strings, not messages
        ([{"role": "user", "content": "hi"}, None], {}),
        ("hello there", {}),  # a string, not a list
        ({"role": "user", "content": "hi"}, {}),  # one message, not a list
        ([{"role": "user", "content": "hi " * 50}, {"role": "user", "content": "x"}], {"keep_last": 1.5}),
        ([{"role": "user", "content": "hi " * 50}, {"role": "user", "content": "x"}], {"keep_last": "2"}),
        ([{"role": "user", "content": "hi"}], {"format": "gemini"}),  # fits, still a mistake
    ],
)
def test_malformed_messages_and_options_are_validation_errors(guard, messages, options) -> None:
    # they were AttributeError / TypeError from deep inside, or silently accepted while fitting
    with guard.session("s-malformed") as session:
        with pytest.raises(tokenward.ValidationError):
            session.fit(messages, model="gpt-4o-mini", max_input_tokens=20, **options)
        import asyncio

        with pytest.raises(tokenward.ValidationError):
            asyncio.run(session.afit(messages, model="gpt-4o-mini", max_input_tokens=20, **options))
