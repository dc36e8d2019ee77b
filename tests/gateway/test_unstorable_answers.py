"""An upstream answer carrying a NUL is still recorded (issue 14, item 6).

The fake provider replays a verbatim answer whose ``model`` holds a NUL byte. PostgreSQL refuses
NUL in text and jsonb: on the branch point every such settle failed (the client got its 200, the
ledger 0 events), and on Redis the refused event sat at the head of the spool. Now the event's
strings are made storable (U+FFFD) and flagged in ``metadata.normalised``; the call is charged
what the answer's usage says (6 + 1 = 7 tokens).
"""

from __future__ import annotations

import pytest

from tests.ledger.backends import (
    BACKENDS,
    drop_postgres_schema,
    drop_redis_prefix,
    fresh_postgres_url,
    fresh_redis_url,
    require_available,
)
from tests.support.fixtures import KEY
from tokenward.core.budgets import Subject
from tokenward.ledger import open_ledger

ANSWER = {
    "id": "chatcmpl-nul",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini\u0000evil",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 6, "completion_tokens": 1, "total_tokens": 7},
}


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=[pytest.mark.redis, pytest.mark.postgres]),
    ],
)
def test_a_nul_in_the_upstreams_model_is_recorded_not_lost(backend: str, tmp_path, start_gateway) -> None:
    require_available(BACKENDS["postgres"])
    if backend == "redis":
        require_available(BACKENDS["redis"])
        url = fresh_redis_url(tmp_path, events="postgres")
    else:
        url = fresh_postgres_url(tmp_path)
    gateway = start_gateway(
        budgets=[
            {"name": "alice-tokens", "scope": "user", "id": "alice", "meter": "total_tokens", "limit": 1000}
        ],
        ledger=url,
    )
    import httpx

    for n in range(3):
        reply = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Say hello"}],
                "fake": {"response": ANSWER},
            },
            headers={"authorization": f"Bearer {KEY}", "x-tokenward-session": f"s-{n}"},
            timeout=30,
        )
        assert reply.status_code == 200
    ledger = open_ledger(url)
    try:
        events = ledger.events(subject=Subject(user="demo/alice"))  # the demo key's project namespace
        assert len(events) == 3  # the branch point: 0 on PostgreSQL
        for event in events:
            assert event.metadata["model_served"] == "gpt-4o-mini\ufffdevil"
            assert "metadata.model_served" in event.metadata["normalised"]
            assert event.charged["total_tokens"] == 7
        (balance,) = ledger.balances(Subject(project="demo", user="demo/alice"))
        assert (balance.spent, balance.held) == (21, 0)
    finally:
        ledger.close()
        (drop_redis_prefix if backend == "redis" else drop_postgres_schema)(url)


def test_a_subject_no_store_keeps_is_a_400_before_anything_is_held(start_gateway) -> None:
    """A value the client's side controls (here a key whose name holds a NUL) is refused at
    admission with a 400, on every backend alike (PostgreSQL refused it with a 503 and the
    ledger's error; SQLite stored it)."""
    import httpx

    gateway = start_gateway(
        budgets=[
            {"name": "alice-tokens", "scope": "user", "id": "alice", "meter": "total_tokens", "limit": 1000}
        ],
        keys=[{"key": "tw-nul-key", "name": "bad\u0000name", "user": "alice"}],
    )
    reply = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]},
        headers={"authorization": "Bearer tw-nul-key"},
        timeout=30,
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "key"
    ledger = gateway.observer()
    try:
        (balance,) = ledger.balances(Subject(project="demo", user="demo/alice"))
        assert (balance.spent, balance.held) == (0, 0) and ledger.events() == []
    finally:
        ledger.close()
