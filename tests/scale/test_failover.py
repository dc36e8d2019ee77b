"""The store-failure policy, in-process, on a private Redis and a private PostgreSQL: a budget
that fails closed refuses with a clear error naming it, one that fails open admits and is charged
when the store returns, and every failure is alerted (a callback, the log, the audit log). A
replica that dies holding reservations leaves nothing held once they expire."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.ledger.helpers import event, usd
from tests.scale.services import PrivatePostgres, PrivateRedis, postgres_bin
from tokenward.core.budgets import Budget, Subject, parse_budget_spec
from tokenward.errors import ConfigError, StoreUnavailable
from tokenward.ledger import Ledger, open_ledger
from tokenward.ledger.failover import StoreFailure

CLOSED = Subject(project="closed", user="c")
OPEN = Subject(project="open", user="o")
BOTH = Subject(project="open", user="c", team="t")  # an open project budget and a closed team one


def _budgets(ledger: Ledger) -> None:
    ledger.put_budget(Budget("closed-usd", "project", "cost_usd", Decimal(10), subject_id="closed"))
    ledger.put_budget(
        Budget("open-usd", "project", "cost_usd", Decimal(10), subject_id="open", on_store_failure="open")
    )
    ledger.put_budget(Budget("team-usd", "team", "cost_usd", Decimal(10), subject_id="t"))


def test_on_store_failure_is_validated_when_the_budget_is_built() -> None:
    with pytest.raises(ConfigError, match="on_store_failure must be closed or open"):
        Budget("b", "user", "cost_usd", Decimal(1), on_store_failure="maybe")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="on_store_failure"):
        Budget.from_dict({"scope": "user", "meter": "cost_usd", "limit": 1, "on_store_failure": "later"})
    assert Budget.from_dict({"scope": "user", "meter": "cost_usd", "limit": 1}).on_store_failure == "closed"
    spec = parse_budget_spec("project=p:cost_usd=5/day;on_store_failure=open")
    assert spec.on_store_failure == "open"
    assert Budget.from_dict(spec.to_dict()) == spec


def _policy_run(ledger: Ledger, stop: object, start: object) -> None:
    failures: list[StoreFailure] = []
    ledger.health.subscribe(failures.append)  # type: ignore[attr-defined]
    _budgets(ledger)
    before = ledger.reserve(OPEN, usd("1"))  # held while the store is up
    stop()  # type: ignore[operator]

    with pytest.raises(StoreUnavailable, match="'closed-usd' fails closed") as refused:
        ledger.reserve(CLOSED, usd("1"))
    assert refused.value.budgets == ("closed-usd",)
    with pytest.raises(StoreUnavailable, match="'team-usd' fails closed"):
        ledger.reserve(BOTH, usd("1"))  # one closed budget is enough to refuse
    admitted = ledger.reserve(OPEN, usd("2"))
    assert admitted.id.startswith("res_open_") and admitted.holds == ()
    ledger.settle(admitted.id, event(OPEN, usd("1.5"), at=ledger.clock.now(), request_id="during-1"))
    ledger.settle(before.id, event(OPEN, usd("0.75"), at=ledger.clock.now(), request_id="before-1"))
    assert [f.outcome for f in failures] == ["refused", "refused", "admitted", "spooled", "spooled"]
    assert failures[0].budgets == ("closed-usd",) and failures[0].subject == CLOSED

    start()  # type: ignore[operator]
    deadline = time.monotonic() + 20
    while ledger.flush(1):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the spool was never replayed"
    (balance,) = [b for b in ledger.balances(OPEN) if b.budget.name == "open-usd"]
    assert (balance.spent, balance.held) == (Decimal("2.25"), 0)  # charged on return; hold released
    assert sorted(e.request_id for e in ledger.events()) == ["before-1", "during-1"]
    actions = [e.action for e in ledger.audit_log()]
    assert actions.count("store.unavailable") == 1 and actions.count("store.recovered") == 1
    recovered = next(e for e in ledger.audit_log() if e.action == "store.recovered")
    assert recovered.after["counts"] == {"refused": 2, "admitted": 1, "spooled": 2}


@pytest.mark.redis
def test_redis_policy_closed_open_and_alerts(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path / "redis", persistent=True)
    server.start()
    url = f"{server.url}?prefix=tw_f&timeout=0.5&spool={tmp_path / 'spool.db'}&events=sqlite:///{tmp_path / 'events.db'}"
    ledger = open_ledger(url)
    try:
        _policy_run(ledger, server.stop, lambda: server.start(same_port=True))
    finally:
        ledger.close()
        server.stop()


@pytest.mark.postgres
def test_postgres_policy_closed_open_and_alerts(tmp_path: Path) -> None:
    if postgres_bin() is None:
        pytest.skip("initdb/pg_ctl not found")
    server = PrivatePostgres()
    server.start()
    ledger = open_ledger(f"{server.url}?schema=tw_f&timeout=1&spool={tmp_path / 'spool.db'}")
    try:
        _policy_run(ledger, server.stop, lambda: server.start(same_port=True))
    finally:
        ledger.close()
        server.remove()


_DIE = """
import os, sys
from datetime import timedelta
from datetime import timedelta
from decimal import Decimal
from tokenward.core.budgets import Subject
from tokenward.ledger import open_ledger
ledger = open_ledger(sys.argv[1])
reservation = ledger.reserve(Subject(project="closed", user="c"), {"cost_usd": Decimal("4")}, ttl=timedelta(seconds=1))
print(reservation.id, flush=True)
os._exit(17)  # no release, no close: a replica that died
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind",
    [pytest.param("redis", marks=pytest.mark.redis), pytest.param("postgres", marks=pytest.mark.postgres)],
)
def test_reservations_of_a_dead_replica_expire(kind: str, tmp_path: Path) -> None:
    if kind == "postgres" and postgres_bin() is None:
        pytest.skip("initdb/pg_ctl not found")
    if kind == "redis":
        server: PrivateRedis | PrivatePostgres = PrivateRedis(tmp_path / "redis", persistent=False)
        url = f"{server.url}?prefix=tw_d&reap_every=1s&spool={tmp_path / '{}.db'}&events=sqlite:///{tmp_path / 'events.db'}"
    else:
        server = PrivatePostgres()
        url = f"{server.url}?schema=tw_d&spool={tmp_path / '{}.db'}"
    server.start()
    ledger = open_ledger(url.replace("{}", "survivor"))
    try:
        _budgets(ledger)
        died = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_DIE), url.replace("{}", "dead")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert died.returncode == 17, died.stderr
        rid = died.stdout.strip()
        (held,) = ledger.balances(CLOSED)
        assert held.held == Decimal(4)
        time.sleep(1.2)
        if kind == "redis":  # expired in the background, with no call coming
            deadline = time.monotonic() + 5
            while ledger.balances(CLOSED)[0].held:
                assert time.monotonic() < deadline, "the dead replica's hold was never expired"
                time.sleep(0.1)
        ledger.reserve(CLOSED, usd("10"))  # the whole limit: fits only once the dead hold expired
        expired = ledger.reservation(rid)
        assert expired is not None and expired.state == "expired"
        (after,) = ledger.balances(CLOSED)
        assert (after.spent, after.held) == (0, Decimal(10))
    finally:
        ledger.close()
        if isinstance(server, PrivatePostgres):
            server.remove()
        else:
            server.stop()


