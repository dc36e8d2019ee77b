"""Faults under load: a slow, restarted or emptied Redis; a slow or restarted PostgreSQL; an
events store that is down while a replica is killed. Each test starts private servers of its own.

Two projects share every run: ``closed`` (its budget fails closed: refused with 503 while the
store is unreachable) and ``open`` (fails open: admitted unchecked, charged when the store
returns). Afterwards: every answered call has exactly one usage event, every budget's spend is the
sum of its events, and once the reservation time-to-live (3 s) has passed nothing is held.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.ledger.backends import BACKENDS, POSTGRES_URL, REDIS_URL, drop_postgres_schema, require_available
from tests.scale.load import Load
from tests.scale.services import (
    PrivatePostgres,
    PrivateRedis,
    Replica,
    gateway_config,
    postgres_bin,
    replicas,
)
from tokenward.core.budgets import Subject
from tokenward.ledger import Ledger, open_ledger
from tokenward.ledger.spool import Spool

pytestmark = pytest.mark.slow

TTL = 3
KEYS = [
    {"key": "tw-closed", "name": "closed-key", "user": "c1", "project": "closed"},
    {"key": "tw-open", "name": "open-key", "user": "o1", "project": "open"},
]
BUDGETS = [
    {"name": "closed-tokens", "scope": "project", "id": "closed", "meter": "total_tokens", "limit": 10**9},
    {"name": "open-tokens", "scope": "project", "id": "open", "meter": "total_tokens", "limit": 10**9,
     "on_store_failure": "open"},
]  # fmt: skip


def _needs_private_postgres() -> None:
    if postgres_bin() is None:
        pytest.skip("initdb/pg_ctl not found: cannot start a private PostgreSQL")


def _schema() -> str:
    import uuid

    return f"tw_t{uuid.uuid4().hex[:12]}"


def _check_recorded(reader: Ledger, load: Load, *, answered_only: bool = True) -> None:
    """Every answered call recorded exactly once; each budget's spend is the sum of its events;
    nothing held once the time-to-live has passed."""
    events = reader.events()
    ids = Counter(e.request_id for e in events)
    assert ids, "no usage event at all"
    assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1][:5]
    # no event for a call not answered 200: a hold that reached a stalled Redis after the
    # gateway gave up on it (and refused the call) was once charged when it expired
    assert load.answered() <= set(ids), sorted(load.answered() - set(ids))[:5]
    if answered_only:
        assert set(ids) == load.answered(), sorted(set(ids) - load.answered())[:5]
    time.sleep(TTL + 0.5)
    reader.reap()
    for project in ("closed", "open"):
        subject = Subject(project=project)
        charged = sum((e.charged["total_tokens"] for e in events if e.subject.project == project), Decimal(0))
        (balance,) = reader.balances(subject)
        assert (balance.spent, balance.held) == (charged, 0), project


def _alerts(reader: Ledger) -> list[str]:
    return [e.action for e in reader.audit_log() if e.action.startswith("store.")]


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.parametrize("persistent", [True, False], ids=["appendonly", "no-persistence"])
def test_redis_slow_then_restarted_mid_load(persistent: bool, tmp_path: Path) -> None:
    """Redis stalls for 2 s (DEBUG SLEEP), later is killed and restarted (with its data, or empty)."""
    require_available(BACKENDS["postgres"])
    server = PrivateRedis(tmp_path / "redis", persistent=persistent)
    server.start()
    schema = _schema()
    events = f"{POSTGRES_URL}?schema={schema}"
    url = f"{server.url}?prefix={schema}&timeout=0.5&spool={tmp_path / 'spool.db'}&events={events}"
    reader_url = url.replace("spool.db", "reader-spool.db")
    config = gateway_config(tmp_path / "gw.yaml", url, budgets=BUDGETS, keys=KEYS, ttl_seconds=TTL)
    try:
        with replicas([config], tmp_path) as (replica,):
            load = Load([replica.url], ["tw-closed", "tw-open"], seconds=7.5).start()
            time.sleep(1.5)
            server.slow(2)
            time.sleep(3.0)
            server.restart(down_for=1.0)
            back = time.monotonic() - load.started  # the server answers again (restart waits for it)
            load.join()
            assert replica.stop() in (0, -15)
        closed, opened = load.statuses("tw-closed"), load.statuses("tw-open")
        assert set(closed) == {200, 503}, closed  # refused while Redis was away, served otherwise
        # admitted unchecked while Redis was away (on a failure, say when and why, against when
        # Redis answered again: it failed once in CI, under load, and did not fail again)
        refused = [(round(r.at, 2), r.code) for r in load.results if r.key == "tw-open" and r.status != 200]
        assert set(opened) == {200}, (opened, back, refused[:20])
        assert {r.code for r in load.results if r.status == 503} == {"ledger_unavailable"}
        late = [r for r in load.results if r.at > back + 0.5]
        assert late and all(r.status == 200 for r in late), back  # back to normal after the restart
        reader = open_ledger(reader_url)
        try:
            _check_recorded(reader, load)
            assert {"store.unavailable", "store.recovered"} <= set(_alerts(reader))
        finally:
            reader.close()
    finally:
        server.stop()
        drop_postgres_schema(events)


@pytest.mark.postgres
def test_postgres_slow_then_restarted_mid_load(tmp_path: Path) -> None:
    """A ``postgresql://`` ledger alone: a table lock stalls it for 2 s, later it is stopped
    (immediate, as a crash) and restarted."""
    _needs_private_postgres()
    server = PrivatePostgres()
    server.start()
    url = f"{server.url}?schema=tw_fault&timeout=0.5&spool={tmp_path / 'pg-spool.db'}"
    config = gateway_config(tmp_path / "gw.yaml", url, budgets=BUDGETS, keys=KEYS, ttl_seconds=TTL)
    try:
        with replicas([config], tmp_path) as (replica,):
            load = Load([replica.url], ["tw-closed", "tw-open"], seconds=7.5).start()
            time.sleep(1.5)
            _lock_for(server.url, "tw_fault.balances", 2.0)
            time.sleep(2.5)
            server.restart(down_for=1.0)
            back = time.monotonic() - load.started  # the server answers again (restart waits for it)
            load.join()
            assert replica.stop() in (0, -15)
        closed, opened = load.statuses("tw-closed"), load.statuses("tw-open")
        assert set(closed) == {200, 503}, closed
        assert set(opened) == {200}, opened
        assert {r.code for r in load.results if r.status == 503} == {"ledger_unavailable"}
        late = [r for r in load.results if r.at > back + 0.5]
        assert late and all(r.status == 200 for r in late), back
        assert Spool(tmp_path / "pg-spool.db").pending() == 0
        reader = open_ledger(f"{server.url}?schema=tw_fault")
        try:
            _check_recorded(reader, load)
            assert {"store.unavailable", "store.recovered"} <= set(_alerts(reader))
        finally:
            reader.close()
    finally:
        server.remove()


def _lock_for(url: str, table: str, seconds: float) -> threading.Thread:
    """Hold an exclusive lock on ``table`` for ``seconds`` from another connection."""
    ready = threading.Event()

    def hold() -> None:
        with psycopg.connect(url) as conn:
            conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            ready.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    ready.wait(10)
    return thread


@pytest.mark.redis
def test_events_store_down_and_the_replica_killed(tmp_path: Path) -> None:
    """Redis serves; the events store (a private PostgreSQL) goes down. Calls keep being answered
    without waiting for it, their events pile up in the replica's spool; the replica is killed
    (SIGKILL) with events still spooled; the store returns and a new replica on the same spool
    stores every one of them, once."""
    require_available(BACKENDS["redis"])
    _needs_private_postgres()
    store = PrivatePostgres()
    store.start()
    schema = _schema()
    spool_path = tmp_path / "spool.db"
    url = f"{REDIS_URL}?prefix={schema}&spool={spool_path}&events={store.url}?schema=tw_events&timeout=1"
    config = gateway_config(tmp_path / "gw.yaml", url, budgets=BUDGETS, keys=KEYS, ttl_seconds=TTL)
    try:
        first = Replica(config, tmp_path / "first.log")
        load = Load([first.url], ["tw-closed", "tw-open"], seconds=3.0, workers=8).start()
        time.sleep(0.8)
        store.stop()
        outage = time.monotonic() - load.started
        time.sleep(1.5)
        waiting = Spool(spool_path).pending()
        load.join()
        first.proc.kill()  # no flush, no goodbye
        first.proc.wait(10)
        assert waiting > 20, waiting  # the events waited in the spool ...
        during = [r for r in load.results if r.at > outage + 0.2]
        assert during and all(r.status == 200 for r in during)  # ... while every call was answered
        store.start(same_port=True)
        with replicas([config], tmp_path):
            pass  # starts, drains the spool it inherited, stops (SIGTERM)
        assert Spool(spool_path).pending() == 0
        reader = open_ledger(url.replace("spool.db", "reader-spool.db"))
        try:
            _check_recorded(reader, load, answered_only=False)
        finally:
            reader.close()
    finally:
        store.remove()
        _drop_keys(schema)


def _drop_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{{{prefix}}}:*"))
    if keys:
        client.delete(*keys)
    client.close()
