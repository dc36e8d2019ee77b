"""No false denials in the SDK, sync and async, and across processes sharing a ledger file.

A call refused only because another call holds amounts that would fit against what is spent
waits for that hold to settle (``GuardSettings.admission_wait_seconds``), then is admitted.

Arithmetic (the fake's rules, as in ``test_wrapped_clients``): ``"Say hello"`` is charged 6 + 20 =
26 and held 9 + 20 = 29 with ``max_tokens: 20``. A session budget of 55 takes one hold (29) and
then has 26 left: a second call's hold of 29 does not fit, nor can it be clamped (26 - 9 = 17
output tokens, under ``min_output_tokens: 20``), until the first settles at 26 (29 left).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
from decimal import Decimal
from pathlib import Path

import openai

import tokenward
from tests.support.fixtures import UPSTREAM_KEY
from tokenward.core.budgets import Subject
from tokenward.core.decide import CallPlan
from tokenward.core.usage import Usage
from tokenward.errors import BudgetExceeded
from tokenward.guard import Guard, GuardSettings, Outcome

MESSAGES = [{"role": "user", "content": "Say hello"}]
SLOW = {"fake": {"latency_ms": 300}}


def _guard(tmp_path: Path, wait: float) -> tokenward.Guard:
    guard = tokenward.Guard(
        f"sqlite:///{tmp_path / 'ledger.db'}",
        budgets=["session:total_tokens=55"],
        settings=GuardSettings(admission_wait_seconds=wait, min_output_tokens=20),
        project="demo",
    )
    return guard


def _warm(guard: tokenward.Guard, client: openai.OpenAI) -> None:
    """One call outside the budget's session, so the calibration probe is not what is waited for."""
    with guard.session("warm-up"):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)


def _two_at_once(guard: tokenward.Guard, client: openai.OpenAI, session: str) -> list[object]:
    """Two slow calls of one session from two threads; "ok" or the error each ended with."""
    results: list[object] = []

    def call() -> None:
        with guard.session(session):
            try:
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, max_tokens=20, extra_body=SLOW
                )
                results.append("ok")
            except Exception as exc:
                results.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_sync_calls_wait_for_a_hold_to_settle(fake, tmp_path: Path) -> None:
    guard = _guard(tmp_path, 5)
    client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    _warm(guard, client)
    assert _two_at_once(guard, client, "s-1") == ["ok", "ok"]
    assert guard.ledger.balances(Subject(session="s-1"))[0].spent == 2 * 26


def test_async_calls_wait_for_a_hold_to_settle(fake, tmp_path: Path) -> None:
    guard = _guard(tmp_path, 5)
    client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    _warm(guard, client)
    aio = guard.wrap(openai.AsyncOpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))

    async def main() -> list[str]:
        async def one() -> str:
            with guard.session("s-2"):
                reply = await aio.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, max_tokens=20, extra_body=SLOW
                )
                return reply.choices[0].finish_reason

        return list(await asyncio.gather(one(), one()))

    assert asyncio.run(main()) == ["stop", "stop"]
    assert guard.ledger.balances(Subject(session="s-2"))[0].spent == 2 * 26


def test_without_waiting_the_second_call_is_refused(fake, tmp_path: Path) -> None:
    guard = _guard(tmp_path, 0)
    client = guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))
    results = _two_at_once(guard, client, "s-3")
    # the branch point's behaviour: refused while the budget was only held
    assert results.count("ok") == 1 and isinstance(next(r for r in results if r != "ok"), BudgetExceeded)


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from decimal import Decimal
    from tokenward.core.budgets import Subject
    from tokenward.core.decide import CallPlan
    from tokenward.core.usage import Usage
    from tokenward.guard import Guard, GuardSettings, Outcome

    guard = Guard(sys.argv[1], settings=GuardSettings(admission_wait_seconds=0))
    admission = guard.admit(Subject(session="shared"), CallPlan("gpt-4o-mini", 10, 80))
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    guard.settle(admission, Outcome(Usage(input_tokens=10, output_tokens=20)))
    print("settled", flush=True)
    """
)


def test_a_hold_of_another_process_is_waited_for(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    guard = Guard(url, settings=GuardSettings(admission_wait_seconds=10))
    guard.ledger.put_budget(tokenward.parse_budget_spec("session=shared:total_tokens=100"))
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, url, "0.4"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"  # 90 of 100 held
        started = time.monotonic()
        admission = guard.admit(Subject(session="shared"), CallPlan("gpt-4o-mini", 10, 50))
        waited = time.monotonic() - started
    finally:
        holder.wait(timeout=30)
    # refused at first (10 left), admitted once the other process settled at 30 (70 left); this
    # process's guard was never told: it saw the settle by reading the ledger again
    assert admission.decision.output_tokens == 50
    assert 0.2 < waited < 10
    guard.settle(admission, Outcome(Usage(input_tokens=10, output_tokens=50)))
    (balance,) = guard.ledger.balances(Subject(session="shared"))
    assert (balance.spent, balance.held) == (Decimal(90), Decimal(0))
    guard.close()
