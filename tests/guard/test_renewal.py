"""Holds of calls that outlast their reservation's time to live are renewed while the call runs,
so a budget is not overspent by calls admitted into room a running call is about to use; and a
call that is dropped without being settled stops being renewed, so its hold still expires (and,
as the call was forwarded, is charged: :mod:`tokenward.ledger.reclaim`)."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import openai

import tokenward
from tests.support.fixtures import KEY, UPSTREAM_KEY, wait_settled
from tokenward.core.budgets import Budget, Subject
from tokenward.core.decide import CallPlan
from tokenward.guard import Guard
from tokenward.guard.flow import GuardSettings
from tokenward.ledger.sqlite import SQLiteLedger

ALICE = Subject(user="alice")


def _plan(output_tokens: int) -> CallPlan:
    return CallPlan(model="gpt-4o-mini", input_tokens=10, max_output_tokens=output_tokens)


def _guard(tmp_path: Path, ttl: float) -> Guard:
    ledger = SQLiteLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.put_budget(Budget("alice-tokens", "user", "total_tokens", Decimal(100), subject_id="alice"))
    return Guard(ledger, settings=GuardSettings(ttl=timedelta(seconds=ttl)))


def _held(guard: Guard) -> Decimal:
    (balance,) = guard.ledger.balances(ALICE)
    return balance.held


def test_a_running_call_keeps_its_hold_past_the_ttl(tmp_path: Path) -> None:
    guard = _guard(tmp_path, ttl=0.6)
    admission = guard.admit(ALICE, _plan(50))  # holds 10 + 50
    time.sleep(1.5)  # two and a half times the ttl: renewed every 0.2 s meanwhile
    assert guard.ledger.reap() == 0
    assert _held(guard) == Decimal(60)
    assert guard.ledger.reservation(admission.reservation.id).state == "active"  # type: ignore[union-attr]
    assert guard.renewer.renewed >= 3
    guard.release(admission)
    renewed = guard.renewer.renewed
    time.sleep(0.5)
    assert guard.renewer.renewed == renewed  # released: no longer renewed
    guard.close()


def test_a_ttl_lowered_after_start_is_the_one_renewed(tmp_path: Path) -> None:
    """A gateway reload replaces the guard's settings: calls admitted after it hold for the new
    time to live, and are renewed each third of it (not of the old one)."""
    guard = _guard(tmp_path, ttl=600)
    guard.settings = GuardSettings(ttl=timedelta(seconds=0.6))
    admission = guard.admit(ALICE, _plan(50))
    time.sleep(1.5)
    assert guard.ledger.reap() == 0
    assert guard.ledger.reservation(admission.reservation.id).state == "active"  # type: ignore[union-attr]
    guard.close()


def test_an_idempotent_readmission_does_not_disturb_renewals(tmp_path: Path) -> None:
    guard = _guard(tmp_path, ttl=0.6)
    first = guard.admit(ALICE, _plan(20), request_id="req-a")
    second = guard.admit(ALICE, _plan(20), request_id="req-b")
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # a client retrying the first call with its request id
        again = guard.admit(ALICE, _plan(20), request_id="req-a")
        assert again.reservation.id == first.reservation.id
        time.sleep(0.15)
    assert guard.ledger.reap() == 0
    states = [guard.ledger.reservation(a.reservation.id).state for a in (first, second)]  # type: ignore[union-attr]
    assert states == ["active", "active"]
    guard.close()


def test_a_forked_child_renews_its_own_calls() -> None:
    """A guard used before ``os.fork()`` (gunicorn --preload, multiprocessing's fork): the child
    starts its own renewer instead of trusting the parent's thread, which does not exist there."""
    guard = Guard("memory://", settings=GuardSettings(ttl=timedelta(seconds=0.6)))
    guard.ledger.put_budget(Budget("alice-tokens", "user", "total_tokens", Decimal(100), subject_id="alice"))
    guard.release(guard.admit(ALICE, _plan(10)))  # the renewer thread exists in the parent
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status
        code = 1
        try:
            admission = guard.admit(ALICE, _plan(50))
            time.sleep(1.5)
            reaped = guard.ledger.reap()
            state = guard.ledger.reservation(admission.reservation.id).state  # type: ignore[union-attr]
            code = 0 if (reaped, state) == (0, "active") else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    guard.close()


def test_an_abandoned_admission_is_no_longer_renewed_and_its_hold_is_charged(tmp_path: Path) -> None:
    """A call admitted and dropped unsettled (an SDK stream created and never read) was forwarded
    to a provider: when its hold expires it is charged (an event ``reclaimed``), not released for
    free (issue 14, item 5: the branch point left an expired, uncharged hold)."""
    guard = _guard(tmp_path, ttl=0.6)
    admission = guard.admit(ALICE, _plan(50))  # holds 10 + 50 tokens
    reservation_id, request_id = admission.reservation.id, admission.request_id
    del admission
    gc.collect()
    time.sleep(1.0)
    assert guard.ledger.reap() == 1
    assert guard.ledger.reservation(reservation_id).state == "reclaimed"  # type: ignore[union-attr]
    (balance,) = guard.ledger.balances(ALICE)
    assert (balance.spent, balance.held) == (Decimal(60), Decimal(0))
    (event,) = guard.ledger.events()
    assert (event.request_id, event.status, event.model) == (request_id, "reclaimed", "gpt-4o-mini")
    assert event.charged["total_tokens"] == Decimal(60)
    guard.close()


def test_a_stream_longer_than_the_ttl_through_the_gateway_is_not_overspent(start_gateway) -> None:
    """ttl 1 s; a stream of 40 tokens taking about 3 s holds its room the whole time: a second
    call that would fit only if that hold were gone is clamped or refused, never admitted into
    it, and the budget ends at or under its limit."""
    gateway = start_gateway(
        budgets=[
            {"name": "alice-tokens", "scope": "user", "id": "alice", "meter": "total_tokens", "limit": 120}
        ],
        defaults={"reservation_ttl_seconds": 1, "min_output_tokens": 16},
    )
    client = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0)
    finished = threading.Event()
    long_text: list[str] = []

    def long_stream() -> None:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=60,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"fake": {"reply_tokens": 60, "chunk_tokens": 2, "chunk_delay_ms": 100}},
        )
        long_text.extend(c.choices[0].delta.content or "" for c in stream if c.choices)
        finished.set()

    runner = threading.Thread(target=long_stream)
    runner.start()
    time.sleep(2.0)  # twice the ttl into the stream
    assert not finished.is_set()
    observer = gateway.observer()
    (balance,) = observer.balances(Subject(user="alice"))
    assert balance.held > 60  # the stream's hold is still there
    try:
        second = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=60,
            extra_body={"fake": {"reply_tokens": 60}},
        )
    except openai.APIStatusError as exc:  # refused: fine too, as long as it was not admitted in full
        assert exc.status_code == 402
    else:  # clamped to what the running stream's hold leaves
        assert second.usage is not None and second.usage.completion_tokens < 60
        assert second.choices[0].finish_reason == "length"
    runner.join(30)
    assert finished.is_set() and "".join(long_text).count("hello") == 60
    wait_settled(gateway.state)  # settled just after the answer (gateway.settling)
    (balance,) = observer.balances(Subject(user="alice"))
    assert balance.held == 0
    assert balance.spent <= 120
    assert len(observer.events()) == 2


