"""SDK budgets carried to the gateway (issue 15 item 3): a wrapped ``openai`` client whose base URL
is a tokenward gateway sends ``guard.session(..., budget=...)`` with each call; the gateway
enforces it for the session where the key has ``allow_client_budgets``, and any other key is
refused before anything reaches the provider.

A call charges 26 total tokens (6 prompt + 20 output, the fake's count); a second cannot fit 30.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import openai
import pytest

import tokenward
from tests.support.fixtures import KEY
from tokenward.clock import ManualClock
from tokenward.core.budgets import Subject, parse_short_spec
from tokenward.gateway.carried import CarriedBudgets, carried_budgets, split_specs
from tokenward.gateway.config import KeyConfig
from tokenward.gateway.errors import GatewayError
from tokenward.ledger.base import ThreadedAsyncLedger
from tokenward.ledger.memory import MemoryLedger

MESSAGES = [{"role": "user", "content": "Say hello"}]
ALLOWED = [{"key": KEY, "name": "test-key", "user": "alice", "project": "demo", "allow_client_budgets": True}]


def wrapped(gateway, guard: tokenward.Guard) -> openai.OpenAI:
    return guard.wrap(openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0))


def call(c: openai.OpenAI) -> None:
    c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)


def test_a_carried_session_budget_answers_402_after_its_limit(start_gateway) -> None:
    gateway = start_gateway(keys=ALLOWED)
    guard = tokenward.Guard("memory://")
    client = wrapped(gateway, guard)
    with guard.session("s-c", budget="total_tokens=30"):
        call(client)
        with pytest.raises(tokenward.BudgetExceeded) as denied:
            call(client)
        # the gateway's own budget for the key's (namespaced) session, its lease held
        stored = gateway.observer().get_budget("session=demo/s-c:total_tokens")
        assert stored is not None and stored.limit == 30 and stored.subject_id == "demo/s-c"
    assert (denied.value.budget, denied.value.limit, denied.value.used) == (
        "session=demo/s-c:total_tokens",
        30,
        26,
    )
    with guard.session("s-other"):  # another session is not limited by it
        call(client)
        call(client)
    assert len(gateway.observer().events()) == 3 and guard.ledger.events() == []
    gateway.server.stop()  # the gateway gives its lease back: the carried budget goes
    assert gateway.observer().get_budget("session=demo/s-c:total_tokens") is None


def test_a_task_inside_a_session_carries_both(start_gateway) -> None:
    gateway = start_gateway(keys=ALLOWED)
    guard = tokenward.Guard("memory://")
    client = wrapped(gateway, guard)
    with guard.session("s-n", budget="total_tokens=1000"), guard.task("t-n", budget="total_tokens=30"):
        call(client)
        with pytest.raises(tokenward.BudgetExceeded) as denied:
            call(client)
        observer = gateway.observer()
        assert observer.get_budget("session=demo/s-n:total_tokens").limit == 1000
    assert denied.value.budget == "task=demo/t-n:total_tokens"


def test_a_key_without_the_flag_is_refused_before_the_first_call(start_gateway) -> None:
    gateway = start_gateway()  # the test key has no allow_client_budgets
    guard = tokenward.Guard("memory://")
    client = wrapped(gateway, guard)
    with guard.session("s-r", budget="total_tokens=30000"):
        with pytest.raises(tokenward.ConfigError, match="allow_client_budgets"):
            call(client)
        with pytest.raises(tokenward.ConfigError, match="nothing was sent to the provider"):
            call(client)  # the gateway is known by now: refused the same way
    assert gateway.observer().events() == [] and guard.ledger.events() == []
    call(client)  # outside the session nothing is carried


def test_two_different_limits_for_one_session_are_a_400_naming_both(start_gateway) -> None:
    """And a carried budget never replaces a budget the gateway did not make for the session's
    lease, even one of the very name it would get."""
    admins = {"name": "session=demo/s-y:total_tokens", "scope": "session", "id": "demo/s-y",
              "meter": "total_tokens", "limit": 10}  # fmt: skip
    gateway = start_gateway(keys=ALLOWED, budgets=[admins])
    headers = {"authorization": f"Bearer {KEY}", "x-tokenward-session": "s-x"}
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 20}
    first = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body,
        headers={**headers, "x-tokenward-session-budget": "total_tokens=1000, cost_usd=0.5;thresholds=50%,90%"},
    )  # fmt: skip
    assert first.status_code == 200, first.text
    other = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body,
        headers={**headers, "x-tokenward-session-budget": "total_tokens=2000"},
    )  # fmt: skip
    assert other.status_code == 400
    error = other.json()["error"]
    assert error["code"] == "carried_budget_conflict"
    assert "total_tokens=1000" in error["message"] and "total_tokens=2000" in error["message"]
    no_session = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body,
        headers={"authorization": f"Bearer {KEY}", "x-tokenward-session-budget": "total_tokens=5"},
    )  # fmt: skip
    assert no_session.status_code == 400 and "x-tokenward-session" in no_session.json()["error"]["message"]
    looser = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=body,
        headers={**headers, "x-tokenward-session": "s-y", "x-tokenward-session-budget": "total_tokens=1000000"},
    )  # fmt: skip
    assert looser.status_code == 400 and "never replaces" in looser.json()["error"]["message"]
    assert gateway.observer().get_budget("session=demo/s-y:total_tokens").limit == 10
    assert len(gateway.observer().events()) == 1


def test_the_header_holds_several_budgets_with_commas_in_their_options() -> None:
    assert split_specs("total_tokens=1000, cost_usd=0.5/day;thresholds=50%,90%;models=gpt-5,claude-*") == [
        "total_tokens=1000",
        "cost_usd=0.5/day;thresholds=50%,90%;models=gpt-5,claude-*",
    ]
    key = KeyConfig("k", "0" * 64, {"project": "demo"}, allow_client_budgets=True)
    subject = Subject(project="demo", session="demo/s-1", task="demo/t-1")
    declared = carried_budgets(
        {"x-tokenward-session-budget": "total_tokens=100", "x-tokenward-task-budget": "requests=3"},
        key,
        subject,
    )
    assert [(k, [b.name for b in budgets]) for k, budgets in declared] == [
        ("session:demo/s-1", ["session=demo/s-1:total_tokens"]),
        ("task:demo/t-1", ["task=demo/t-1:requests"]),
    ]
    with pytest.raises(GatewayError, match="only adds a limit"):
        carried_budgets({"x-tokenward-session-budget": "total_tokens=1;overrides=each"}, key, subject)
    with pytest.raises(GatewayError, match="named by the gateway"):
        carried_budgets({"x-tokenward-session-budget": "total_tokens=1;name=per-user-daily"}, key, subject)
    daily = carried_budgets(
        {"x-tokenward-session-budget": "total_tokens=1, total_tokens=9/day"}, key, subject
    )
    assert [b.name for b in daily[0][1]] == [
        "session=demo/s-1:total_tokens",
        "session=demo/s-1:total_tokens/day",
    ]
    with pytest.raises(GatewayError, match="unknown meter"):
        carried_budgets({"x-tokenward-session-budget": "total_token=1"}, key, subject)


def test_the_lease_is_renewed_while_calls_come_and_its_budget_goes_when_they_stop() -> None:
    clock = ManualClock()
    ledger = MemoryLedger(clock=clock)
    carried = CarriedBudgets(ThreadedAsyncLedger(ledger), timedelta(seconds=60))
    budget = parse_short_spec("total_tokens=100", scope="session", subject_id="demo/s-1")
    declared = [("session:demo/s-1", (budget,))]

    async def run() -> None:
        await carried.apply(declared)
        for _ in range(4):  # calls every 25 s for 100 s: renewed, never expired
            clock.advance(25)
            await carried.apply(declared)
            ledger.reap()
            assert ledger.get_budget(budget.name) is not None
        clock.advance(61)  # no call for longer than the lease lives
        ledger.reap()
        assert ledger.get_budget(budget.name) is None
        await carried.apply(declared)  # a call comes again: joined again
        assert ledger.get_budget(budget.name) is not None
        await carried.close()
        assert ledger.get_budget(budget.name) is None

    asyncio.run(run())


def test_a_budget_header_sent_on_two_lines_carries_both(start_gateway) -> None:
    """A second ``x-tokenward-session-budget`` line (a proxy adding one) is a second budget, never
    dropped: here ``requests=1`` refuses the second call although the first line allows plenty."""
    gateway = start_gateway(keys=ALLOWED)
    headers = [
        ("authorization", f"Bearer {KEY}"),
        ("x-tokenward-session", "s-2l"),
        ("x-tokenward-session-budget", "total_tokens=100000"),
        ("x-tokenward-session-budget", "requests=1"),
    ]
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 20}
    url = f"{gateway.url}/v1/chat/completions"
    assert httpx.post(url, json=body, headers=headers).status_code == 200
    denied = httpx.post(url, json=body, headers=headers)
    assert denied.status_code == 402, denied.text
    assert denied.json()["error"]["budget"]["budget"] == "session=demo/s-2l:requests"


def test_a_session_may_carry_a_per_model_budget_beside_an_overall_one(start_gateway) -> None:
    """``total_tokens=30;models=gpt-4o`` and ``total_tokens=100000`` were "named alike" (the
    gateway names carried budgets, and refuses ``;name=``), so no session could carry both. The
    gpt-4o one refuses the second gpt-4o call; gpt-4o-mini is counted by the overall one only."""
    gateway = start_gateway(keys=ALLOWED)
    guard = tokenward.Guard("memory://")
    client = wrapped(gateway, guard)
    with guard.session("s-m", budget=["total_tokens=30;models=gpt-4o", "total_tokens=100000"]):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=20)
        with pytest.raises(tokenward.BudgetExceeded) as denied:
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=20)
        call(client)  # gpt-4o-mini
    assert denied.value.budget == "session=demo/s-m:total_tokens:models=gpt-4o"


def test_an_sdk_session_refuses_two_budgets_named_alike() -> None:
    """Both short forms are named ``session=s-1:total_tokens``: one silently replaced the other."""
    guard = tokenward.Guard("memory://")
    with (
        pytest.raises(tokenward.ConfigError, match="named alike"),
        guard.session("s-1", budget=["total_tokens=100/day", "total_tokens=1000"]),
    ):
        pass
    with guard.session("s-1", budget=["total_tokens=100;models=gpt-5", "total_tokens=1000"]) as session:
        assert sorted(b.name for b in session.budgets) == [
            "session=s-1:total_tokens",
            "session=s-1:total_tokens:models=gpt-5",
        ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("total_tokens=1e1000000", "below 1e31"),  # overflowed the decimal context: a 500
        ("total_tokens=1e-1000000", "decimal places"),  # a million digits in the 402 message
        ("total_tokens=30/rolling:2000000d", "at most 36500d"),  # overflowed timedelta: a 500
        ("total_tokens=30;thresholds=NaN%", "threshold 'NaN%'"),  # an uncaught InvalidOperation: a 500
    ],
)
def test_a_carried_budget_the_ledger_cannot_hold_is_a_400(start_gateway, spec, message) -> None:
    gateway = start_gateway(keys=ALLOWED)
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 20}
    headers = {
        "authorization": f"Bearer {KEY}",
        "x-tokenward-session": "s-x",
        "x-tokenward-session-budget": spec,
    }
    refused = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers)
    assert refused.status_code == 400, refused.text[:300]
    assert message in refused.json()["error"]["message"]
    assert gateway.observer().events() == []
