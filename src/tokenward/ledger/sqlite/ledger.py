"""``sqlite:///path/to/ledger.db``: the embedded ledger, safe across threads and processes.

URL form (as SQLAlchemy writes it): ``sqlite:///tokenward.db`` is relative to the working
directory, ``sqlite:////var/lib/tokenward/ledger.db`` absolute. Parameters: ``timeout`` (seconds a
write waits for the file's lock, SQLite's busy time-out; default 30) and ``spool`` (where writes
wait when the lock is not had in time; default ``<ledger file>.spool``, beside it). The file is
opened in WAL mode;
every write step runs in ``BEGIN IMMEDIATE``, which takes SQLite's single writer lock for the whole
check-then-hold, so concurrent reservations from any number of threads and processes sharing the
file are serialised by SQLite itself. Readers (balances, reports) never block writers.

Money and amounts are stored as decimal strings and computed with ``Decimal`` inside the
transaction, so they stay exact. Balance rows are read with one statement and written with one
statement per step. Budgets, stop markers and keys are cached in the process and re-read only when
their revision counter in ``meta`` moves (one statement per step checks the counters). The schema
is versioned (``PRAGMA user_version``) and migrated on open (:mod:`.schema`). Usage events
and the other records are append-only: triggers refuse UPDATE and DELETE on them.

**Nothing recorded is lost while another writer holds the lock.** A write that waited out the
busy time-out fails with :class:`~tokenward.errors.StoreUnavailable`; a settlement or a release
that fails so (or that the file refuses) is kept in the spool beside the ledger
(:mod:`tokenward.ledger.spooled`) and replayed by a thread of this process, and by the next
process that opens the ledger. Opening also reclaims the reservations of processes of this
machine that died (:meth:`~tokenward.ledger.steps.LedgerSteps.reclaim_dead`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tokenward.clock import Clock
from tokenward.core.budgets import SCOPES, Budget, Subject
from tokenward.core.events import UsageEvent
from tokenward.errors import ConfigError, LedgerError, StoreUnavailable, ValidationError
from tokenward.ledger.base import Reservation
from tokenward.ledger.failover import StoreHealth
from tokenward.ledger.records import Denial, LeaseGroup, StopMarker, parse_iso
from tokenward.ledger.rows import Rows, Snapshot, Span, event_disputed, stored_budget, subject_matches
from tokenward.ledger.spool import SpoolEntry
from tokenward.ledger.spooled import SpooledWrites
from tokenward.ledger.sqlite.records import SQLiteRecords, ts
from tokenward.ledger.sqlite.schema import _MIGRATIONS, SCHEMA_VERSION, split_statements
from tokenward.ledger.sqlite.turns import WriteTurns
from tokenward.ledger.transactional import TransactionalLedger

__all__ = ["SCHEMA_VERSION", "SQLiteLedger", "SQLiteSettings", "parse_sqlite_url", "path_from_url"]

_CHUNK = 400  # balance rows per statement (SQLite allows 32766 parameters)


def path_from_url(url: str) -> Path:
    """The file path of a ``sqlite:///...`` URL.

    Raises:
        ConfigError: the URL is not a sqlite URL or names no file.
    """
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigError(f"not a sqlite URL: {url!r}")
    if parts.netloc or not url.partition(":")[2].startswith("///"):
        # sqlite:/var/lib/tw.db (one slash) and sqlite:tw.db were read as relative paths: the
        # first, meant as absolute, opened a second ledger under the working directory
        raise ConfigError(f"{url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db")
    path = unquote(parts.path)[1:] if parts.path.startswith("/") else unquote(parts.path)
    if not path:
        raise ConfigError(f"{url!r} names no file; e.g. sqlite:///tokenward.db")
    return Path(path)


@dataclass(frozen=True, slots=True)
class SQLiteSettings:
    """A parsed ``sqlite:///`` URL."""

    path: Path
    timeout: float
    spool: Path


