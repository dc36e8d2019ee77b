"""Issue 14, items 1 and 2: every answer is stopped at its hold, and nothing delivered is free.

The fake provider is the referee (:mod:`tests.support.referee`): it tallies what it generated per
request, as a provider bills it, and generates a stream only as the gateway reads it. In every
scenario each call is charged at least what the fake generated for it, and all that the fake
generated stays within the budget's limit plus the measured residue: the output that arrived
past a cut (one event's worth per call of an upstream that ignores its bound; the fake streams
one token per event here, as OpenAI does). The prompt side of the residue is not in play: our
estimate of these prompts (tiktoken, exact for gpt-4o-mini) is above the fake's own count of
them (9 against 6 for "Say hello").
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.referee import AUTH, Referee, referee
from tokenward.core.budgets import Subject

HELLO = [{"role": "user", "content": "Say hello"}]
BACKEND_PARAMS = [
    pytest.param("memory", marks=pytest.mark.memory),
    pytest.param("sqlite", marks=pytest.mark.sqlite),
]
ALL_BACKENDS = [
    *BACKEND_PARAMS,
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
]


def budget(limit: int) -> dict[str, Any]:
    return {"name": "cap", "scope": "session", "meter": "total_tokens", "limit": limit}


def words(n: int) -> str:
    return " ".join(["hello"] * n)


def session(name: str) -> Subject:
    """The subject of the test key's calls in session ``name`` (the key's project namespaces its
    user and sessions: docs/budgets.md, "Tenancy")."""
    return Subject(project="demo", user="alice", key="test-key", session=name).namespaced()


def within_limit(ref: Referee, limit: int, name: str) -> None:
    """All the fake generated, and all the ledger spent, within the limit plus the residue."""
    spent, held = ref.spent_and_held(session(name), "cap")
    assert held == 0
    assert ref.generated() <= spent <= limit + ref.residue()


async def _burst(
    url: str, bodies: list[dict[str, Any]], path: str, headers: dict[str, str]
) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as client:
        return await asyncio.gather(*(client.post(path, json=body) for body in bodies))


# -- item 1: non-streamed calls are bounded ------------------------------------------------------------


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_concurrent_non_streamed_calls_of_an_upstream_ignoring_max_tokens_stop_at_their_hold(
    tmp_path: Path, backend: str
) -> None:
    """The issue's 300 concurrent calls on a 5,000-token limit: each held 9 (prompt estimate) +
    28 and was charged 2,005 (+6 prompt) before; 356,890 were spent. Now each is read as a stream
    and stopped at its bound: 28 tokens, or what was left of the budget for a call admitted when
    less than a whole hold was left (at most one such call is admitted at a time, as it holds all
    that is left); one more token arrived (the event that crossed the bound) and is charged."""
    calls = 300 if backend in ("memory", "sqlite") else 100
    with referee(tmp_path, backend, budgets=[budget(5000)]) as ref:
        fake = {"ignore_max_tokens": True, "reply_tokens": 2005, "chunk_tokens": 1}
        body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 28, "fake": fake}
        answers = asyncio.run(
            _burst(ref.url, [body] * calls, "/v1/chat/completions", {**AUTH, "x-tokenward-session": "burst"})
        )
        ok = [a for a in answers if a.status_code == 200]
        assert ok and all(a.status_code == 402 for a in answers if a.status_code != 200)
        bounds = []
        for answer in ok:
            data = answer.json()
            choice = data["choices"][0]
            bound = data["usage"]["completion_tokens"]
            assert 0 < bound <= 28
            assert choice["finish_reason"] == "length"  # as OpenAI ends a length-limited answer
            assert choice["message"]["content"] == words(bound)
            assert data["tokenward"] == {"cut_off": True, "reason": "budget"}
            bounds.append(bound)
        # a short bound only for the call admitted on the budget's last room
        assert sum(b < 28 for b in bounds) <= 1, sorted(bounds)[:5]
        pairs = ref.check()
        assert len(pairs) == len(ok)
        received = sorted(record["output_tokens"] for _event, record in pairs)
        assert received == sorted(b + 1 for b in bounds)  # one token past each bound
        for event, record in pairs:
            assert event.charged["output_tokens"] == record["output_tokens"] and event.status == "cut_off"
            assert event.metadata["bounded"] == "stream"
        assert ref.residue() == len(ok)  # one token past the hold per call
        within_limit(ref, 5000, "burst")


def test_a_non_streamed_call_trusted_to_the_upstream_is_not_bounded_but_still_floored(tmp_path: Path) -> None:
    """``bound_non_streamed: trust`` forwards the call as it is: what the upstream generated is
    charged (2,005 tokens, its own report); the floor would catch a lower report."""
    with referee(tmp_path, upstream={"bound_non_streamed": "trust"}) as ref:
        fake = {"ignore_max_tokens": True, "reply_tokens": 2005, "usage": "under"}
        body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 28, "fake": fake}
        answer = httpx.post(f"{ref.url}/v1/chat/completions", json=body, headers=AUTH, timeout=30)
        assert answer.json()["usage"]["completion_tokens"] == 1002  # 2005 halved, rounded down
        ((event, record),) = ref.check()
        assert record["output_tokens"] == 2005 and event.charged["output_tokens"] == 2005
        assert event.disputed and event.metadata["disputed"]["output_tokens"]["reported"] == 1002
        # caught under-reporting, its prompt count (3) is not believed below our estimate (9)
        assert event.metadata["disputed"]["input_tokens"]["reported"] == 3
        assert event.usage.input_tokens == 9 and event.usage.input_source == "preflight_estimate"


# -- item 2: usage that is too low or missing ---------------------------------------------------------


def _spend_until_refused(
    ref: Referee, name: str, bodies: list[dict[str, Any]], path: str = "/v1/chat/completions"
) -> int:
    """Send the bodies in turn (round robin) until the budget refuses one; returns calls admitted."""
    with httpx.Client(base_url=ref.url, headers={**AUTH, "x-tokenward-session": name}, timeout=60) as client:
        for i in range(60):
            answer = client.post(path, json=bodies[i % len(bodies)])
            if answer.status_code == 402:
                return i
            assert answer.status_code == 200, answer.text
            if bodies[i % len(bodies)].get("stream"):
                assert answer.text.rstrip().endswith("data: [DONE]")
    raise AssertionError("the budget never refused a call")


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize(
    ("usage", "ignore"),
    [("zero", False), ("zero", True), ("under", False), ("omit", False)],
    ids=["zero", "zero-ignoring-the-bound", "half", "omitted"],
)
def test_usage_reported_too_low_or_not_at_all_is_charged_what_was_seen(
    tmp_path: Path, backend: str, usage: str, ignore: bool
) -> None:
    """Zero usage delivered 20,000 tokens on a 1,000 limit and spent 0; half usage was charged
    half. Streamed and non-streamed calls alternate; each 200-token answer (the fake honours
    max_tokens=200, or not: then 20,000) is charged what passed through, never the report."""
    limit = 1000
    with referee(tmp_path, backend, budgets=[budget(limit)]) as ref:
        fake = {"usage": usage, "reply_tokens": 20_000 if ignore else 200, "ignore_max_tokens": ignore}
        body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 200, "fake": fake}
        admitted = _spend_until_refused(ref, "low", [body, {**body, "stream": True}])
        assert admitted >= 2
        pairs = ref.check()
        assert len(pairs) == admitted
        for event, record in pairs:
            assert event.charged["output_tokens"] >= record["output_tokens"] > 0
            if usage in ("zero", "under") and not ignore:  # a report came, and it was too low
                assert event.disputed
                assert event.metadata["disputed"]["output_tokens"]["counted"] == record["output_tokens"]
            else:  # no figure (omitted, or the stream was cut before it): nothing to dispute
                assert not event.disputed
        within_limit(ref, limit, "low")


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_legacy_completions_streams_are_counted_and_cut(tmp_path: Path, backend: str) -> None:
    """``choices[].text`` was never counted: 47,595 spent on 2,000, 0 output charged without usage."""
    limit = 2000
    with referee(tmp_path, backend, budgets=[budget(limit)]) as ref:
        fake = {"ignore_max_tokens": True, "reply_tokens": 2000, "usage": "omit", "chunk_tokens": 1}
        body = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hello", "max_tokens": 64, "fake": fake}
        admitted = _spend_until_refused(ref, "legacy", [{**body, "stream": True}, body], "/v1/completions")
        pairs = ref.check()
        assert len(pairs) == admitted >= 2
        for event, record in pairs:  # each held 2 (the prompt) + 64, or what the budget had left
            bound = event.held["output_tokens"]
            assert event.status == "cut_off" and record["output_tokens"] == bound + 1  # + the one past
            assert event.charged["output_tokens"] == bound + 1
        within_limit(ref, limit, "legacy")


def _replayed(ref: Referee, delta_of: Any, stream: bool) -> tuple[httpx.Response, Any]:
    """A chat call answered by a replayed stream of ten 5-word deltas (``delta_of(text)``), no
    usage, on a bound of 12 tokens."""
    chunk = {"id": "c-1", "object": "chat.completion.chunk", "model": "gpt-4o-mini"}
    events = [{**chunk, "choices": [{"index": 0, "delta": delta_of(words(5) + " "), "finish_reason": None}]}]
    events *= 10
    events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    body = {
        "model": "gpt-4o-mini",
        "messages": HELLO,
        "max_tokens": 12,
        "stream": stream,
        "fake": {"events": events},
    }
    answer = httpx.post(f"{ref.url}/v1/chat/completions", json=body, headers=AUTH, timeout=30)
    (event,) = ref.events()
    return answer, event


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "non-streamed"])
@pytest.mark.parametrize(
    ("kind", "delta_of"),
    [
        ("function_call", lambda text: {"function_call": {"arguments": text}}),
        ("audio", lambda text: {"audio": {"transcript": text}}),
    ],
    ids=["function_call", "audio-transcript"],
)
def test_legacy_function_call_and_audio_transcript_deltas_are_counted_and_cut(
    tmp_path: Path, kind: str, delta_of: Any, stream: bool
) -> None:
    """Ten deltas of ``"hello hello hello hello hello "``, 6 o200k tokens each (five words and the
    trailing space), on a bound of 12: the second delta reaches 12, the third crosses it and is
    held back whole; 12 tokens are passed on, 18 arrived and are charged (none was before: these
    deltas were not counted, and the replay reports no usage)."""
    with referee(tmp_path) as ref:
        answer, event = _replayed(ref, delta_of, stream)
        field = "arguments" if kind == "function_call" else "transcript"
        if stream:
            texts = [
                line
                for line in answer.text.splitlines()
                if line.startswith("data: {") and f'"{field}"' in line
            ]
            assert len(texts) == 2 and '"finish_reason":"length"' in answer.text
        else:
            message = answer.json()["choices"][0]["message"]
            assert answer.json()["choices"][0]["finish_reason"] == "length"
            assert message[kind][field] == (words(5) + " ") * 2  # 12 tokens: the third delta gave 0
        assert event.status == "cut_off"
        assert event.charged["output_tokens"] == 18 and event.metadata["received_beyond_cut_tokens"] == 6


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize("mode", ["stream", "trust"])
def test_an_answer_that_breaks_mid_body_after_a_200_is_charged(
    tmp_path: Path, backend: str, mode: str
) -> None:
    """The answer breaks off after its first bytes: charged nothing before. Read as a stream, what
    arrived is charged; trusted, the whole output bound (what it read cannot say more). The
    client gets a 502 either way: the answer it asked for never came whole."""
    trusted = {"bound_non_streamed": "trust"} if mode == "trust" else None  # stream: the default
    with referee(tmp_path, backend, budgets=[budget(10_000)], upstream=trusted) as ref:
        fake = {"reply_tokens": 200, "chunk_tokens": 5, "break_after_bytes": 1500}
        body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 300, "fake": fake}
        headers = {**AUTH, "x-tokenward-session": "broken"}
        answer = httpx.post(f"{ref.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
        (event,), (record,) = ref.events(), list(ref.tally().values())  # no id: the body never came whole
        assert event.charged.get("output_tokens", 0) >= record["output_tokens"] > 0
        assert event.charged["total_tokens"] >= record["input_tokens"] + record["output_tokens"]
        assert event.status == "stream_broken"
        assert answer.status_code == 502 and answer.json()["error"]["code"] == "upstream_broken"
        if mode == "trust":  # the JSON was generated whole (200 tokens) and cut in transit
            assert record["output_tokens"] == 200 and event.charged["output_tokens"] == 300
        else:  # the events that arrived whole before the cut
            assert 0 < record["output_tokens"] < 200
            assert event.charged["output_tokens"] == record["output_tokens"]
        spent, held = ref.spent_and_held(session("broken"), "cap")
        assert held == 0 and spent == event.charged["total_tokens"] > 0


def test_an_upstream_error_that_produced_nothing_stays_a_known_zero(tmp_path: Path) -> None:
    """Shared case N13: a 5xx answer produced nothing, and is charged nothing, undisputed."""
    with referee(tmp_path) as ref:
        body = {"model": "gpt-4o-mini", "messages": HELLO, "fake": {"status": 500}}
        assert httpx.post(f"{ref.url}/v1/chat/completions", json=body, headers=AUTH).status_code == 500
        (event,) = ref.events()
        assert event.status == "upstream_error" and event.charged == {} and not event.disputed
        assert event.cost_usd == Decimal(0)


def test_an_anthropic_zero_report_is_floored_at_the_lower_ratio(tmp_path: Path) -> None:
    """Claude's tokenizer is not ours: a report of 0 is charged floor(count x 0.75) = 150 of the
    200 o200k tokens that arrived, and the prompt estimate for the impossible prompt of 0."""
    with referee(tmp_path) as ref:
        fake = {"usage": "zero", "reply_tokens": 200}
        body = {"model": "claude-sonnet-4-6", "max_tokens": 300, "messages": HELLO, "fake": fake}
        answer = httpx.post(f"{ref.url}/v1/messages", json=body, headers=AUTH, timeout=30)
        assert answer.status_code == 200 and answer.json()["usage"]["output_tokens"] == 0
        ((event, record),) = [(e, r) for e, r in _pairs(ref)]
        assert record["output_tokens"] == 200
        assert event.charged["output_tokens"] == 150 and event.disputed
        assert event.metadata["disputed"]["input_tokens"]["reported"] == 0
        assert event.usage.input_source == "preflight_estimate" and event.usage.input_tokens > 0


def _pairs(ref: Referee) -> list[tuple[Any, dict[str, Any]]]:
    tally = ref.tally()
    return [(e, tally[e.metadata["response_id"]]) for e in ref.events()]
