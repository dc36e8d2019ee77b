"""Issue 15 item 2: work fanned out to threads keeps its session and task, so their budgets
apply (400 of 400 calls used to run unbudgeted from ``ThreadPoolExecutor.submit``); where the
attribution cannot follow, the guard says so.

The official ``openai`` client against the fake provider: ``Say hello`` is 6 prompt tokens and
the answer is ``max_tokens`` words, so a call with ``max_tokens=20`` costs 26 tokens."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import warnings

import openai
import pytest

import tokenward
from tests.support.fixtures import UPSTREAM_KEY
from tokenward.sdk import threads

MESSAGES = [{"role": "user", "content": "Say hello"}]
CALLS = 12  # a batch; the budget pays for 3 (3 x 26 = 78 of 100)


@pytest.fixture
def guard():
    guard = tokenward.Guard("memory://", user="alice")
    yield guard
    guard.close()


def client(fake, guard) -> openai.OpenAI:
    return guard.wrap(openai.OpenAI(api_key=UPSTREAM_KEY, base_url=f"{fake.url}/v1", max_retries=0))


def call(oai: openai.OpenAI) -> str:
    try:
        oai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    except tokenward.BudgetExceeded:
        return "denied"
    return "ok"


def test_thread_pool_submit_keeps_the_session_and_task_so_their_budgets_apply(fake, guard) -> None:
    oai = client(fake, guard)
    with (
        guard.session("batch-1", budget="total_tokens=100"),
        guard.task("t-1"),
        concurrent.futures.ThreadPoolExecutor(4) as pool,
    ):
        results = [f.result() for f in [pool.submit(call, oai) for _ in range(CALLS)]]
    assert results.count("ok") == 3 and results.count("denied") == CALLS - 3
    events = guard.ledger.events()
    assert len(events) == 3
    assert {(e.subject.session, e.subject.task, e.subject.user) for e in events} == {
        ("batch-1", "t-1", "alice")
    }
    # Outside any session, submit runs the caller's function untouched (nothing to carry).
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(call, oai).result() == "ok"
    assert guard.ledger.events()[-1].subject.session is None


def test_run_in_executor_and_to_thread_keep_the_session(fake, guard) -> None:
    oai = client(fake, guard)

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        with guard.session("async-1", budget="total_tokens=100"):
            default = [loop.run_in_executor(None, call, oai) for _ in range(3)]
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                given = [loop.run_in_executor(pool, call, oai) for _ in range(3)]
                # asyncio.to_thread copies the context by itself (a regression test)
                to_thread = [asyncio.to_thread(call, oai) for _ in range(3)]
                return list(await asyncio.gather(*default, *given, *to_thread))

    results = asyncio.run(main())
    assert results.count("ok") == 3 and results.count("denied") == 6
    assert [e.subject.session for e in guard.ledger.events()] == ["async-1"] * 3


def test_the_patch_lasts_while_a_guard_is_open(fake) -> None:
    original = concurrent.futures.ThreadPoolExecutor.submit
    already = threads.patched()  # another test's guard may still be open (not yet collected)
    first = tokenward.Guard("memory://")
    second = tokenward.Guard("memory://")
    assert threads.patched()
    first.close()
    assert threads.patched()  # the second is still open
    second.close()
    if not already:
        assert not threads.patched()
        assert concurrent.futures.ThreadPoolExecutor.submit is original


def test_a_raw_thread_warns_once_per_call_site_naming_bind(fake, guard) -> None:
    oai = client(fake, guard)
    caught: list[warnings.WarningMessage] = []

    def worker() -> None:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            for _ in range(2):
                call(oai)  # the same call site twice: one warning
            caught.extend(seen)

    with guard.session("s-raw", budget="total_tokens=1000"):
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    (warning,) = [w for w in caught if issubclass(w.category, tokenward.UnattributedCallWarning)]
    assert "tokenward.sdk.bind" in str(
        warning.message
    ) and "charged to the guard's defaults only (user=alice)" in str(warning.message)
    assert warning.filename == __file__  # it points at the caller's line, not at tokenward
    assert {e.subject.session for e in guard.ledger.events()} == {None}  # charged to alice alone
    # bind() carries it: no warning, charged to the session
    with guard.session("s-bound"), warnings.catch_warnings():
        warnings.simplefilter("error", tokenward.UnattributedCallWarning)
        thread = threading.Thread(target=tokenward.sdk.bind(call), args=(oai,))
        thread.start()
        thread.join()
    assert guard.ledger.events()[-1].subject.session == "s-bound"


def test_raise_and_ignore(fake) -> None:
    strict = tokenward.Guard("memory://", on_unattributed="raise")
    quiet = tokenward.Guard("memory://", on_unattributed="ignore")
    try:
        errors: list[BaseException] = []

        def worker(oai: openai.OpenAI) -> None:
            try:
                call(oai)
            except BaseException as exc:
                errors.append(exc)

        for guard in (strict, quiet):
            oai = client(fake, guard)
            with guard.session("s"), warnings.catch_warnings():
                warnings.simplefilter("error", tokenward.UnattributedCallWarning)
                thread = threading.Thread(target=worker, args=(oai,))
                thread.start()
                thread.join()
        (error,) = errors  # the strict guard refused; the quiet one ran the call silently
        assert isinstance(error, tokenward.UnattributedCall) and isinstance(error, openai.OpenAIError)
        assert strict.ledger.events() == [] and len(quiet.ledger.events()) == 1
        # no session open anywhere: never unattributed
        assert call(client(fake, strict)) == "ok"
        with pytest.raises(tokenward.ConfigError, match="on_unattributed"):
            tokenward.Guard("memory://", on_unattributed="shout")  # type: ignore[arg-type]
    finally:
        strict.close()
        quiet.close()