def parse_sqlite_url(url: str) -> SQLiteSettings:
    """The file, busy time-out and spool of a ``sqlite:///path?timeout=S&spool=PATH`` URL.

    Raises:
        ConfigError: not a sqlite URL, no file, an unknown parameter or a bad time-out.
    """
    path = path_from_url(url)
    params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    unknown = set(params) - {"timeout", "spool"}
    if unknown:
        raise ConfigError(f"{url!r}: unknown parameters {sorted(unknown)} (known: timeout, spool)")
    try:
        timeout = float(params.get("timeout") or 30)
    except ValueError:
        raise ConfigError(f"{url!r}: timeout is a number of seconds, got {params['timeout']!r}") from None
    if not 0 < timeout < 86400:
        raise ConfigError(f"{url!r}: timeout must be between 0 and 86400 seconds, got {timeout}")
    spool = Path(params["spool"]) if params.get("spool") else path.with_name(path.name + ".spool")
    return SQLiteSettings(path, timeout, spool)


_BUSY = ("database is locked", "database table is locked", "database is busy")


def _translate(path: Path, exc: sqlite3.Error, what: str = "") -> LedgerError:
    """A driver error as tokenward's: the lock not had within the busy time-out is the store
    being too slow (:class:`StoreUnavailable`: the write is spooled, the call refused with 503)."""
    text = f"SQLite ledger {path}: {what}{exc}"
    if isinstance(exc, sqlite3.OperationalError) and str(exc).startswith(_BUSY):
        return StoreUnavailable(text)
    return LedgerError(text)


def _reservation_to_json(r: Reservation) -> str:
    return json.dumps(r.body())


def _reservation_from_row(row: sqlite3.Row) -> Reservation:
    return Reservation.from_body(
        json.loads(row["data"]), id=row["id"], idempotency_key=row["idempotency_key"], state=row["state"]
    )