@pytest.mark.postgres
def test_after_a_postgres_restart_every_thread_reconnects_and_unknown_keys_are_not_refused(
    tmp_path: Path,
) -> None:
    """Connections that died while idle (the server restarted) are replaced at their next
    statement, on every thread, so the first calls after a restart succeed; and while the server
    is down, a key this process never read is an outage (StoreUnavailable, a 503), not a 401."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from tokenward.ledger.records import KeyRecord

    if postgres_bin() is None:
        pytest.skip("initdb/pg_ctl not found")
    server = PrivatePostgres()
    server.start()
    ledger = open_ledger(f"{server.url}?schema=tw_r&timeout=2&spool={tmp_path / 'spool.db'}")
    try:
        _budgets(ledger)
        known = ledger.put_key(KeyRecord(id="known", name="known", key_sha256="a" * 64, subject=CLOSED))
        assert ledger.key_by_hash("a" * 64) == known  # read (and cached) before the outage

        pool = ThreadPoolExecutor(4)  # the same four threads before and after the restart
        barrier = threading.Barrier(4)

        def one() -> BaseException | None:
            barrier.wait(10)  # all four at once: four threads, four connections
            try:
                ledger.balances(CLOSED)
            except BaseException as exc:
                return exc
            return None

        def on_threads() -> list[BaseException | None]:
            return [f.result() for f in [pool.submit(one) for _ in range(4)]]

        assert on_threads() == [None] * 4  # four threads, four connections
        server.stop()
        with pytest.raises(StoreUnavailable):
            ledger.key_by_hash("b" * 64)  # made elsewhere meanwhile, perhaps: not known absent
        assert ledger.key_by_hash("a" * 64) == known  # read before: served from memory
        server.start(same_port=True)
        assert on_threads() == [None] * 4  # no thread's first statement fails on its dead connection
        assert ledger.key_by_hash("b" * 64) is None  # the server answers: truly absent
        pool.shutdown()
    finally:
        ledger.close()
        server.remove()


@pytest.mark.redis
def test_while_redis_hangs_calls_are_refused_at_once_not_each_after_the_timeout(tmp_path: Path) -> None:
    """Once an outage is known, one call at a time probes the store; the others are refused at
    once. Without that, each call on a hung Redis waits out the time-out (1 s here), and a
    gateway's few worker threads are all held waiting."""
    server = PrivateRedis(tmp_path / "redis", persistent=False)
    server.start()
    url = f"{server.url}?prefix=tw_h&timeout=1&spool={tmp_path / 's.db'}&events=sqlite:///{tmp_path / 'e.db'}"
    ledger = open_ledger(url)
    try:
        _budgets(ledger)
        ledger.reserve(CLOSED, usd("1"))
        sleeper = server.slow(4)
        time.sleep(0.2)
        with pytest.raises(StoreUnavailable):
            ledger.reserve(CLOSED, usd("1"))  # waits out the time-out: now the outage is known
        start = time.monotonic()
        for _ in range(10):
            with pytest.raises(StoreUnavailable, match="fails closed"):
                ledger.reserve(CLOSED, usd("1"))
        assert time.monotonic() - start < 5  # each waiting 1 s would take 10 s
        sleeper.wait(10)
        deadline = time.monotonic() + 5
        while True:  # back to normal within a probe or two
            try:
                ledger.reserve(CLOSED, usd("1"))
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "never recovered"
                time.sleep(0.1)
    finally:
        ledger.close()
        server.stop()


