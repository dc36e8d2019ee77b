"""The official ``openai`` and ``anthropic`` clients, wrapped by ``tokenward.Guard``, against the
fake provider on a real socket: sync and async, streamed and not.

Expected counts come from the fake provider's documented rules (replies are ``hello`` repeated,
k words = k tokens; prompts count ``\\w+|[^\\w\\s]`` pieces plus 4 per message).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import anthropic
import openai
import pytest

import tokenward
from tests.support.fixtures import UPSTREAM_KEY
from tokenward.core.budgets import Subject

HELLO_20 = " ".join(["hello"] * 20)
MESSAGES = [{"role": "user", "content": "Say hello"}]
FAKE_PROMPT = 6


@pytest.fixture
def guard() -> tokenward.Guard:
    return tokenward.Guard("memory://", project="demo")


def oai(fake, guard: tokenward.Guard) -> openai.OpenAI:
    return guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))


def test_openai_sync_json_and_stream_are_recorded(fake, guard) -> None:
    client = oai(fake, guard)
    with guard.session("s-1", user="alice", agent="writer"):
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert reply.choices[0].message.content == HELLO_20
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == HELLO_20
    assert all(c.usage is None for c in chunks)  # usage was requested upstream, not by this client
    events = guard.ledger.events()
    assert [(e.usage.input_tokens, e.usage.output_tokens) for e in events] == [(FAKE_PROMPT, 20)] * 2
    assert all(e.usage.complete for e in events)
    assert events[0].subject == Subject(
        project="demo", user="alice", agent="writer", session="s-1", model="gpt-4o-mini"
    )


def test_openai_async_json_and_stream(fake, guard) -> None:
    client = guard.wrap(openai.AsyncOpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))

    async def main() -> tuple[str, str]:
        with guard.session("s-async"):
            reply = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        return reply.choices[0].message.content, text

    json_text, stream_text = asyncio.run(main())
    assert json_text == stream_text == HELLO_20
    events = guard.ledger.events(subject=Subject(session="s-async"))
    assert len(events) == 2 and all(e.usage.output_tokens == 20 for e in events)


def test_anthropic_sync_and_async(fake, guard) -> None:
    sync = guard.wrap(anthropic.Anthropic(api_key=UPSTREAM_KEY, base_url=fake.url, max_retries=0))
    aio = guard.wrap(anthropic.AsyncAnthropic(api_key=UPSTREAM_KEY, base_url=fake.url, max_retries=0))
    with guard.session("s-claude"):
        message = sync.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
        with sync.messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES) as stream:
            streamed = "".join(stream.text_stream)

        async def main() -> str:
            reply = await aio.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
            return reply.content[0].text

        async_text = asyncio.run(main())
    assert message.content[0].text == streamed == async_text == HELLO_20
    events = guard.ledger.events(subject=Subject(session="s-claude"))
    assert len(events) == 3
    assert all((e.usage.input_tokens, e.usage.output_tokens) == (FAKE_PROMPT, 20) for e in events)


def test_a_denial_raises_budget_exceeded_without_retries(fake) -> None:
    guard = tokenward.Guard("memory://", budgets=["session:total_tokens=40"])
    client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=3))
    with guard.session("s-deny"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)  # 26 tokens
        with pytest.raises(tokenward.BudgetExceeded) as denied:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    assert isinstance(denied.value, openai.OpenAIError)
    assert denied.value.budget == "session:total_tokens=40" and denied.value.limit == 40
    assert denied.value.used == 26
    assert len(guard.ledger.events()) == 1


def test_anthropic_denial_is_not_wrapped_as_a_connection_error(fake) -> None:
    guard = tokenward.Guard("memory://", budgets=["session:total_tokens=10"])
    client = guard.wrap(anthropic.Anthropic(api_key=UPSTREAM_KEY, base_url=fake.url, max_retries=2))
    with guard.session("s"), pytest.raises(tokenward.BudgetExceeded) as denied:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES)
    assert isinstance(denied.value, anthropic.AnthropicError)
    assert not isinstance(denied.value, anthropic.APIConnectionError)


def test_a_stream_cut_at_its_hold_ends_cleanly_and_says_so(fake) -> None:
    guard = tokenward.Guard("memory://")
    client = oai(fake, guard)
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        max_tokens=9,
        stream=True,
        extra_body={"fake": {"ignore_max_tokens": True, "reply_tokens": 100}},
    )
    chunks = list(stream)  # no exception after the text
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " ".join(["hello"] * 9)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].tokenward == {"cut_off": True, "reason": "budget"}
    (event,) = guard.ledger.events()
    # chunks of 5 words: the second (words 6-10) crossed 9; all 10 arrived and are charged
    assert event.status == "cut_off" and event.usage.output_tokens == 10
    assert event.metadata["received_beyond_cut_tokens"] == 1


def test_a_clamped_answer_names_the_budget(fake) -> None:
    guard = tokenward.Guard("memory://", budgets=["session:total_tokens=30"])
    client = oai(fake, guard)
    with guard.session("s-clamp"):
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=100)
    # room 30 - our prompt estimate 9 = 21 output tokens at most; the fake answers 20
    assert reply.tokenward == {"clamped_by": "session:total_tokens=30", "max_output_tokens": 21}


def test_final_answer_reserve(fake) -> None:
    guard = tokenward.Guard("memory://")
    client = oai(fake, guard)
    with guard.session("s-final", budget="total_tokens=100", reserve={"total_tokens": 40}):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)  # 26
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)  # 52
        assert guard.remaining() == {"total_tokens": 100 - 52 - 40}
        with pytest.raises(tokenward.BudgetExceeded):  # 8 left outside the reserve: under the minimum output
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
        with guard.final_answer():
            final = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
        assert final.choices[0].message.content == HELLO_20
        assert "40 tokens are kept for your final answer" in guard.budget_note()
    assert (
        guard.ledger.get_budget("session=s-final:total_tokens") is None
    )  # the session's budget ended with it


@pytest.mark.parametrize(
    ("reserve", "words"),
    [
        ({"total_tokens": -1000}, "reserve total_tokens must be a number >= 0"),
        ({"total_tokens": "NaN"}, "reserve total_tokens must be a number >= 0"),
        ({"total_tokens": "2k"}, "'2k' is not a number"),
        ({"total_token": 40}, "unknown meter 'total_token'; did you mean 'total_tokens'"),
    ],
)
def test_a_reserve_that_cannot_be_meant_is_refused(fake, reserve, words) -> None:
    """A negative reserve was room added to the session's hard budget (-1000 let five 26-token
    calls through a 60-token budget); a mistyped meter reserved nothing, without a word; "2k"
    raised decimal.InvalidOperation. Each is a ConfigError before anything is sent."""
    guard = tokenward.Guard("memory://")
    client = oai(fake, guard)
    with (
        pytest.raises(tokenward.ConfigError, match=words),
        guard.session("s-r", budget="total_tokens=60", reserve=reserve),
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    assert guard.ledger.events() == []
    with guard.session("s-r", budget="total_tokens=60", reserve={"total_tokens": "0"}):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)  # 26
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)  # 52
        with pytest.raises(tokenward.BudgetExceeded):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)


def test_one_budget_spec_on_its_own_is_one_budget(fake) -> None:
    """``Guard(budgets="user=alice:...")`` (one spec, not a list) was read one character at a time:
    "budget spec 'u': expected SCOPE[=ID]:METER=LIMIT..."."""
    guard = tokenward.Guard("memory://", budgets="user=alice:total_tokens=30", user="alice")
    assert [b.name for b in guard.ledger.budgets()] == ["user=alice:total_tokens=30"]
    client = oai(fake, guard)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)  # 26
    with pytest.raises(tokenward.BudgetExceeded):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)


def test_budget_note_and_remaining(fake) -> None:
    guard = tokenward.Guard("memory://", budgets=["user=alice:cost_usd=0.01/day"])
    client = oai(fake, guard)
    with guard.session("s-note", user="alice", budget="total_tokens=1000"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        left = guard.remaining()
        note = guard.budget_note()
    assert left["total_tokens"] == 1000 - 26
    # gpt-4o-mini at $0.15 / $0.60 per 1M tokens: 6 x 0.15 + 20 x 0.60 = 12.9 micro-dollars
    assert left["cost_usd"] == Decimal("0.01") - Decimal("0.0000129")
    assert note.startswith("Budget: 974 of 1,000 tokens left for this session (97%).")
    assert "$0.009987 of $0.01 left for this user (99%, resets" in note


def test_degrade_switches_to_the_cheaper_model_when_the_budget_runs_low(fake) -> None:
    policy = tokenward.Degrade(below="0.5", models={"gpt-4o": "gpt-4o-mini"})
    guard = tokenward.Guard("memory://", degrade=policy)
    client = oai(fake, guard)
    with guard.session("s-degrade", budget="total_tokens=100"):
        first = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=20)
        second = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=20)
        third = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=20)
    assert [first.model, second.model, third.model] == [
        "gpt-4o",
        "gpt-4o",
        "gpt-4o-mini",
    ]  # 48 % left at the third
    assert third.tokenward["degraded"] == {"model": "gpt-4o-mini"}
    assert guard.ledger.events()[-1].metadata["degraded"] == {"model": "gpt-4o-mini"}


def test_threshold_callbacks_sync_and_async(fake) -> None:
    guard = tokenward.Guard("memory://", budgets=["session:total_tokens=100"])
    client = oai(fake, guard)
    seen: list[tuple[str, str]] = []
    guard.on_threshold(lambda c: seen.append(("sync", str(c.threshold))), thresholds=["0.5", "0.8"])

    async def note(crossing) -> None:
        seen.append(("async", str(crossing.threshold)))

    guard.on_threshold(note, thresholds=["0.5"])
    with guard.session("s-th"):
        for _ in range(3):
            client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, max_tokens=20
            )  # 26, 52, 78
    assert seen == [("sync", "0.5"), ("async", "0.5")]
    with guard.session("s-th"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)  # 78 + 11 = 89
    assert seen[-1] == ("sync", "0.8") and len(seen) == 3


def test_attribution_follows_asyncio_tasks_and_bound_threads(fake, guard) -> None:
    import concurrent.futures

    client = oai(fake, guard)
    with guard.session("s-outer", user="alice"), guard.task("t-1"):
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            pool.submit(
                tokenward.sdk.bind(client.chat.completions.create), model="gpt-4o-mini", messages=MESSAGES
            ).result()

        aio = guard.wrap(openai.AsyncOpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))

        async def main() -> None:
            await asyncio.gather(
                *(aio.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES) for _ in range(3))
            )

        asyncio.run(main())
    events = guard.ledger.events()
    assert len(events) == 4
    assert {(e.subject.session, e.subject.task, e.subject.user) for e in events} == {
        ("s-outer", "t-1", "alice")
    }


def test_responses_completions_and_embeddings_are_guarded(fake, guard) -> None:
    """Every usage-producing endpoint the ``openai`` client offers is metered, not only chat."""
    client = oai(fake, guard)
    with guard.session("s-endpoints"):
        reply = client.responses.create(model="gpt-4o-mini", input="Say hello")
        streamed = list(client.responses.create(model="gpt-4o-mini", input="Say hello", stream=True))
        text = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hello")
        vectors = client.embeddings.create(model="text-embedding-3-small", input="Say hello")
    assert reply.output_text == HELLO_20 and streamed[-1].type == "response.completed"
    assert text.choices[0].text == " ".join(["hello"] * 16)  # legacy completions: max_tokens 16
    assert len(vectors.data[0].embedding) == 1536
    events = guard.ledger.events()
    # Fake counts: a Responses input item is 4 + its pieces; completion prompts and embedding
    # inputs are their pieces alone ("Say", "hello").
    assert [(e.endpoint, e.usage.input_tokens, e.usage.output_tokens) for e in events] == [
        ("openai-responses", 6, 20),
        ("openai-responses", 6, 20),
        ("openai-chat", 2, 16),  # the legacy endpoints share chat's usage dialect
        ("openai-chat", 2, 0),
    ]
    assert all(e.subject.session == "s-endpoints" for e in events)


def test_a_responses_call_is_refused_when_the_budget_is_spent(fake) -> None:
    guard = tokenward.Guard("memory://", budgets=["session:total_tokens=20"])
    client = oai(fake, guard)
    with guard.session("s-spent"), pytest.raises(tokenward.BudgetExceeded):
        client.responses.create(model="gpt-4o-mini", input="Say hello", max_output_tokens=40)
    assert guard.ledger.events() == []


def test_threshold_callbacks_of_a_rolling_window_fire_once_per_rise(fake) -> None:
    """Issue 15 item 7 in the SDK: ``on_threshold`` used to fire again in every 1 s bucket."""
    from datetime import UTC, datetime, timedelta

    from tokenward.clock import ManualClock
    from tokenward.ledger import open_ledger

    clock = ManualClock(datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC))
    guard = tokenward.Guard(
        open_ledger("memory://", clock=clock), budgets=["user=alice:total_tokens=100/rolling:1m"]
    )
    client = oai(fake, guard)
    seen: list[str] = []
    guard.on_threshold(lambda crossing: seen.append(crossing.window_key), thresholds=["0.5"])
    with guard.session("s-roll", user="alice"):
        for second in (0, 1, 2):  # 26 tokens a call, each in a bucket of its own: 26, 52 (50%), 78
            clock.set(datetime(2026, 3, 2, 12, 0, second, tzinfo=UTC))
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
        clock.advance(timedelta(seconds=70))  # everything stopped counting: below 50%
        for _ in range(2):  # 52: a new rise
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    assert seen == ["r1:2026-03-02T12:00:01Z", "r1:2026-03-02T12:01:12Z"]


def test_remaining_outside_a_session_reports_the_guards_user_budgets() -> None:
    """Issue 15 item 14: the README's ``Guard(budgets=["user=alice:..."])`` used to report ``{}``
    and "No budget limits this work." outside a session."""
    guard = tokenward.Guard("memory://", budgets=["user=alice:cost_usd=5/day", "session:total_tokens=100"])
    assert guard.remaining() == {"cost_usd": Decimal(5)}
    assert "$5 left for this user" in guard.budget_note()
    with guard.session("s-1", user="alice"):
        assert guard.remaining() == {"cost_usd": Decimal(5), "total_tokens": Decimal(100)}
    with guard.session("s-2", user="bob"):
        assert guard.remaining() == {"total_tokens": Decimal(100)}  # bob: only the session template
    assert guard.remaining(Subject(user="bob")) == {}  # an explicit subject is taken as it is
    two = tokenward.Guard("memory://", budgets=["user=alice:cost_usd=5", "user=bob:cost_usd=7"])
    assert two.remaining() == {}  # which user is meant is not known: nothing is guessed
    assert tokenward.Guard("memory://", budgets=["user=alice:cost_usd=5"], user="bob").remaining() == {}


def test_calls_outside_a_session_are_charged_to_the_user_remaining_reports(fake) -> None:
    """``Guard(budgets=["user=alice:total_tokens=30"])`` with calls made outside every session:
    ``budget_note()`` told the agent "30 of 30 tokens left for this user" after four 26-token
    calls, which were charged to no user, so alice's budget never applied. They are charged to
    the one user the guard's budgets name, as ``remaining()`` reports; inside a session that names
    no user, and for a guard naming two users, nothing is guessed (as ``remaining()``)."""
    guard = tokenward.Guard("memory://", budgets=["user=alice:total_tokens=30"])
    client = oai(fake, guard)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)  # 26
    assert guard.remaining() == {"total_tokens": Decimal(4)}
    with pytest.raises(tokenward.BudgetExceeded) as denied:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    assert denied.value.budget == "user=alice:total_tokens=30"
    with guard.session("s-anon"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
        assert guard.remaining() == {}
    assert [e.subject.user for e in guard.ledger.events()] == ["alice", None]
    two = tokenward.Guard("memory://", budgets=["user=alice:total_tokens=30", "user=bob:total_tokens=30"])
    client = oai(fake, two)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    assert [e.subject.user for e in two.ledger.events()] == [None, None]


def test_a_session_opened_inside_another_is_refused_not_left_to_drop_the_outer_budget(fake, guard) -> None:
    """A call has one session: a session opened inside another took its place, and the budget
    the outer block declared stopped applying (52 tokens went through a 30-token budget). It is
    refused, naming both, before anything is charged; the outer session goes on as before. An
    outer session that declared no budget of its own loses nothing: nesting it stays allowed."""
    client = oai(fake, guard)
    with guard.session("s1", budget="total_tokens=30"):
        with (
            pytest.raises(tokenward.ConfigError, match="session 's2' opened inside session 's1'"),
            guard.session("s2"),
        ):
            pass
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)  # 26
        with pytest.raises(tokenward.BudgetExceeded):  # s1's budget still applies
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
        with (
            guard.task("t1", budget="total_tokens=10"),
            pytest.raises(tokenward.ConfigError, match="task 't2' opened inside task 't1'"),
            guard.task("t2"),
        ):
            pass
    with guard.session("s3"), guard.session("s4"):  # no budget of s3's own to drop: allowed
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    assert [e.subject.session for e in guard.ledger.events()] == ["s1", "s4"]


def test_a_session_or_task_moved_by_a_scope_argument_is_refused_like_a_nested_one(fake, guard) -> None:
    """``guard.task("t1", session="s2")`` inside session s1 (or ``guard.session("s1",
    task="t2")`` inside task t1) moved its calls to another session (task) as a nested block
    does, without the refusal: 52 tokens went through s1's (t1's) 30-token budget."""
    client = oai(fake, guard)
    with guard.session("s1", budget="total_tokens=30"):
        with (
            pytest.raises(tokenward.ConfigError, match="session 's2' \\(given to task 't1'\\) opened inside"),
            guard.task("t1", session="s2"),
        ):
            pass
        with guard.task("t1", budget="total_tokens=30"):
            with (
                pytest.raises(tokenward.ConfigError, match="task 't2' \\(given to session 's1'\\)"),
                guard.session("s1", task="t2"),
            ):
                pass
            with guard.session("s1", task="t1"):  # the same session and task: nothing moves
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
                with pytest.raises(tokenward.BudgetExceeded):
                    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    with guard.session("s3"), guard.task("t3", session="s4"):  # s3 declared no budget: allowed
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    assert [(e.subject.session, e.subject.task) for e in guard.ledger.events()] == [
        ("s1", "t1"),
        ("s4", "t3"),
    ]


def test_a_task_budget_inside_a_session_caps_the_task(fake, guard) -> None:
    """``guard.task`` (documented in issue 15): a call inside both is charged to both."""
    client = oai(fake, guard)
    with guard.session("run-7", user="alice", budget="total_tokens=1000"):
        with guard.task("issue-1", budget="total_tokens=30;action=deny"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)  # 26
            with pytest.raises(tokenward.BudgetExceeded) as denied:
                client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
            assert denied.value.budget == "task=issue-1:total_tokens"
        with guard.task("issue-2"):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    events = guard.ledger.events()
    assert [(e.subject.session, e.subject.task) for e in events] == [
        ("run-7", "issue-1"),
        ("run-7", "issue-2"),
    ]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # audio translations, Assistants
def test_a_billed_call_tokenward_cannot_meter_is_refused_before_it_is_sent(fake, guard) -> None:
    """An audio translation, an Assistants run, an Anthropic message batch: the provider bills
    them, tokenward cannot meter them, and a wrapped client passed them on untouched, uncharged
    under a hard budget. They raise ``UnmeteredCall`` (also the SDK's own error type) before
    anything is sent; ``unmetered="allow"`` sends them (here to the fake provider, which serves
    none of them: its 404 shows the call went out)."""
    client = oai(fake, guard)
    with pytest.raises(tokenward.UnmeteredCall) as refused:
        client.audio.translations.create(model="whisper-1", file=("a.wav", b"RIFF0000WAVE", "audio/wav"))
    assert isinstance(refused.value, openai.OpenAIError)
    assert refused.value.path == "/v1/audio/translations"
    with pytest.raises(tokenward.UnmeteredCall):
        client.beta.threads.runs.create(thread_id="thread_1", assistant_id="asst_1")
    with pytest.raises(openai.NotFoundError):  # adding a message to a thread is not billed: sent on
        client.beta.threads.messages.create(thread_id="thread_1", role="user", content="hi")
    ant = guard.wrap(anthropic.Anthropic(api_key=UPSTREAM_KEY, base_url=fake.url, max_retries=0))
    with pytest.raises(tokenward.UnmeteredCall) as batch:
        ant.messages.batches.create(
            requests=[
                {
                    "custom_id": "a",
                    "params": {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": MESSAGES},
                }
            ]
        )
    assert isinstance(batch.value, anthropic.AnthropicError)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # metered calls go on
    assert len(guard.ledger.events()) == 1
    allowed = guard.wrap(
        openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0), unmetered="allow"
    )
    with pytest.raises(openai.NotFoundError):
        allowed.audio.translations.create(model="whisper-1", file=("a.wav", b"RIFF0000WAVE", "audio/wav"))
    with pytest.raises(tokenward.ConfigError, match="unmetered must be"):
        guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1"), unmetered="yes")