def _sdk_guard(ttl: float) -> tokenward.Guard:
    return tokenward.Guard(
        "memory://",
        budgets=["user=alice:total_tokens=1000"],
        settings=GuardSettings(ttl=timedelta(seconds=ttl)),
        user="alice",
    )


def test_sdk_sync_stream_keeps_its_hold_while_it_is_read(fake) -> None:
    guard = _sdk_guard(ttl=0.6)
    client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Say hello"}],
        max_tokens=30,
        stream=True,
        extra_body={"fake": {"reply_tokens": 30, "chunk_tokens": 3, "chunk_delay_ms": 150}},
    )
    for seen, _chunk in enumerate(stream, start=1):
        if seen == 8:  # about 1.2 s in: twice the ttl
            assert guard.ledger.reap() == 0
            (balance,) = guard.ledger.balances(ALICE)
            assert balance.held > 0
    (balance,) = guard.ledger.balances(ALICE)
    assert (balance.held, balance.spent) == (0, 6 + 30)
    guard.close()


def test_sdk_async_stream_keeps_its_hold_while_it_is_read(fake) -> None:
    guard = _sdk_guard(ttl=0.6)
    client = guard.wrap(openai.AsyncOpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))

    async def main() -> int:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Say hello"}],
            max_tokens=30,
            stream=True,
            extra_body={"fake": {"reply_tokens": 30, "chunk_tokens": 3, "chunk_delay_ms": 150}},
        )
        reaped = 0
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 8:
                reaped = guard.ledger.reap()
        return reaped

    assert asyncio.run(main()) == 0
    (balance,) = guard.ledger.balances(ALICE)
    assert (balance.held, balance.spent) == (0, 6 + 30)
    guard.close()
