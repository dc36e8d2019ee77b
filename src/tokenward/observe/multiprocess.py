"""Prometheus series summed over the worker processes of ``tokenward serve --workers N``.

prometheus-client's multiprocess mode (its documentation, "Multiprocess Mode"): when
``PROMETHEUS_MULTIPROC_DIR`` names a directory before a process first imports
``prometheus_client``, every counter and histogram of that process is kept in a memory-mapped
file of its own there (``counter_<pid>.db``, ``histogram_<pid>.db``), and a
``MultiProcessCollector`` reading the directory adds up the files of every process, a dead one's
included. So any worker answering a scrape shows the calls of all of them, and the counts of a
worker that died stay counted, once (its replacement has another pid, hence another file).

The supervisor (:mod:`tokenward.gateway.workers`) makes a fresh private directory, sets the
variable for the workers it spawns and removes the directory when it exits
(:func:`shared_metrics_dir`); a directory the user already set is used as it is, never removed.
When a worker dies it calls :func:`mark_process_dead` (prometheus-client's bookkeeping for
``live*`` gauges; tokenward has none today, so this only keeps to the documented protocol).

Budget gauges are not kept in prometheus-client's files: a series there can never be removed
(``remove`` is not implemented in multiprocess mode) and every subject ever seen would stay in
each worker's file, mapped into its memory, and in every scrape. They are snapshots of the shared
ledger, so it does not matter which worker read them, only when: :class:`SharedBudgetGauges`
keeps them in one small SQLite table in the same directory, one row per budget instance holding
the most recent reading of any worker (prometheus-client's ``mostrecent`` rule), and a scrape
exports the ``max_budget_series`` most recently refreshed, as one process does.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from tokenward.errors import ConfigError

__all__ = ["MULTIPROC_ENV", "SharedBudgetGauges", "active_dir", "mark_process_dead", "shared_metrics_dir"]

log = logging.getLogger("tokenward.observe")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_OLD_ENV = "prometheus_multiproc_dir"  # the deprecated spelling prometheus-client still reads

GAUGES_FILE = "tokenward_budget_gauges.sqlite3"
"""The budget gauges' table in the multiprocess directory (not ``*.db``: prometheus-client's
collector reads every ``*.db`` file there as one of its own)."""

_TRIM_EVERY = 256
"""Writes between two trims of the table down to the ``max_series`` most recent rows."""


def active_dir() -> str | None:
    """The directory prometheus-client keeps this process's series in, or None when it keeps them
    in memory (``PROMETHEUS_MULTIPROC_DIR`` was not set when ``prometheus_client`` was first
    imported in this process: setting it later changes nothing)."""
    from prometheus_client import values

    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(_OLD_ENV)


@contextlib.contextmanager
def shared_metrics_dir() -> Iterator[str]:
    """For a supervisor, before it spawns workers: the multiprocess directory, set in
    ``os.environ`` so that spawned workers inherit it.

    A directory the user already set (``PROMETHEUS_MULTIPROC_DIR``) is used and kept; it should be
    empty at start, as prometheus-client asks: series files of an earlier run are added in (a
    warning says so). Otherwise a fresh private directory is made and removed at exit (and
    those of supervisors killed before they could remove theirs are removed first).

    Raises:
        ConfigError: the variable names something that is not a directory.
    """
    given = os.environ.get(MULTIPROC_ENV) or os.environ.get(_OLD_ENV)
    if given:
        if not os.path.isdir(given):
            raise ConfigError(f"{MULTIPROC_ENV}={given} is not a directory")
        os.environ[MULTIPROC_ENV] = given
        left = glob.glob(os.path.join(given, "*.db"))
        if left:
            log.warning(
                "%s=%s holds %d series files of an earlier run: /metrics adds them in "
                "(prometheus-client wants the directory emptied between runs)",
                MULTIPROC_ENV,
                given,
                len(left),
            )
        yield given
        return
    _remove_orphans()
    path = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


_PREFIX = "tokenward-metrics-"


def _remove_orphans() -> None:
    """Remove the private directories of supervisors that died without removing theirs (killed
    with SIGKILL): ``tokenward-metrics-<pid>-*`` of this user whose ``pid`` is not running."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{_PREFIX}*-*")):
        pid = os.path.basename(path)[len(_PREFIX) :].split("-", 1)[0]
        with contextlib.suppress(OSError, ValueError):
            if os.stat(path).st_uid != os.getuid() or _running(int(pid)):
                continue
            shutil.rmtree(path)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def mark_process_dead(pid: int, path: str) -> None:
    """prometheus-client's bookkeeping for a worker that died (it drops the dead process's
    ``live*`` gauges; counters and histograms stay counted). Nothing without prometheus-client."""
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


class SharedBudgetGauges:
    """The budget gauges of every process using ``directory``: the most recent reading of each
    budget instance, whichever process made it, and at most ``max_series`` of them in a scrape.

    Safe to use from several threads; each process opens its own connection on first use.
    """

    def __init__(self, directory: str, max_series: int) -> None:
        self.path = os.path.join(directory, GAUGES_FILE)
        self.max_series = max_series
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._writes = 0

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=OFF")  # a scratch table, rebuilt from the ledger
            db.execute(
                "CREATE TABLE IF NOT EXISTS budget_gauges (labels TEXT PRIMARY KEY, lim REAL, spent REAL,"
                " held REAL, remaining REAL, utilisation REAL, at REAL NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS budget_gauges_at ON budget_gauges (at)")
            self._db = db
        return self._db

    def put(self, rows: list[tuple[tuple[str, ...], tuple[float, ...]]], at: float) -> None:
        """Record, for each (labels, values) of ``rows``, the values (limit, spent, held,
        remaining, utilisation) of the budget instance ``labels`` as read from the ledger at
        ``at`` (Unix seconds), unless a reading made later is already there. One transaction."""
        if not rows:
            return
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT INTO budget_gauges VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (labels) DO UPDATE"
                    " SET lim = excluded.lim, spent = excluded.spent, held = excluded.held,"
                    " remaining = excluded.remaining, utilisation = excluded.utilisation, at = excluded.at"
                    " WHERE excluded.at >= budget_gauges.at",
                    [(json.dumps(labels), *values, at) for labels, values in rows],
                )
                before, self._writes = self._writes, self._writes + len(rows)
                if before // _TRIM_EVERY != self._writes // _TRIM_EVERY:
                    db.execute(
                        "DELETE FROM budget_gauges WHERE at < (SELECT at FROM budget_gauges"
                        " ORDER BY at DESC LIMIT 1 OFFSET ?)",
                        (self.max_series - 1,),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def latest(self) -> list[tuple[list[str], tuple[float, ...]]]:
        """The ``max_series`` most recently read budget instances: (labels, values)."""
        with self._lock:
            rows: list[Any] = (
                self._conn()
                .execute(
                    "SELECT labels, lim, spent, held, remaining, utilisation FROM budget_gauges"
                    " ORDER BY at DESC LIMIT ?",
                    (self.max_series,),
                )
                .fetchall()
            )
        return [(json.loads(row[0]), tuple(row[1:])) for row in rows]

    def close(self) -> None:
        """Close this process's connection."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
