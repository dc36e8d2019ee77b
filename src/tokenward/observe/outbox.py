"""The durable alert outbox: a SQLite file of its own, so that a restart loses no alert.

An alert is written once (by its id, derived from its deduplication key) together with one
*delivery* row per sink it must reach (``webhook:ops``, ``log``, ``callback:pager``). A
:class:`~tokenward.observe.delivery.Dispatcher` claims due deliveries, tries them, and records
the outcome: delivered, or failed with the next attempt pushed back exponentially; after
``max_attempts`` failures a delivery is marked ``dead`` (kept, listed, never silently dropped).

Claims take a lease (``lease_until``), so several dispatchers sharing one file (gateway workers)
never try the same delivery at the same moment; a dispatcher that dies mid-delivery leaves a lease
that simply runs out, and the delivery is tried again. Delivery is therefore *at least once*; the
stable alert id (the ``webhook-id`` header) lets a receiver drop a repeat whose first answer was
lost on the way back.

Schema (``PRAGMA user_version`` = 1)::

    alerts(id PRIMARY KEY, dedup_key UNIQUE, kind, created_at, payload JSON)
    deliveries(alert_id, sink, state pending|delivered|dead, attempts, next_at, lease_until,
               last_error, delivered_at; PRIMARY KEY (alert_id, sink))
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tokenward.errors import ConfigError, LedgerError
from tokenward.observe.alerts import Alert

__all__ = ["Delivery", "Outbox"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY, dedup_key TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    created_at REAL NOT NULL, payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    alert_id TEXT NOT NULL REFERENCES alerts (id), sink TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, lease_until REAL, last_error TEXT, delivered_at REAL,
    PRIMARY KEY (alert_id, sink)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (next_at) WHERE state = 'pending';
"""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert to one sink.

    Attributes:
        alert: the alert.
        sink: the sink's name (``webhook:<name>``, ``log``, ``callback:<name>``).
        state: ``pending``, ``delivered`` or ``dead``.
        attempts: failed or claimed attempts so far (a claim counts as an attempt).
        next_at: when it is due (Unix seconds).
        last_error: the last failure, if any.
    """

    alert: Alert
    sink: str
    state: str
    attempts: int
    next_at: float
    last_error: str | None = None


def outbox_path(location: str | Path) -> Path:
    """A file path from ``sqlite:///alerts.db``, ``sqlite:////abs/alerts.db`` or a plain path.

    Raises:
        ConfigError: a URL with another scheme.
    """
    text = str(location)
    if "://" not in text:
        return Path(text)
    if not text.startswith("sqlite:///"):
        raise ConfigError(f"alert outbox {text!r}: use a file path or sqlite:///path/to/alerts.db")
    return Path(text.removeprefix("sqlite:///"))


class Outbox:
    """The outbox file; safe across threads and processes (WAL, ``BEGIN IMMEDIATE`` writes).

    Args:
        location: a file path or ``sqlite:///path`` URL; parent folders are created.
        timeout: seconds to wait for SQLite's write lock.

    Raises:
        ConfigError: a malformed location.
        LedgerError: the file cannot be opened.
    """

    def __init__(self, location: str | Path, *, timeout: float = 30.0) -> None:
        self.path = outbox_path(location)
        self.timeout = timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._conn()
            conn.executescript(_SCHEMA)
            conn.execute("PRAGMA user_version = 1")
        except sqlite3.Error as exc:
            raise LedgerError(f"alert outbox {self.path}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close every connection this object opened."""
        with self._lock:
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
        self._local = threading.local()

    # -- writing -----------------------------------------------------------------------------------
    def put(self, alert: Alert, sinks: Sequence[str], *, now: float) -> bool:
        """Store ``alert`` with a pending delivery to each sink, unless an alert with the same
        deduplication key is already stored.

        Args:
            alert: the alert.
            sinks: sink names it must reach.
            now: Unix seconds; the deliveries are due at once.

        Returns:
            True when the alert is new (and its deliveries were queued).
        """
        payload = json.dumps(alert.to_dict(), sort_keys=True, separators=(",", ":"))
        try:
            with self._write() as conn:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO alerts (id, dedup_key, kind, created_at, payload) VALUES (?, ?, ?, ?, ?)",
                    (alert.id, alert.dedup_key, alert.kind, now, payload),
                )
                if cursor.rowcount == 0:
                    return False
                conn.executemany(
                    "INSERT OR IGNORE INTO deliveries (alert_id, sink, next_at) VALUES (?, ?, ?)",
                    [(alert.id, sink, now) for sink in sinks],
                )
                return True
        except sqlite3.Error as exc:
            raise LedgerError(f"alert outbox {self.path}: {exc}") from exc

    def known(self, dedup_keys: Sequence[str]) -> set[str]:
        """Which of ``dedup_keys`` are already stored."""
        if not dedup_keys:
            return set()
        marks = ",".join("?" * len(dedup_keys))
        rows = self._conn().execute(
            f"SELECT dedup_key FROM alerts WHERE dedup_key IN ({marks})", tuple(dedup_keys)
        )
        return {row[0] for row in rows}

    def claim(
        self, *, now: float, lease: float, limit: int = 100, sinks: Sequence[str] | None = None
    ) -> list[Delivery]:
        """Take up to ``limit`` due deliveries (oldest first) for ``lease`` seconds.

        Only deliveries to ``sinks`` are claimed when given (a process claims only what it can
        deliver; a callback registered in another process stays pending until that one runs).
        """
        where = ["d.state = 'pending'", "d.next_at <= ?", "(d.lease_until IS NULL OR d.lease_until <= ?)"]
        params: list[Any] = [now, now]
        if sinks is not None:
            if not sinks:
                return []
            where.append(f"d.sink IN ({','.join('?' * len(sinks))})")
            params.extend(sinks)
        with self._write() as conn:
            rows = conn.execute(
                "SELECT d.alert_id, d.sink, d.attempts, d.next_at, d.last_error, a.payload "
                f"FROM deliveries d JOIN alerts a ON a.id = d.alert_id WHERE {' AND '.join(where)} "
                "ORDER BY d.next_at, a.created_at LIMIT ?",
                (*params, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE deliveries SET lease_until = ?, attempts = attempts + 1 WHERE alert_id = ? AND sink = ?",
                [(now + lease, row[0], row[1]) for row in rows],
            )
        return [
            Delivery(Alert.from_dict(json.loads(row[5])), row[1], "pending", row[2] + 1, row[3], row[4])
            for row in rows
        ]

    def delivered(self, alert_id: str, sink: str, *, now: float) -> None:
        """Mark a delivery done."""
        with self._write() as conn:
            conn.execute(
                "UPDATE deliveries SET state = 'delivered', delivered_at = ?, lease_until = NULL, last_error = NULL "
                "WHERE alert_id = ? AND sink = ?",
                (now, alert_id, sink),
            )

    def failed(self, alert_id: str, sink: str, error: str, *, next_at: float | None) -> None:
        """Record a failed attempt; ``next_at`` None marks the delivery ``dead`` (no more tries)."""
        with self._write() as conn:
            if next_at is None:
                conn.execute(
                    "UPDATE deliveries SET state = 'dead', lease_until = NULL, last_error = ? "
                    "WHERE alert_id = ? AND sink = ?",
                    (error[:2000], alert_id, sink),
                )
            else:
                conn.execute(
                    "UPDATE deliveries SET next_at = ?, lease_until = NULL, last_error = ? WHERE alert_id = ? AND sink = ?",
                    (next_at, error[:2000], alert_id, sink),
                )

    def retry_dead(self, *, now: float) -> int:
        """Put every ``dead`` delivery back in the queue (after fixing a receiver); returns how many."""
        with self._write() as conn:
            return conn.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_at = ? WHERE state = 'dead'",
                (now,),
            ).rowcount

    # -- reading -----------------------------------------------------------------------------------
    def deliveries(self, *, state: str | None = None) -> list[Delivery]:
        """Every delivery (optionally in one state), oldest alert first."""
        sql = (
            "SELECT d.sink, d.state, d.attempts, d.next_at, d.last_error, a.payload FROM deliveries d "
            "JOIN alerts a ON a.id = d.alert_id"
        )
        params: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE d.state = ?"
            params = (state,)
        rows = self._conn().execute(sql + " ORDER BY a.created_at, d.sink", params).fetchall()
        return [Delivery(Alert.from_dict(json.loads(r[5])), r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def alerts(self) -> list[Alert]:
        """Every stored alert, oldest first."""
        rows = self._conn().execute("SELECT payload FROM alerts ORDER BY created_at, id").fetchall()
        return [Alert.from_dict(json.loads(row[0])) for row in rows]

    def counts(self) -> dict[str, int]:
        """Deliveries by state: ``{"pending": n, "delivered": n, "dead": n}``."""
        out = {"pending": 0, "delivered": 0, "dead": 0}
        for state, n in self._conn().execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state"):
            out[state] = n
        return out

    def next_due(self) -> float | None:
        """When the earliest pending delivery is due (Unix seconds), or None."""
        row = self._conn().execute("SELECT MIN(next_at) FROM deliveries WHERE state = 'pending'").fetchone()
        return None if row[0] is None else float(row[0])


def unix(at: datetime) -> float:
    """Unix seconds of an aware datetime."""
    return at.astimezone(UTC).timestamp()
