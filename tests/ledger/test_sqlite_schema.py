"""SQLite schema: versioned with PRAGMA user_version, migrated once, refused when newer."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.ledger.helpers import ALICE, T0, D, cost_budget, event, spent_held, usd
from tokenward.errors import LedgerError
from tokenward.ledger import open_ledger
from tokenward.ledger.sqlite import SCHEMA_VERSION, SQLiteLedger

pytestmark = [pytest.mark.sqlite]


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def _schema(path: Path) -> list[tuple[str, str]]:
    conn = _raw(path)
    try:
        return conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        conn.close()


def _user_version(path: Path) -> int:
    conn = _raw(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_a_fresh_file_gets_the_current_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dirs" / "ledger.db"  # parent directories are created
    ledger = open_ledger(f"sqlite:///{path}")
    ledger.close()
    assert _user_version(path) == SCHEMA_VERSION >= 1
    names = {name for name, _ in _schema(path)}
    assert {"budgets", "balances", "reservations", "usage_events"} <= names
    conn = _raw(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_an_absolute_url_with_four_slashes(tmp_path: Path) -> None:
    path = tmp_path / "abs.db"
    assert str(path).startswith("/")
    ledger = SQLiteLedger(f"sqlite:///{path}")
    assert ledger.path == path
    ledger.close()
    assert path.exists()


def test_reopening_keeps_everything_and_does_not_migrate_again(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    url = f"sqlite:///{path}"
    first = open_ledger(url)
    first.put_budget(cost_budget("alice-usd", "user", "10", "alice"))
    reservation = first.reserve(ALICE, usd("4"))
    first.settle(None, event(ALICE, usd("1.5"), at=T0, request_id="e1"))
    first.close()
    schema = _schema(path)
    conn = _raw(path)
    conn.execute("CREATE TABLE marker (x)")  # a migration that rebuilt the file would lose this
    conn.close()

    for _ in range(2):
        again = open_ledger(url)
        try:
            assert [b.name for b in again.budgets()] == ["alice-usd"]
            assert spent_held(again, ALICE, "alice-usd") == (D("1.5"), D("4"))
            assert again.reservation(reservation.id).state == "active"  # type: ignore[union-attr]
            assert [e.request_id for e in again.events()] == ["e1"]
        finally:
            again.close()

    assert _user_version(path) == SCHEMA_VERSION
    assert [row for row in _schema(path) if row[0] != "marker"] == schema


def test_a_file_from_a_newer_tokenward_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    open_ledger(f"sqlite:///{path}").close()
    conn = _raw(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()

    with pytest.raises(LedgerError) as error:
        open_ledger(f"sqlite:///{path}")

    message = str(error.value)
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    assert "newer than this tokenward" in message
    assert "upgrade tokenward" in message
    assert str(path) in message
    assert _user_version(path) == SCHEMA_VERSION + 1  # left as found


def test_a_file_that_is_not_a_database_is_a_ledger_error(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not a SQLite database, just some bytes" * 100)
    with pytest.raises(LedgerError, match=r"ledger\.db"):
        open_ledger(f"sqlite:///{path}")


def test_a_version_2_file_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    """A file written before threshold events, keys and template instances existed."""
    from tokenward.ledger.sqlite.schema import _MIGRATIONS, split_statements

    path = tmp_path / "old.db"
    raw = _raw(path)
    for number in range(2):
        for statement in split_statements(_MIGRATIONS[number]):
            raw.execute(statement)
    raw.execute("PRAGMA user_version = 2")
    old_spec = '{"name": "each-user", "scope": "user", "meter": "cost_usd", "limit": "10", "subject_id": null, "window": "none", "mode": "hard", "unpriced": "deny"}'
    raw.execute("INSERT INTO budgets (name, spec) VALUES ('each-user', ?)", (old_spec,))
    raw.execute("INSERT INTO balances VALUES ('each-user', 'alice', '', '4', '0')")
    raw.close()

    ledger = SQLiteLedger(f"sqlite:///{path}")
    try:
        assert _user_version(path) == SCHEMA_VERSION
        budget = ledger.get_budget("each-user")
        assert budget is not None and (budget.action, len(budget.thresholds)) == ("clamp", 3)
        assert [i.subject_id for i in ledger.instances("each-user")] == ["alice"]  # backfilled
        assert spent_held(ledger, ALICE, "each-user") == (D("4"), D("0"))
        ledger.settle(None, event(ALICE, usd("2"), at=T0))  # 6 of 10: crosses 50 %
        assert [str(e.threshold) for e in ledger.threshold_events()] == ["0.5"]
    finally:
        ledger.close()


def test_an_admit_and_a_settle_take_a_fixed_handful_of_statements(tmp_path: Path) -> None:
    """The hot path: BEGIN, reap, revisions, read balances, insert reservation, write balances,
    COMMIT (7); BEGIN, reservation, insert event, its daily rollup rows (issue 18: one statement),
    its state, revisions, read, write, COMMIT (9); whatever the number of budgets that apply (here
    three)."""
    from decimal import Decimal

    from tokenward.core.budgets import Budget, Subject
    from tokenward.core.decide import CallPlan

    ledger = SQLiteLedger(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        ledger.put_budget(Budget("each-user", "user", "total_tokens", Decimal(10**9)))
        ledger.put_budget(Budget("team", "team", "cost_usd", Decimal(10**6), subject_id="red"))
        ledger.put_budget(Budget("each-session", "session", "requests", Decimal(10**6)))
        subject = Subject(team="red", user="alice", session="s1")
        plan = CallPlan(
            "m", input_tokens=100, max_output_tokens=50, input_rate=Decimal(1), output_rate=Decimal(2)
        )
        statements: list[str] = []

        def call(request_id: str) -> None:
            _, reservation = ledger.admit(subject, plan, idempotency_key=request_id)
            charged = {"total_tokens": Decimal(120), "cost_usd": Decimal("0.00014"), "requests": Decimal(1)}
            ledger.settle(reservation.id, event(subject, charged, at=T0, request_id=request_id))

        call("warm-up")  # first use: template instances are recorded once
        ledger._conn().set_trace_callback(statements.append)
        call("measured")
        ledger._conn().set_trace_callback(None)
        assert len(statements) == 16, statements
    finally:
        ledger.close()


def test_the_url_names_the_busy_timeout_and_the_spool(tmp_path: Path) -> None:
    from tokenward.errors import ConfigError
    from tokenward.ledger.sqlite import parse_sqlite_url

    path = tmp_path / "ledger.db"
    default = parse_sqlite_url(f"sqlite:///{path}")
    assert (default.path, default.timeout, default.spool) == (path, 30.0, tmp_path / "ledger.db.spool")
    custom = parse_sqlite_url(f"sqlite:///{path}?timeout=0.25&spool={tmp_path / 'elsewhere.db'}")
    assert (custom.timeout, custom.spool) == (0.25, tmp_path / "elsewhere.db")
    ledger = SQLiteLedger(f"sqlite:///{path}?timeout=0.25")
    try:
        assert ledger.timeout == 0.25 and ledger.spool_path == tmp_path / "ledger.db.spool"
    finally:
        ledger.close()
    for bad in ("timeout=soon", "timeout=0", "busy=1"):
        with pytest.raises(ConfigError):
            parse_sqlite_url(f"sqlite:///{path}?{bad}")
