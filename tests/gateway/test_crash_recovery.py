"""``kill -9`` of the gateway with streams open, and a crash loop (issue 14, item 5).

Real OS processes: ``tokenward serve`` on SQLite, PostgreSQL and Redis, 30 streams open through
it to the fake provider, then SIGKILL and a restart on the same store. On the branch point the
calls were lost: thousands of tokens delivered, 0 events, holds released at their expiry (and a
crash loop delivered 234% of a limit while the ledger showed 7%). Now each call was reserved
*forwarded*, and the restart (its ledger open) finds the dead owner on this machine and charges
each hold: every call that reached the fake has its event, charged at least what the client
received (the fake's own tally of generated tokens is helper A's; until it lands, what the client
received is the floor), and a crash loop cannot deliver more than the limit.

The fake counts a prompt as its ``\\w+|[^\\w\\s]`` pieces plus 4 per message: "Say hello" is 6
tokens; each reply word ("hello") is one token.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ledger.backends import BACKENDS, require_available
from tests.support.servers import free_port, serve_gateway
from tokenward.core.budgets import Subject
from tokenward.ledger import open_ledger

pytestmark = pytest.mark.slow

PROMPT = 6
STREAMS = 30
MESSAGES = [{"role": "user", "content": "Say hello"}]


def _config(tmp_path: Path, fake_url: str, ledger: str, budget: int, ttl: int) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        json.dumps(
            {
                "ledger": ledger,
                "upstreams": [
                    {
                        "name": "fake",
                        "provider": "fake",
                        "base_url": fake_url,
                        "api_key_env": "FAKE_UPSTREAM_KEY",
                    }
                ],
                "keys": [{"key": "tw-one", "name": "one", "user": "alice"}],
                "budgets": [
                    {
                        "name": "alice-tokens",
                        "scope": "user",
                        "id": "alice",
                        "meter": "total_tokens",
                        "limit": budget,
                    }
                ],
                # no waiting: the calls behind the first call of a model never observed would
                # wait for it to settle (calibration), so only one stream per process would be
                # forwarded before the kill
                "defaults": {"reservation_ttl_seconds": ttl, "admission_wait_seconds": 0},
            }
        )
    )
    return path


class _Stream(threading.Thread):
    """One streamed chat completion read chunk by chunk; counts the reply tokens received."""

    def __init__(self, port: int, max_tokens: int = 300) -> None:
        super().__init__(daemon=True)
        self.port, self.max_tokens = port, max_tokens
        self.request_id: str | None = None
        self.status: int | None = None
        self.received = 0
        self.error: str | None = None

    def run(self) -> None:
        body = {
            "model": "gpt-4o-mini",
            "messages": MESSAGES,
            "stream": True,
            "max_tokens": self.max_tokens,
            "fake": {"reply_tokens": self.max_tokens, "chunk_tokens": 5, "chunk_delay_ms": 60},
        }
        url = f"http://127.0.0.1:{self.port}/v1/chat/completions"
        try:
            with httpx.stream(
                "POST", url, json=body, headers={"authorization": "Bearer tw-one"}, timeout=60
            ) as r:
                self.status, self.request_id = r.status_code, r.headers.get("x-tokenward-request-id")
                for line in r.iter_lines():
                    if line.startswith("data: {"):
                        delta = json.loads(line[6:])["choices"]
                        text = delta[0]["delta"].get("content") if delta else None
                        self.received += len(text.split()) if text else 0
        except httpx.HTTPError as exc:  # the gateway was killed under it
            self.error = type(exc).__name__


def _fake_requests(fake_url: str) -> int:
    return len(httpx.get(f"{fake_url}/_fake/requests", timeout=10).json())


@pytest.mark.parametrize(
    ("backend", "workers"),
    [
        pytest.param("sqlite", 1, marks=pytest.mark.sqlite),
        # the supervisor of two workers killed: its workers die with it (PR_SET_PDEATHSIG)
        pytest.param("sqlite", 2, marks=pytest.mark.sqlite),
        pytest.param("postgres", 1, marks=pytest.mark.postgres),
        pytest.param("redis", 1, marks=pytest.mark.redis),
    ],
)
def test_sigkill_with_30_streams_open_charges_every_call_at_restart(
    backend: str, workers: int, tmp_path: Path, fake
) -> None:
    spec = BACKENDS[backend]
    require_available(spec)
    url = spec.make_url(tmp_path)  # Redis: its events in a SQLite file
    # a 10-minute TTL: the charges below come from the restart, not from expiry
    config = _config(tmp_path, fake.url, url, budget=1_000_000, ttl=600)
    port, log = free_port(), tmp_path / "gateway.log"
    proc = serve_gateway(config, port, log, workers=workers)
    streams = [_Stream(port) for _ in range(STREAMS)]
    try:
        for stream in streams:
            stream.start()
        deadline = time.monotonic() + 30
        while any(s.received < 10 for s in streams) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(s.received >= 10 for s in streams), [s.received for s in streams]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        for stream in streams:
            stream.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert all(s.received < 300 for s in streams)  # every stream was cut by the kill
    assert _fake_requests(fake.url) == STREAMS

    restarted = serve_gateway(config, port, log)  # opening its ledger reclaims the dead one's holds
    restarted.send_signal(signal.SIGTERM)
    restarted.wait(60)
    ledger = open_ledger(url)
    try:
        events = {e.request_id: e for e in ledger.events(subject=Subject(user="alice"))}
        assert len(events) == STREAMS  # every call that reached the provider
        for stream in streams:
            charged = events[stream.request_id].charged["total_tokens"]  # type: ignore[index]
            assert events[stream.request_id].status == "reclaimed"  # type: ignore[index]
            assert charged >= PROMPT + stream.received  # never below what was delivered
        (balance,) = ledger.balances(Subject(user="alice"))
        assert balance.held == 0
        assert balance.spent == sum(e.charged["total_tokens"] for e in events.values())
    finally:
        ledger.close()
        spec.cleanup(url)


@pytest.mark.sqlite
def test_a_crash_loop_delivers_no_more_than_the_limit(tmp_path: Path, fake) -> None:
    """A gateway killed again and again with streams open, its holds expiring meanwhile (ttl
    2 s): each expiry charges the dead calls' holds, so the budget runs out; the branch point
    released them uncharged and the loop went on delivering."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    limit = 2000
    config = _config(tmp_path, fake.url, url, budget=limit, ttl=2)
    port, log = free_port(), tmp_path / "gateway.log"
    delivered = 0
    denied = False
    for _ in range(6):
        proc = serve_gateway(config, port, log)
        try:
            streams: list[Any] = []
            for _ in range(3):
                stream = _Stream(port)
                stream.start()
                streams.append(stream)
            time.sleep(1.0)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        for stream in streams:
            stream.join(30)
        delivered += sum(PROMPT + s.received for s in streams if s.status == 200)
        if any(s.status == 402 for s in streams):
            denied = True
            break
        time.sleep(2.5)  # the holds of the dead process expire
    assert denied, "the budget never ran out"
    assert delivered <= limit
    ledger = open_ledger(url)
    try:
        (balance,) = ledger.balances(Subject(user="alice"))
        assert delivered <= balance.spent + balance.held <= limit
    finally:
        ledger.close()
