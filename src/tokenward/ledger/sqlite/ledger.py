"""``sqlite:///path/to/ledger.db``: the embedded ledger, safe across threads and processes.

URL form (as SQLAlchemy writes it): ``sqlite:///tokenward.db`` is relative to the working
directory, ``sqlite:////var/lib/tokenward/ledger.db`` absolute. The file is opened in WAL mode;
every write step runs in ``BEGIN IMMEDIATE``, which takes SQLite's single writer lock for the whole
check-then-hold, so concurrent reservations from any number of threads and processes sharing the
file are serialised by SQLite itself. Readers (balances, reports) never block writers.

Money and amounts are stored as decimal strings and computed with ``Decimal`` inside the
transaction, so they stay exact. Balance rows are read with one statement and written with one
statement per step. Budgets, stop markers and keys are cached in the process and re-read only when
their revision counter in ``meta`` moves (one statement per step checks the counters). The schema
is versioned (``PRAGMA user_version``) and migrated on open (:mod:`.schema`). Usage events
and the other records are append-only: triggers refuse UPDATE and DELETE on them.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tokenward.clock import Clock
from tokenward.core.budgets import SCOPES, Budget, Subject
from tokenward.core.events import UsageEvent
from tokenward.errors import ConfigError, LedgerError
from tokenward.ledger.base import Reservation
from tokenward.ledger.records import StopMarker
from tokenward.ledger.rows import Rows, Snapshot, Span, stored_budget, subject_matches
from tokenward.ledger.sqlite.records import SQLiteRecords, ts
from tokenward.ledger.sqlite.schema import _MIGRATIONS, SCHEMA_VERSION, split_statements
from tokenward.ledger.transactional import TransactionalLedger

__all__ = ["SCHEMA_VERSION", "SQLiteLedger", "path_from_url"]

_CHUNK = 400  # balance rows per statement (SQLite allows 32766 parameters)


def path_from_url(url: str) -> Path:
    """The file path of a ``sqlite:///...`` URL.

    Raises:
        ConfigError: the URL is not a sqlite URL or names no file.
    """
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigError(f"not a sqlite URL: {url!r}")
    if parts.netloc:
        raise ConfigError(f"{url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db")
    path = unquote(parts.path)[1:] if parts.path.startswith("/") else unquote(parts.path)
    if not path:
        raise ConfigError(f"{url!r} names no file; e.g. sqlite:///tokenward.db")
    return Path(path)


def _reservation_to_json(r: Reservation) -> str:
    return json.dumps(r.body())


def _reservation_from_row(row: sqlite3.Row) -> Reservation:
    return Reservation.from_body(
        json.loads(row["data"]), id=row["id"], idempotency_key=row["idempotency_key"], state=row["state"]
    )


class SQLiteLedger(SQLiteRecords, TransactionalLedger):
    """The SQLite ledger.

    Args:
        url: ``sqlite:///path``; parent directories are created.
        clock: where time comes from.
        timeout: seconds to wait for SQLite's write lock before failing.

    Raises:
        ConfigError: a malformed URL.
        LedgerError: the file cannot be opened or migrated.
    """

    def __init__(self, url: str, *, clock: Clock | None = None, timeout: float = 30.0) -> None:
        TransactionalLedger.__init__(self, clock)
        self.url = url
        self.path = path_from_url(url)
        self.timeout = timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        self._budget_cache: tuple[str, list[Budget]] | None = None
        self._stop_cache: tuple[str, dict[tuple[str, str], StopMarker]] | None = None
        self._key_cache = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(f"cannot create the directory for {self.path}: {exc}") from exc
        self._migrate()

    # -- connections and transactions --------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
                )
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            except sqlite3.Error as exc:
                raise LedgerError(f"cannot open the SQLite ledger {self.path}: {exc}") from exc
            self._local.conn = conn
            self._local.depth = 0
            with self._conn_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _transaction(self, write: bool = True) -> Iterator[None]:
        conn = self._conn()
        if self._local.depth:
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as exc:
            raise LedgerError(f"SQLite ledger {self.path}: {exc}") from exc
        self._local.depth = 1
        try:
            yield
        except BaseException:
            self._local.depth = 0
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._local.depth = 0
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise LedgerError(f"SQLite ledger {self.path}: commit failed: {exc}") from exc

    def _single_read(self) -> AbstractContextManager[None]:
        """One autocommit read (a statement is atomic on its own): no BEGIN/COMMIT round trip."""
        return contextlib.nullcontext()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._conn().execute(sql, params)
        except sqlite3.Error as exc:
            raise LedgerError(f"SQLite ledger {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        with self._transaction():
            version = self._execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"{self.path} has schema version {version}, newer than this tokenward ({SCHEMA_VERSION}); "
                    "upgrade tokenward"
                )
            for number in range(version, SCHEMA_VERSION):
                for statement in split_statements(_MIGRATIONS[number]):
                    self._execute(statement)
                self._execute(f"PRAGMA user_version={number + 1}")

    def close(self) -> None:
        """Close every connection this ledger opened."""
        with self._conn_lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- budgets and stops -------------------------------------------------------------------------
    def _snapshot(self) -> Snapshot:
        revs = dict(
            self._execute("SELECT key, value FROM meta WHERE key IN ('budgets_rev', 'stops_rev')").fetchall()
        )
        budgets = self._budget_cache
        if budgets is None or budgets[0] != revs["budgets_rev"]:
            rows = self._execute("SELECT spec FROM budgets").fetchall()
            budgets = (revs["budgets_rev"], [stored_budget(json.loads(row["spec"])) for row in rows])
            self._budget_cache = budgets
        stops = self._stop_cache
        if stops is None or stops[0] != revs["stops_rev"]:
            stops = (revs["stops_rev"], self._load_stops())
            self._stop_cache = stops
        return Snapshot(budgets[1], stops[1])

    def _store_budget(self, budget: Budget) -> None:
        self._execute(
            "INSERT INTO budgets (name, spec) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET spec = excluded.spec",
            (budget.name, json.dumps(budget.to_dict())),
        )
        self._bump("budgets_rev")

    def _remove_budget(self, name: str) -> bool:
        removed = self._execute("DELETE FROM budgets WHERE name = ?", (name,)).rowcount > 0
        self._bump("budgets_rev")
        return removed

    # -- balance rows ------------------------------------------------------------------------------
    def _read_rows(self, spans: Sequence[Span]) -> Rows:
        out: Rows = {}
        unique = list(dict.fromkeys(spans))
        for start in range(0, len(unique), _CHUNK):
            terms, params = [], []
            for budget, subject_id, first, last in unique[start : start + _CHUNK]:
                if first == last:
                    terms.append("(budget = ? AND subject_id = ? AND window_key = ?)")
                    params += [budget, subject_id, first]
                else:
                    terms.append("(budget = ? AND subject_id = ? AND window_key BETWEEN ? AND ?)")
                    params += [budget, subject_id, first, last]
            rows = self._execute(
                f"SELECT budget, subject_id, window_key, spent, held FROM balances WHERE {' OR '.join(terms)}",
                params,
            )
            for budget, subject_id, key, spent, held in rows:
                out[(budget, subject_id, key)] = (Decimal(spent), Decimal(held))
        return out

    def _write_rows(self, rows: Rows) -> None:
        items = list(rows.items())
        for start in range(0, len(items), _CHUNK):
            chunk = items[start : start + _CHUNK]
            params: list[Any] = []
            for (budget, subject_id, key), (spent, held) in chunk:
                params += [budget, subject_id, key, str(spent), str(held)]
            self._execute(
                "INSERT INTO balances (budget, subject_id, window_key, spent, held) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))
                + " ON CONFLICT (budget, subject_id, window_key) DO UPDATE SET spent = excluded.spent, held = excluded.held",
                params,
            )

    # -- reservations ------------------------------------------------------------------------------
    def _get_reservation(self, reservation_id: str) -> Reservation | None:
        row = self._execute("SELECT * FROM reservations WHERE id = ?", (reservation_id,)).fetchone()
        return _reservation_from_row(row) if row else None

    def _find_idempotent(self, key: str) -> Reservation | None:
        row = self._execute("SELECT * FROM reservations WHERE idempotency_key = ?", (key,)).fetchone()
        return _reservation_from_row(row) if row else None

    def _put_reservation(self, reservation: Reservation) -> bool:
        cursor = self._execute(
            "INSERT INTO reservations (id, idempotency_key, state, created_at, expires_at, data) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
            (
                reservation.id,
                reservation.idempotency_key,
                reservation.state,
                ts(reservation.created_at),
                ts(reservation.expires_at),
                _reservation_to_json(reservation),
            ),
        )
        return cursor.rowcount > 0

    def _set_state(self, reservation_id: str, state: str) -> None:
        self._execute("UPDATE reservations SET state = ? WHERE id = ?", (state, reservation_id))

    def _set_expiry(self, reservation_id: str, expires_at: datetime) -> None:
        self._execute(
            "UPDATE reservations SET expires_at = ?, data = json_set(data, '$.expires_at', ?) WHERE id = ?",
            (ts(expires_at), expires_at.isoformat(), reservation_id),
        )

    def _expire(self, now: datetime) -> list[Reservation]:
        rows = self._execute(
            "UPDATE reservations SET state = 'expired' WHERE state = 'active' AND expires_at <= ? RETURNING *",
            (ts(now),),
        ).fetchall()
        return [replace(_reservation_from_row(row), state="active") for row in rows]

    # -- usage events ------------------------------------------------------------------------------
    def _get_event(self, request_id: str) -> UsageEvent | None:
        row = self._execute("SELECT data FROM usage_events WHERE request_id = ?", (request_id,)).fetchone()
        return UsageEvent.from_dict(json.loads(row["data"])) if row else None

    def _insert_event(self, event: UsageEvent) -> bool:
        subject = event.subject
        cursor = self._execute(
            "INSERT INTO usage_events (request_id, at, org, project, team, user, key, agent, session, task, "
            "model, status, input_tokens, output_tokens, cost_usd, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING",
            (
                event.request_id,
                ts(event.at),
                *(subject.value(scope) for scope in SCOPES),
                event.model,
                event.status,
                event.usage.input_tokens,
                event.usage.output_tokens,
                None if event.cost_usd is None else str(event.cost_usd),
                event.to_json(),
            ),
        )
        return cursor.rowcount > 0

    def _query_events(
        self, subject: Subject | None, since: datetime | None, until: datetime | None, limit: int | None
    ) -> list[UsageEvent]:
        clauses, params = [], []
        for scope in SCOPES:
            value = subject.value(scope) if subject else None
            if value is not None:
                clauses.append(f"{scope} = ?")
                params.append(value)
        if since is not None:
            clauses.append("at >= ?")
            params.append(ts(since))
        if until is not None:
            clauses.append("at < ?")
            params.append(ts(until))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        tagged = subject is not None and bool(subject.tags)
        if limit is not None and not tagged:
            where += f" ORDER BY at, seq LIMIT {int(limit)}"
        else:
            where += " ORDER BY at, seq"
        rows = self._execute(f"SELECT data FROM usage_events {where}", tuple(params)).fetchall()
        events = [UsageEvent.from_dict(json.loads(row["data"])) for row in rows]
        if tagged:
            events = [e for e in events if subject_matches(e.subject, subject)]
        return events[:limit] if limit is not None else events
