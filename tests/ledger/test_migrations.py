"""A ledger written by the branch point's code opens and migrates in place (issue 14).

The fixtures (``fixtures/``) were written by the code of commit 84d0fef, run from a ``git
worktree`` of it by ``fixtures/make_branch_point_ledgers.py`` (its docstring says how): a SQLite
file at schema version 4 and a ``pg_dump`` of a PostgreSQL schema at version 1. Each holds three
budgets, an active and a settled reservation (the settled one deleted by the migration of issue 17), three usage events (one with a response id, one
whose metadata marks it disputed), a direct charge, an adjustment, a stop marker, a key, an audit
entry and a calibration row.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.ledger.backends import BACKENDS, POSTGRES_URL, drop_postgres_schema, require_available
from tokenward.clock import ManualClock
from tokenward.core.budgets import Subject
from tokenward.ledger import Ledger, open_ledger
from tokenward.ledger.postgres.schema import SCHEMA_VERSION as PG_VERSION
from tokenward.ledger.records import EVENT_LOOKUPS
from tokenward.ledger.sqlite.schema import SCHEMA_VERSION as SQLITE_VERSION

FIXTURES = Path(__file__).parent / "fixtures"
T1 = datetime(2025, 6, 2, 12, 0, 5, tzinfo=UTC)  # five seconds after the fixture was written
ALICE = Subject(org="acme", team="red", user="alice", session="s-fixture")


def _check(ledger: Ledger) -> None:
    """What the branch point wrote is all there and works on the new schema."""
    assert [b.name for b in ledger.budgets()] == ["alice-usd", "each-session", "each-user"]
    active = ledger._find_idempotent("req-active")  # type: ignore[attr-defined]
    assert active is not None and active.state == "active" and active.owner is None
    assert not active.forwarded  # written before the mark existed
    events = {e.request_id: e for e in ledger.events()}
    assert sorted(events) == ["chg-bob", "req-disputed", "req-settled"]
    found = ledger.event_by_metadata("response_id", "chatcmpl-fixture-1")
    assert found is not None and found.request_id == "req-settled"
    # the disputed column is NULL for old rows: their metadata says
    assert [e.request_id for e in ledger.disputed_events()] == ["req-disputed"]
    (usd,) = [b for b in ledger.balances(Subject(user="alice")) if b.budget.name == "alice-usd"]
    assert (usd.spent, usd.held) == (Decimal("0.0005775"), Decimal("0.002"))
    assert [a.id for a in ledger.adjustments()] == ["adj-fixture"]
    assert ledger.stop_of(ALICE) is not None
    assert ledger.get_key("key-fixture") is not None
    assert [a.action for a in ledger.audit_log()] == ["key.put"]
    assert ledger.estimate_stats("gpt-4o-mini") is not None
    # and the new features work on it: a forwarded reservation, a lease
    bob = Subject(org="acme", user="bob")
    # issue 17: the settled reservation the branch point kept is deleted by the migration (the
    # active one stays, above); its key is answered from its call's event, holding nothing
    assert ledger._find_idempotent("req-settled") is None  # type: ignore[attr-defined]
    answer = ledger.reserve(bob, {"total_tokens": Decimal(5)}, idempotency_key="req-settled")
    assert (answer.state, answer.holds, answer.request_id) == ("settled", (), "req-settled")
    assert answer.amounts == events["req-settled"].held
    reservation = ledger.reserve(bob, {"total_tokens": Decimal(5)}, idempotency_key="req-new", forwarded=True)
    assert ledger.reservation(reservation.id).forwarded  # type: ignore[union-attr]
    assert ledger.join_lease("session:s-new", "w1", ttl=timedelta(seconds=30)) is False
    assert ledger.leave_lease("session:s-new", "w1") is False
    # issue 18: a secret shared by every process (made once, then the same), clamps recorded
    assert ledger.secret("dashboard") == ledger.secret("dashboard") != ledger.secret("other")


@pytest.mark.sqlite
def test_a_sqlite_ledger_of_the_branch_point_migrates_in_place(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    shutil.copy(FIXTURES / "ledger_v4.sqlite", path)
    ledger = open_ledger(f"sqlite:///{path}", clock=ManualClock(T1))
    try:
        import sqlite3

        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SQLITE_VERSION
            columns = {row[1] for row in conn.execute("PRAGMA table_info(usage_events)")}
            assert {"disputed", "clamped_by"} <= columns  # issue 14, issue 18
            for key in EVENT_LOOKUPS:  # the lookup the ledger runs, found by its index, not a scan
                plan = conn.execute(
                    "EXPLAIN QUERY PLAN SELECT data FROM usage_events "
                    f"WHERE json_extract(data, '$.metadata.{key}') = 'x' ORDER BY seq DESC LIMIT 1"
                ).fetchall()
                assert f"USING INDEX usage_events_{key}" in str(plan), plan
                assert "TEMP B-TREE" not in str(plan), plan  # and ordered by it
        finally:
            conn.close()
        _check(ledger)
    finally:
        ledger.close()


def _load_dump(schema: str, name: str = "ledger_pg_v1.sql", written_as: str = "tw_fixture_v1") -> None:
    """Load a fixture's dump under ``schema`` (its own name replaced; psql's meta-commands
    dropped, the rest run as plain SQL)."""
    text = (FIXTURES / name).read_text()
    lines = [line for line in text.splitlines() if not line.startswith("\\")]
    script = "\n".join(lines).replace(written_as, schema)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(script)  # type: ignore[arg-type]
        conn.execute("SELECT pg_catalog.set_config('search_path', 'public', false)")


@pytest.mark.postgres
def test_a_postgres_ledger_of_the_branch_point_migrates_in_place(tmp_path: Path) -> None:
    require_available(BACKENDS["postgres"])
    schema = f"tw_t{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES_URL}?schema={schema}&spool={tmp_path / 'spool.db'}"
    _load_dump(schema)
    try:
        ledger = open_ledger(url, clock=ManualClock(T1))
        try:
            with psycopg.connect(POSTGRES_URL) as conn:
                versions = conn.execute(
                    f'SELECT version FROM "{schema}".tokenward_migrations ORDER BY 1'
                ).fetchall()
                assert [v for (v,) in versions] == list(range(1, PG_VERSION + 1))
                conn.execute(f'SET search_path TO "{schema}"')
                conn.execute("SET enable_seqscan = off")  # a few rows: a scan would be cheaper
                for key in EVENT_LOOKUPS:  # the lookup the ledger runs can use its index
                    plan = conn.execute(
                        "EXPLAIN SELECT data FROM usage_events "
                        f"WHERE data->'metadata'->>'{key}' = 'x' ORDER BY seq DESC LIMIT 1"
                    ).fetchall()
                    assert f"usage_events_{key}" in str(plan), plan
            _check(ledger)
        finally:
            ledger.close()
    finally:
        drop_postgres_schema(url)


def _check_v6(ledger: Ledger, columns: set[str]) -> None:
    """Issue 15/16's migration (SQLite 6, PostgreSQL 3) on a ledger written by main before it: the
    old events read back with no tool-definition count (unknown, never 0), and denials work."""
    assert "tool_definition_tokens" in columns
    assert [b.name for b in ledger.budgets()] == ["alice-usd", "each-session", "each-user"]
    events = {e.request_id: e for e in ledger.events()}
    assert sorted(events) == ["chg-bob", "req-disputed", "req-settled"]
    assert all(e.tool_definition_tokens is None for e in events.values())
    assert ledger.denials() == []
    from tests.ledger.test_denials import ALICE as DENIED
    from tests.ledger.test_denials import _denial, _exceeded

    ledger.record_denial(_denial(_exceeded(), DENIED, T1, "req-refused"))
    assert [d.request_id for d in ledger.denials()] == ["req-refused"]


@pytest.mark.sqlite
def test_a_sqlite_ledger_of_main_before_issue_15_migrates_to_6(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "ledger.db"
    shutil.copy(FIXTURES / "ledger_v5.sqlite", path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
    conn.close()
    ledger = open_ledger(f"sqlite:///{path}", clock=ManualClock(T1))
    try:
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SQLITE_VERSION
            columns = {row[1] for row in conn.execute("PRAGMA table_info(usage_events)")}
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            assert {"denials", "idempotency"} <= tables
        finally:
            conn.close()
        _check_v6(ledger, columns)
    finally:
        ledger.close()


@pytest.mark.postgres
def test_a_postgres_ledger_of_main_before_issue_15_migrates_to_3(tmp_path: Path) -> None:
    require_available(BACKENDS["postgres"])
    schema = f"tw_t{uuid.uuid4().hex[:12]}"
    url = f"{POSTGRES_URL}?schema={schema}&spool={tmp_path / 'spool.db'}"
    _load_dump(schema, "ledger_pg_v2.sql", "tw_fixture_v2")
    try:
        ledger = open_ledger(url, clock=ManualClock(T1))
        try:
            with psycopg.connect(POSTGRES_URL) as conn:
                versions = conn.execute(
                    f'SELECT version FROM "{schema}".tokenward_migrations ORDER BY 1'
                ).fetchall()
                assert [v for (v,) in versions] == list(range(1, PG_VERSION + 1))
                columns = {
                    r[0]
                    for r in conn.execute(
                        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                        "AND table_name = 'usage_events'",
                        (schema,),
                    )
                }
            _check_v6(ledger, columns)
        finally:
            ledger.close()
    finally:
        drop_postgres_schema(url)
