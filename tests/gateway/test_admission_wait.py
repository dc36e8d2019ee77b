"""No false denials: a burst of calls on a budget worth exactly 10 admits exactly 10.

Issue 14, item 9: 100 simultaneous calls on a budget worth 10 had calls refused (402) while most
of the budget was only *held* by calls in flight, not spent. A call refused only because of such
holds now waits for them to settle (``defaults.admission_wait_seconds``); a call without
``max_tokens`` clamped while other calls hold amounts gets half of what the budget can pay for.

Arithmetic (the fake's rules and our estimate, as in ``test_gateway_e2e``): the prompt
``"Say hello"`` is 6 tokens to the fake (2 pieces + 4 per message) and estimated at 9 by
tokenward (3 framing + 1 role + 2 text + 3 priming); the fake answers 20 tokens. A call with
``max_tokens: 20`` holds 9 + 20 = 29 and is charged 6 + 20 = 26. The budget's limit is
9 x 26 + 29 = 263: after nine calls settled (234 spent) the tenth's hold of 29 just fits, and after
ten (260 spent) an eleventh's does not. Without waiting, the first 9 holds (261) leave 2 tokens and
every other call of the burst is refused: 9 admitted, not 10 (what the branch point did).
Without ``max_tokens`` the output bound is clamped; ``min_output_tokens: 20`` keeps every clamped
call's bound at or above the fake's 20-token answer, so no call is cut short (a cut call would
cost less and let an eleventh in: the count would then not be the budget's worth).
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ledger.backends import BACKENDS, require_available
from tests.support.fixtures import KEY, Gateway
from tokenward.core.budgets import Subject

PER_CALL = 6 + 20  # charged
HOLD = 9 + 20  # held with max_tokens 20
LIMIT = 9 * PER_CALL + HOLD  # 263
BURST = 100
FAKE = json.dumps({"latency_ms": 50})


def _ledger(gateway: Gateway) -> Any:
    """The gateway's own ledger (sync side), which works for memory:// too."""
    return gateway.state.guard.ledger.sync


async def _burst(gateway: Gateway, session: str, body: dict[str, Any], fake: str = FAKE) -> list[int]:
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60, limits=limits) as client:
        headers = {"authorization": f"Bearer {KEY}", "x-tokenward-session": session, "x-fake-options": fake}

        async def one() -> int:
            response = await client.post("/v1/chat/completions", json=body, headers=headers)
            return response.status_code

        return list(await asyncio.gather(*(one() for _ in range(BURST))))


def _run_burst(start_gateway: Any, ledger_url: str, *, max_tokens: bool) -> tuple[list[int], Any, Gateway]:
    budget = {"name": "ten-calls", "scope": "session", "meter": "total_tokens", "limit": LIMIT}
    gateway = start_gateway(
        budgets=[budget],
        ledger=ledger_url,
        defaults={"min_output_tokens": 20, "admission_wait_seconds": 10},
    )
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]}
    if max_tokens:
        body["max_tokens"] = 20
    statuses = asyncio.run(_burst(gateway, "burst", body))
    ledger = _ledger(gateway)
    if hasattr(ledger, "flush"):
        ledger.flush(10)
    return statuses, ledger, gateway


def _check_exactly_ten(statuses: list[int], ledger: Any) -> None:
    assert sorted(set(statuses)) == [200, 402], statuses
    assert statuses.count(200) == 10, f"{statuses.count(200)} admitted"
    (balance,) = ledger.balances(Subject(session="demo/burst"))
    assert balance.held == 0
    assert balance.spent == 10 * PER_CALL <= LIMIT
    events = ledger.events(subject=Subject(session="demo/burst"))
    assert len(events) == 10
    assert all(e.usage.output_tokens == 20 and not e.metadata.get("cut_off") for e in events)


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_a_burst_with_max_tokens_admits_exactly_what_fits(
    start_gateway, tmp_path: Path, backend: str
) -> None:
    statuses, ledger, _ = _run_burst(start_gateway, BACKENDS[backend].make_url(tmp_path), max_tokens=True)
    _check_exactly_ten(statuses, ledger)


@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("memory"),
        pytest.param("sqlite"),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
def test_a_burst_without_max_tokens_admits_exactly_what_fits(
    start_gateway, tmp_path: Path, backend: str
) -> None:
    spec = BACKENDS[backend]
    require_available(spec)
    url = spec.make_url(tmp_path)
    try:
        statuses, ledger, _ = _run_burst(start_gateway, url, max_tokens=False)
        _check_exactly_ten(statuses, ledger)
        # the first call found nothing in flight and took all the budget could pay for (263 - 9);
        # calls admitted while others held amounts, or after waiting, got half of what was left
        bounds = [
            int(e.metadata["max_output_tokens"]) for e in ledger.events(subject=Subject(session="demo/burst"))
        ]
        assert max(bounds) == LIMIT - 9
        assert min(bounds) >= 20 and any(b <= (LIMIT - PER_CALL - 9) // 2 for b in bounds), bounds
    finally:
        spec.cleanup(url)


def test_waiting_is_off_with_zero_and_denies_at_once(start_gateway, tmp_path: Path) -> None:
    budget = {"name": "ten-calls", "scope": "session", "meter": "total_tokens", "limit": LIMIT}
    gateway = start_gateway(budgets=[budget], defaults={"min_output_tokens": 20, "admission_wait_seconds": 0})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 20}
    # the nine calls admitted stay in flight (1 s at the provider) while the other 91 are judged
    # (each refusal is also recorded in the ledger: issue 15 item 9), so none settles before
    statuses = asyncio.run(_burst(gateway, "burst", body, json.dumps({"latency_ms": 1000})))
    # today's behaviour: the first nine holds (261) leave 2 tokens; everything else is refused
    assert statuses.count(200) == 9
    assert gateway.observer().balances(Subject(session="demo/burst"))[0].spent == 9 * PER_CALL


def test_a_call_that_cannot_fit_even_against_spend_is_refused_without_waiting(start_gateway) -> None:
    budget = {"name": "small", "scope": "session", "meter": "total_tokens", "limit": 20}
    gateway = start_gateway(budgets=[budget], defaults={"admission_wait_seconds": 30})
    with httpx.Client(base_url=gateway.url, timeout=60) as client:
        response = client.post(
            "/v1/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Say hello"}],
                "max_tokens": 20,
            },
            headers={"authorization": f"Bearer {KEY}", "x-tokenward-session": "s"},
        )
    assert response.status_code == 402
    assert response.elapsed.total_seconds() < 5  # nothing held: no reason to wait 30 s
    assert Decimal(response.json()["error"]["budget"]["held"]) == 0
