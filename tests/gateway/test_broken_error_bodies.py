"""A streamed call whose upstream answers an error status (or one JSON object) and then breaks
off mid-body: the client gets the gateway's error answer (never a bare 500) and the call is
settled once, its hold released (an error status) or charged (a 200's broken JSON), not left
held until it expires."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.fixtures import SESSION_BUDGET, openai_upstream, post
from tokenward.core.budgets import Subject


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
def test_a_streamed_call_whose_json_answer_breaks_off_is_settled(start_gateway: Any, status: int) -> None:
    gateway = openai_upstream(start_gateway, _transport(status), budgets=[SESSION_BUDGET])
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
    answer = post(gateway, "s-broken", {**body, "stream": True})
    assert answer.status_code == 502
    assert answer.json()["error"]["code"] == "upstream_broken"
    ledger = gateway.observer()
    (event,) = ledger.events(subject=Subject(session="s-broken"))
    (balance,) = ledger.balances(Subject(session="s-broken"))
    assert balance.held == 0
    if status >= 400:
        assert event.status == "upstream_error" and event.charged == {}
    else:  # it may have generated its whole bound: charged it
        assert event.status == "stream_broken" and event.charged["output_tokens"] == 50