@pytest.mark.redis
def test_a_hold_that_reaches_a_stalled_redis_after_the_caller_gave_up_is_released(tmp_path: Path) -> None:
    """A hold sent to a Redis stalled by ``DEBUG SLEEP`` times out for the caller (the call is
    refused, 503 at the gateway) but Redis applies it when it wakes. It must not stay held, nor be
    charged when it expires: it was for a call never forwarded (the open defect of
    tests/scale/test_faults.py, "an event for a call not answered 200", was such a charge)."""
    server = PrivateRedis(tmp_path / "redis", persistent=False)
    server.start()
    url = f"{server.url}?prefix=tw_l&timeout=0.3&reap_every=0&spool={tmp_path / 's.db'}"
    ledger = open_ledger(f"{url}&events=sqlite:///{tmp_path / 'e.db'}")
    try:
        _budgets(ledger)
        assert ledger.release(ledger.reserve(CLOSED, usd("1")).id)  # budgets read: the next step is the hold
        sleeper = server.slow(1.5)
        time.sleep(0.2)
        with pytest.raises(StoreUnavailable):
            ledger.reserve(CLOSED, usd("2"), ttl=timedelta(seconds=2), idempotency_key="late", forwarded=True)
        sleeper.wait(10)
        ledger.flush(10)  # the release the failed hold left in the spool
        (balance,) = ledger.balances(CLOSED)
        assert (balance.spent, balance.held) == (Decimal(0), Decimal(0))
        time.sleep(2.2)
        ledger.reap()
        (balance,) = ledger.balances(CLOSED)
        assert (balance.spent, balance.held) == (Decimal(0), Decimal(0))
        assert ledger.events() == []
    finally:
        ledger.close()
        server.stop()
