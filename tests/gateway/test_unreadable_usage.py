"""An upstream answer whose usage cannot be read (a count that is not a whole number) or whose
shape is not its dialect's: the client still gets the answer it was sent, and the call is settled
once (held 0), from tokenward's own count or at its hold, never left unsettled until its hold
expires (it was: a 400 blaming the client's ``prompt_tokens``, a bare 500, a stream dropped)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fixtures import SESSION_BUDGET, openai_upstream, post
from tokenward.core.budgets import Subject

BAD_USAGE = {"prompt_tokens": "abc", "completion_tokens": -2}
# counts no call can have: past JSON's exact integers (RFC 8259, section 6) and SQLite's 64 bits
ABSURD_USAGE = {"prompt_tokens": 1e308, "completion_tokens": 2**70, "total_tokens": 1e308}


def _sse(usage: Any) -> bytes:
    chunks = [
        {"id": "s1", "choices": [{"index": 0, "delta": {"content": "hello hello"}, "finish_reason": None}]},
        {"id": "s1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"id": "s1", "choices": [], "usage": usage},
    ]
    return ("".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n").encode()


ANSWERS = {
    "json-bad-usage": (
        b"application/json",
        {"choices": [{"message": {"content": "hi"}}], "usage": BAD_USAGE},
    ),
    "json-bad-shape": (b"application/json", {"choices": 5, "usage": {"prompt_tokens": 5}}),
    "sse-bad-usage": (b"text/event-stream", _sse(BAD_USAGE)),
    "json-absurd-usage": (
        b"application/json",
        {"choices": [{"message": {"content": "hello hello"}}], "usage": ABSURD_USAGE},
    ),
    "sse-absurd-usage": (b"text/event-stream", _sse(ABSURD_USAGE)),
    # a count of more digits than Python turns into an int (4,300): json.loads raises a plain
    # ValueError, not a JSONDecodeError
    "json-endless-digits": (
        b"application/json",
        json.dumps({"choices": [{"message": {"content": "hello hello"}}], "usage": "COUNT"})
        .replace('"COUNT"', '{"prompt_tokens": ' + "9" * 5000 + "}")
        .encode(),
    ),
    "sse-endless-digits": (
        b"text/event-stream",
        _sse("COUNT").replace(b'"COUNT"', b'{"prompt_tokens": ' + b"9" * 5000 + b"}"),
    ),
}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("answer", sorted(ANSWERS))
def test_an_answer_with_an_unreadable_usage_is_answered_and_settled(
    start_gateway: Any, answer: str, stream: bool
) -> None:
    media, content = ANSWERS[answer]
    raw = content if isinstance(content, bytes) else json.dumps(content).encode()
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"content-type": media.decode()}, content=raw)
    )
    gateway = openai_upstream(start_gateway, transport, budgets=[SESSION_BUDGET])
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    assert post(gateway, "s-bad", {**body, "stream": stream}).status_code == 200
    ledger = gateway.observer()
    (event,) = ledger.events(subject=Subject(session="s-bad"))
    (balance,) = ledger.balances(Subject(session="s-bad"))
    assert balance.held == 0 and balance.spent == event.charged["total_tokens"] > 0
    assert event.charged["output_tokens"] >= 2  # at least the "hello hello" that went through


def test_an_unexpected_error_after_the_upstream_answered_still_settles_the_call(
    tmp_path: Path, start_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong reading an answer, a call that reached the provider is settled (at
    its whole output bound), not left held until its reservation expires."""
    import tokenward.gateway.relay as relay

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a shape nothing reads")

    monkeypatch.setattr(relay, "json_outcome", broken)
    raw = json.dumps({"choices": [{"message": {"content": "hi"}}]}).encode()
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"content-type": "application/json"}, content=raw)
    )
    gateway = openai_upstream(start_gateway, transport)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    assert post(gateway, "s-odd", body).status_code == 500
    (event,) = gateway.observer().events(subject=Subject(session="s-odd"))
    assert event.charged["output_tokens"] == 50
    with sqlite3.connect(tmp_path / "ledger.db") as db:  # settled: its reservation row is gone
        assert db.execute("select count(*) from reservations").fetchone() == (0,)