class SQLiteLedger(SpooledWrites, SQLiteRecords, TransactionalLedger):
    """The SQLite ledger.

    Args:
        url: ``sqlite:///path[?timeout=S&spool=PATH]``; parent directories are created.
        clock: where time comes from.
        timeout: seconds to wait for SQLite's write lock before failing (default: the URL's
            ``timeout``, else 30).

    Raises:
        ConfigError: a malformed URL.
        LedgerError: the file cannot be opened or migrated.
    """

    def __init__(self, url: str, *, clock: Clock | None = None, timeout: float | None = None) -> None:
        TransactionalLedger.__init__(self, clock)
        settings = parse_sqlite_url(url)
        self.url = url
        self.path = settings.path
        self.timeout = settings.timeout if timeout is None else timeout
        self.health = StoreHealth(str(self.path), record=self._record_alert)
        self._init_spool(settings.spool)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._conn_lock = threading.Lock()
        self._budget_cache: tuple[str, list[Budget]] | None = None
        self._stop_cache: tuple[str, dict[tuple[str, str], StopMarker]] | None = None
        self._key_cache = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._turns = WriteTurns(self.path, self.timeout)
        except OSError as exc:
            raise LedgerError(f"cannot create the directory for {self.path}: {exc}") from exc
        self._migrate()
        self._resume_spool()  # what a previous process could not write
        with contextlib.suppress(LedgerError):
            self.reclaim_dead()  # reservations of processes of this machine that died

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
        turn = write and self._turns.take()  # no sleeping through SQLite's busy handler (.turns)
        try:
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            except sqlite3.Error as exc:
                raise _translate(self.path, exc) from exc
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
                raise _translate(self.path, exc, "commit failed: ") from exc
        finally:
            if turn:
                self._turns.give_back()

    def _single_read(self) -> AbstractContextManager[None]:
        """One autocommit read (a statement is atomic on its own): no BEGIN/COMMIT round trip."""
        return contextlib.nullcontext()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self._conn().execute(sql, params)
        except sqlite3.Error as exc:
            raise _translate(self.path, exc) from exc
        except UnicodeEncodeError as exc:  # a lone surrogate: refused like the store's own errors
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

    def settle(self, reservation_id: str | None, event: UsageEvent) -> UsageEvent:
        """As the contract; when the file cannot take it now (its lock is held past the busy
        time-out) or refuses it, the settlement waits in the spool and is replayed until it lands
        (the event is returned as settled)."""
        try:
            return super().settle(reservation_id, event)
        except ValidationError:
            raise
        except LedgerError as exc:
            return self._spool_settle(reservation_id, event, exc)

    def settle_observed(
        self, reservation_id: str | None, event: UsageEvent, observed: tuple[str, int, int] | None
    ) -> UsageEvent:
        """:meth:`settle` and :meth:`record_estimate` of ``observed`` (``(model, estimated,
        actual)``, None: nothing to record) in one write transaction: a gateway call then costs
        two write transactions, its reservation and its settlement (issue 17), not three.

        A settlement the file cannot take now is spooled as :meth:`settle` spools it; the
        observation is then dropped (calibration is best effort)."""
        if observed is None:
            return self.settle(reservation_id, event)
        try:
            with self._write():
                stored = TransactionalLedger.settle(self, reservation_id, event)
                TransactionalLedger.record_estimate(self, *observed)
            return stored
        except ValidationError:
            raise
        except LedgerError as exc:
            return self._spool_settle(reservation_id, event, exc)

    def release(self, reservation_id: str) -> bool:
        """As the contract; a release the file cannot take now is spooled and replayed (returns
        False: nothing is known to be released yet)."""
        try:
            return super().release(reservation_id)
        except LedgerError as exc:
            self._spool_write("release", {"reservation_id": reservation_id}, "release", exc, None)
            return False

    def record_denial(self, denial: Denial) -> Denial:
        """As the contract; a denial the file cannot take now is spooled and replayed (returned
        unnumbered), never dropped."""
        try:
            return super().record_denial(denial)
        except LedgerError as exc:
            self._spool_write("denial", {"denial": denial.to_dict()}, "denial", exc, denial.subject)
            return denial

    def _replay_entry(self, entry: SpoolEntry) -> None:
        payload = entry.payload
        if entry.kind == "settle":
            TransactionalLedger.settle(
                self, payload["reservation_id"], UsageEvent.from_dict(payload["event"])
            )
        elif entry.kind == "denial":
            TransactionalLedger.record_denial(self, Denial.from_dict(payload["denial"]))
        elif entry.kind == "release":
            TransactionalLedger.release(self, payload["reservation_id"])
        elif entry.kind == "audit":
            self.audit("tokenward", payload["action"], str(self.path), after=payload["details"])
        else:  # pragma: no cover - written by a newer tokenward
            raise LedgerError(f"unknown spool entry kind {entry.kind!r}")

    def close(self) -> None:
        """Stop the spool's replayer (replaying what it can first; the rest waits for the next
        process) and close every connection this ledger opened."""
        self._close_spool()
        with self._conn_lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()
        self._turns.close()

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
        # one statement: a key taken by a kept reservation (the conflict) or by a settled call
        # (its usage event; the reservation was deleted) stores nothing
        cursor = self._execute(
            "INSERT INTO reservations (id, idempotency_key, state, created_at, expires_at, data, owner) "
            "SELECT ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM usage_events WHERE request_id = ?) "
            "ON CONFLICT (idempotency_key) DO NOTHING",
            (
                reservation.id,
                reservation.idempotency_key,
                reservation.state,
                ts(reservation.created_at),
                ts(reservation.expires_at),
                _reservation_to_json(reservation),
                reservation.owner,
                reservation.idempotency_key,
            ),
        )
        return cursor.rowcount > 0

    def _set_state(self, reservation_id: str, state: str) -> None:
        self._execute("UPDATE reservations SET state = ? WHERE id = ?", (state, reservation_id))

    def _drop_reservation(self, reservation_id: str) -> None:
        self._execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))

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

    def _active_owners(self) -> list[str]:
        rows = self._execute(
            "SELECT DISTINCT owner FROM reservations WHERE state = 'active' AND owner IS NOT NULL"
        ).fetchall()
        return sorted(r[0] for r in rows)

    def _owned_active(self, owners: Sequence[str]) -> list[Reservation]:
        marks = ", ".join("?" * len(owners))
        rows = self._execute(
            f"SELECT * FROM reservations WHERE state = 'active' AND owner IN ({marks}) ORDER BY id",
            list(owners),
        ).fetchall()
        return [_reservation_from_row(row) for row in rows]

    # -- leases ------------------------------------------------------------------------------------
    def _lease_group(self, key: str) -> LeaseGroup | None:
        row = self._execute("SELECT data FROM lease_groups WHERE key = ?", (key,)).fetchone()
        return LeaseGroup.from_dict(json.loads(row["data"])) if row else None

    def _store_lease_group(self, group: LeaseGroup) -> None:
        self._execute(
            "INSERT INTO lease_groups (key, data) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET data = excluded.data",
            (group.key, json.dumps(group.to_dict())),
        )

    def _drop_lease_group(self, key: str) -> None:
        self._execute("DELETE FROM lease_groups WHERE key = ?", (key,))

    def _lease_holders(self, key: str) -> dict[str, datetime]:
        rows = self._execute("SELECT holder, expires_at FROM leases WHERE key = ?", (key,)).fetchall()
        return {r["holder"]: parse_iso(r["expires_at"]) for r in rows}  # type: ignore[misc]

    def _put_lease(self, key: str, holder: str, expires_at: datetime) -> None:
        self._execute(
            "INSERT INTO leases (key, holder, expires_at) VALUES (?, ?, ?) "
            "ON CONFLICT (key, holder) DO UPDATE SET expires_at = excluded.expires_at",
            (key, holder, ts(expires_at)),
        )

    def _drop_leases(self, key: str, holders: Sequence[str]) -> None:
        for holder in holders:
            self._execute("DELETE FROM leases WHERE key = ? AND holder = ?", (key, holder))

    def _expired_lease_keys(self, now: datetime) -> list[str]:
        rows = self._execute("SELECT DISTINCT key FROM leases WHERE expires_at <= ?", (ts(now),)).fetchall()
        return sorted(r[0] for r in rows)

    # -- usage events ------------------------------------------------------------------------------
    def _get_event(self, request_id: str) -> UsageEvent | None:
        row = self._execute("SELECT data FROM usage_events WHERE request_id = ?", (request_id,)).fetchone()
        return UsageEvent.from_dict(json.loads(row["data"])) if row else None

    def _query_disputed(self, since: datetime | None, limit: int | None) -> list[UsageEvent]:
        clauses = ["(disputed = 1 OR (disputed IS NULL AND json_extract(data, '$.metadata.disputed') = 1))"]
        params: list[Any] = []
        if since is not None:
            clauses.append("at >= ?")
            params.append(ts(since))
        sql = f"SELECT data FROM usage_events WHERE {' AND '.join(clauses)} ORDER BY at, seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [UsageEvent.from_dict(json.loads(r["data"])) for r in self._execute(sql, params).fetchall()]

    def _insert_event(self, event: UsageEvent) -> bool:
        subject = event.subject
        cursor = self._execute(
            "INSERT INTO usage_events (request_id, at, org, project, team, user, key, agent, session, task, "
            "model, status, input_tokens, output_tokens, cost_usd, data, disputed, tool_definition_tokens, "
            "clamped_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_id) DO NOTHING",
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
                event_disputed(event),
                event.tool_definition_tokens,
                event.metadata.get("clamped_by"),
            ),
        )
        if cursor.rowcount > 0:
            self._roll_up([event])
            return True
        return False

    def _find_event(self, key: str, value: str) -> UsageEvent | None:
        # key is one of EVENT_LOOKUPS (checked by the caller), so the path is a literal: an index
        # on the same expression serves it
        row = self._execute(
            f"SELECT data FROM usage_events WHERE json_extract(data, '$.metadata.{key}') = ? "
            "ORDER BY seq DESC LIMIT 1",
            (value,),
        ).fetchone()
        return UsageEvent.from_dict(json.loads(row["data"])) if row else None

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
