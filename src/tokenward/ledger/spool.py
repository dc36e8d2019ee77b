"""The local spool: a SQLite file on the replica's own disk where writes wait for the store.

A service-backed ledger never loses what it was told while its store is slow or down: a usage
event (or a release, a shadow denial, a calibration observation...) is first appended to the spool
(one small local SQLite transaction, WAL), and a replayer moves it to the store once the store
takes it, then deletes it from the spool. Entries are replayed in the order they were appended;
what the store already has (the same request id) is skipped there, so an entry replayed twice (a
crash between the store's commit and the spool's delete) is still stored once.

* ``redis://``: every settled event goes through the spool to the durable store named by
  ``events=`` (the hot path never waits on that store).
* ``postgresql://``: the spool is used only while PostgreSQL is unreachable (settlements,
  releases and fail-open admissions made meanwhile), and replayed when it returns.

Several processes of one machine may share one spool file (SQLite locks it); each entry is
*claimed* for a lease (30 s) by the replayer working on it, so two replayers never work on the same
entry at once; the entries of a replayer whose process died are claimed again at once (the spool
is local, so a claimer's process id says whether it still runs), else when the lease ends. An entry that fails is
retried with a back-off (0.1 s doubling up to 30 s): for ever while the store is unreachable or
too slow (:meth:`Spool.retry`); an entry the store itself *refuses* (its data, not its
availability: :meth:`Spool.refused`) is moved, after :data:`REFUSALS` refusals, to the
spool file's *quarantine*, so it never blocks the entries behind it. Nothing is dropped:
``tokenward quarantine list`` shows the quarantined entries with the store's error, and
``tokenward quarantine retry`` puts them back in the spool (once the cause is fixed).
``last_error`` says why an entry is still there.

* ``sqlite://``: a settlement or release the ledger file cannot take now (another writer holds
  its lock past the busy time-out) waits in ``<ledger file>.spool`` beside it, and is replayed by
  a thread of the process (and by the next process that opens the ledger).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenward.errors import LedgerError

__all__ = ["REFUSALS", "Quarantined", "Spool", "SpoolEntry", "default_spool_path"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    claimed_until REAL NOT NULL DEFAULT 0,
    claimed_by INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    refusals INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS spool_claimable ON spool (claimed_until, id);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    quarantined_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT
);
"""

REFUSALS = 3
"""Refusals after which an entry is quarantined."""


def default_spool_path(url: str) -> Path:
    """Where a service-backed ledger spools by default: ``$XDG_STATE_HOME/tokenward`` (or
    ``~/.local/state/tokenward``), one file per ledger URL (the processes of one machine sharing a
    URL share the file)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return Path(base) / "tokenward" / f"spool-{digest}.db"


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One spooled write.

    Attributes:
        id: its position in the spool (increasing).
        kind: what it is (``settle``, ``release``, ``shadow``...), interpreted by the ledger.
        payload: its JSON-ready content.
        created_at: when it was appended (Unix seconds, wall clock).
        attempts: how many replays failed so far.
    """

    id: int
    kind: str
    payload: Mapping[str, Any]
    created_at: float
    attempts: int


@dataclass(frozen=True, slots=True)
class Quarantined:
    """An entry the store refused :data:`REFUSALS` times, set aside.

    Attributes:
        id: its position in the spool when it was set aside.
        kind / payload / created_at: as :class:`SpoolEntry`.
        quarantined_at: when it was set aside (Unix seconds).
        attempts: how many replays it had.
        error: the store's last refusal.
    """

    id: int
    kind: str
    payload: Mapping[str, Any]
    created_at: float
    quarantined_at: float
    attempts: int
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "id": self.id,
            "kind": self.kind,
            "payload": dict(self.payload),
            "created_at": self.created_at,
            "quarantined_at": self.quarantined_at,
            "attempts": self.attempts,
            "error": self.error,
        }


