"""A streamed call whose upstream answers an error status (or one JSON object) and then breaks
off mid-body: the client gets the gateway's error answer (never a bare 500) and the call is
settled once, its hold released (an error status) or charged (a 200's broken JSON), not left
held until it expires."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ThreadedServer
from tokenward.core.budgets import Subject
from tokenward.gateway import GatewayConfig, create_app
from tokenward.ledger.sqlite import SQLiteLedger


class _Breaking(httpx.AsyncByteStream):
    def __init__(self, first: bytes) -> None:
        self.first = first

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.first
        raise httpx.ReadError("the upstream closed the connection mid-body")


def _transport(status: int) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        first = (
            b'{"error": {"mess'
            if status >= 400
            else b'{"id": "x", "choices": [{"message": {"content": "hello'
        )
        return httpx.Response(status, headers={"content-type": "application/json"}, stream=_Breaking(first))

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("status", [500, 200])
def test_a_streamed_call_whose_json_answer_breaks_off_is_settled(tmp_path: Path, status: int) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        json.dumps(
            {
                "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
                "upstreams": [{"name": "up", "provider": "openai", "base_url": "http://up.invalid/v1"}],
                "keys": [{"key": "tw-one", "name": "one", "user": "alice"}],
                "budgets": [{"name": "sess", "scope": "session", "meter": "total_tokens", "limit": 100000}],
            }
        )
    )
    app = create_app(GatewayConfig.load(path), transports={"up": _transport(status)})
    server = ThreadedServer(app)
    server.start()
    try:
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 50,
            "stream": True,
        }
        headers = {"authorization": "Bearer tw-one", "x-tokenward-session": "s-broken"}
        answer = httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
        assert answer.status_code == 502
        assert answer.json()["error"]["code"] == "upstream_broken"
    finally:
        server.stop()
    ledger = SQLiteLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    (event,) = ledger.events(subject=Subject(session="s-broken"))
    (balance,) = ledger.balances(Subject(session="s-broken"))
    assert balance.held == 0
    if status >= 400:
        assert event.status == "upstream_error" and event.charged == {}
    else:  # it may have generated its whole bound: charged it
        assert event.status == "stream_broken" and event.charged["output_tokens"] == 50