class Spool:
    """A spool file.

    Args:
        path: the SQLite file (created with its folder).
        lease: seconds an entry stays claimed by the replayer that took it.
        synchronous: SQLite's ``synchronous`` setting: ``NORMAL`` (default: an entry survives a
            crash of the process; the last few may be lost if the machine itself loses power) or
            ``FULL`` (each append is on disk before it returns).

    Raises:
        LedgerError: the file cannot be opened.
    """

    def __init__(self, path: str | Path, *, lease: float = 30.0, synchronous: str = "NORMAL") -> None:
        self.path = Path(path)
        self.lease = lease
        if synchronous.upper() not in ("NORMAL", "FULL"):
            raise LedgerError(f"spool synchronous must be NORMAL or FULL, got {synchronous!r}")
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.executescript(_SCHEMA)
            columns = {row[1] for row in self._conn.execute("PRAGMA table_info(spool)")}
            if "refusals" not in columns:  # a spool file of an older tokenward
                self._conn.execute("ALTER TABLE spool ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0")
            self._free_the_dead()
        except (OSError, sqlite3.Error) as exc:
            raise LedgerError(f"cannot open the spool {self.path}: {exc}") from exc

    def _run(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise LedgerError(f"spool {self.path}: {exc}") from exc

    def append(self, kind: str, payload: Mapping[str, Any], *, held: bool = False) -> int:
        """Append an entry; returns its id once it is in the file. A ``held`` entry is claimed by
        this process from the start (no replayer takes it until :meth:`set_kind` lets it go, or
        this process dies, or the lease ends).

        Raises:
            LedgerError: the file cannot be written (disk full...).
        """
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        now = time.time()
        rows = self._run(
            "INSERT INTO spool (kind, payload, created_at, claimed_until, claimed_by) VALUES (?, ?, ?, ?, ?) "
            "RETURNING id",
            (kind, text, now, now + self.lease if held else 0, os.getpid() if held else None),
        )
        return int(rows[0][0])

    def claim(self, limit: int = 200) -> list[SpoolEntry]:
        """Claim up to ``limit`` of the oldest entries nobody is working on, for one lease."""
        for _ in range(2):
            now = time.time()
            rows = self._run(
                "UPDATE spool SET claimed_until = ?, claimed_by = ? WHERE id IN ("
                " SELECT id FROM spool WHERE claimed_until <= ? ORDER BY id LIMIT ?"
                ") RETURNING id, kind, payload, created_at, attempts",
                (now + self.lease, os.getpid(), now, int(limit)),
            )
            if rows or not self._free_the_dead():
                break
        entries = [SpoolEntry(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]
        return sorted(entries, key=lambda e: e.id)

    def _free_the_dead(self) -> bool:
        """Give back the entries claimed by processes that no longer run; whether there were any."""
        now = time.time()
        owners = self._run(
            "SELECT DISTINCT claimed_by FROM spool WHERE claimed_until > ? AND attempts >= 0 AND claimed_by IS NOT NULL",
            (now,),
        )
        dead = [pid for (pid,) in owners if pid != os.getpid() and not _alive(pid)]
        for pid in dead:
            self._run(
                "UPDATE spool SET claimed_until = 0 WHERE claimed_by = ? AND claimed_until > ?", (pid, now)
            )
        return bool(dead)

    def done(self, ids: Iterable[int]) -> None:
        """Delete entries that reached the store."""
        ids = list(ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            self._run(f"DELETE FROM spool WHERE id IN ({', '.join('?' * len(chunk))})", chunk)

    def set_kind(self, entry_id: int, kind: str) -> None:
        """Change what an entry is (a checked charge that Redis took becomes a settlement), and let
        replayers take it."""
        self._run("UPDATE spool SET kind = ?, claimed_until = 0 WHERE id = ?", (kind, entry_id))

    def retry(self, ids: Iterable[int], error: str) -> None:
        """Give entries back after a failed replay: claimable again after a back-off."""
        now = time.time()
        for entry_id in ids:
            self._run(
                "UPDATE spool SET attempts = attempts + 1, last_error = ?,"
                " claimed_until = ? + MIN(30.0, 0.1 * (1 << MIN(attempts, 9))) WHERE id = ?",
                (error[:500], now, entry_id),
            )

    def refused(self, entry_id: int, error: str, *, limit: int = REFUSALS) -> bool:
        """The store refused an entry (its content, not its availability): give it back after a
        back-off, or, at the ``limit``-th refusal, move it to the quarantine. Returns
        whether it was quarantined."""
        rows = self._run("SELECT refusals FROM spool WHERE id = ?", (entry_id,))
        if not rows:
            return False
        if int(rows[0][0]) + 1 < limit:
            self._run("UPDATE spool SET refusals = refusals + 1 WHERE id = ?", (entry_id,))
            self.retry([entry_id], error)
            return False
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute(
                    "INSERT OR REPLACE INTO quarantine (id, kind, payload, created_at, quarantined_at, attempts, error) "
                    "SELECT id, kind, payload, created_at, ?, attempts + 1, ? FROM spool WHERE id = ?",
                    (time.time(), error[:2000], entry_id),
                )
                self._conn.execute("DELETE FROM spool WHERE id = ?", (entry_id,))
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise LedgerError(f"spool {self.path}: {exc}") from exc
        return True

    def quarantined(self, limit: int | None = None) -> list[Quarantined]:
        """The quarantined entries, oldest first."""
        sql = "SELECT id, kind, payload, created_at, quarantined_at, attempts, error FROM quarantine ORDER BY id"
        rows = self._run(
            sql + (" LIMIT ?" if limit is not None else ""), (limit,) if limit is not None else ()
        )
        return [Quarantined(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    def requeue(self, ids: Iterable[int] | None = None) -> int:
        """Put quarantined entries (all, or those of ``ids``) back at the end of the spool, their
        count of attempts reset; returns how many."""
        chosen = None if ids is None else [int(i) for i in ids]
        where = "" if chosen is None else f" WHERE id IN ({', '.join('?' * len(chosen))})"
        params = () if chosen is None else tuple(chosen)
        if chosen is not None and not chosen:
            return 0
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                moved = self._conn.execute(
                    f"INSERT INTO spool (kind, payload, created_at) SELECT kind, payload, created_at FROM quarantine{where} ORDER BY id",
                    params,
                ).rowcount
                self._conn.execute(f"DELETE FROM quarantine{where}", params)
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise LedgerError(f"spool {self.path}: {exc}") from exc
        return int(moved)

    def pending(self) -> int:
        """Entries not yet replayed (claimed ones included)."""
        return int(self._run("SELECT COUNT(*) FROM spool")[0][0])

    def claimable(self) -> int:
        """Entries a replayer could claim now."""
        return int(self._run("SELECT COUNT(*) FROM spool WHERE claimed_until <= ?", (time.time(),))[0][0])

    def oldest(self) -> float | None:
        """When the oldest pending entry was appended (Unix seconds), or None."""
        value = self._run("SELECT MIN(created_at) FROM spool")[0][0]
        return None if value is None else float(value)

    def errors(self, limit: int = 20) -> list[tuple[int, str, int, str | None]]:
        """``(id, kind, attempts, last_error)`` of the entries that failed at least once."""
        rows = self._run(
            "SELECT id, kind, attempts, last_error FROM spool WHERE attempts > 0 ORDER BY id LIMIT ?",
            (limit,),
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def close(self) -> None:
        """Close the file (pending entries stay for the next opener)."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
