"""Writes a store cannot take now wait in the local spool and are replayed until they land.

:class:`SpooledWrites` is mixed into the SQLite and PostgreSQL ledgers (the Redis ledger spools
every settlement through its own drainer, :mod:`.redis.drain`): a settlement or a release the
store cannot take (SQLite: another writer holds the file's lock past the busy time-out;
PostgreSQL: the server is unreachable or too slow; either: the store refuses it) is appended to
the spool (:mod:`.spool`) and a replayer thread moves it to the store as soon as the store takes
it. The caller's answer never waits for that, and nothing already recorded is lost: the entries of
a process that died are replayed by the next process that opens the same ledger.

An entry the store keeps refusing for its content (not its availability) is quarantined after
:data:`~tokenward.ledger.spool.REFUSALS` tries, so the entries behind it keep landing; the
quarantine is logged as an error, recorded as an audit entry ``ledger.quarantined``, listed by
``tokenward quarantine list`` and put back by ``tokenward quarantine retry``.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenward.clock import Clock
from tokenward.core.budgets import Subject
from tokenward.core.events import UsageEvent
from tokenward.errors import LedgerError, StoreUnavailable
from tokenward.ledger.failover import StoreFailure, StoreHealth, Worker
from tokenward.ledger.normalise import storable_event
from tokenward.ledger.spool import Spool, SpoolEntry

__all__ = ["SpooledWrites", "alert_quarantined"]

log = logging.getLogger("tokenward.ledger")


class SpooledWrites(abc.ABC):
    """The spool and its replayer (see the module docstring)."""

    clock: Clock
    health: StoreHealth
    spool_path: Path

    def _init_spool(self, path: Path) -> None:
        self.spool_path = path
        self._spool: Spool | None = None
        self._spool_lock = threading.Lock()
        self._replayer: Worker | None = None
        self._closed = False

    @abc.abstractmethod
    def _replay_entry(self, entry: SpoolEntry) -> None:
        """Apply one spooled entry to the store (without spooling again).

        Raises:
            StoreUnavailable: the store cannot take it now (retried later).
            Exception: anything else is a refusal of the entry itself.
        """

    def _open_spool(self) -> Spool:
        with self._spool_lock:
            if self._spool is None:
                self._spool = Spool(self.spool_path)
            return self._spool

    def _spool_write(
        self, kind: str, payload: dict[str, Any], operation: str, exc: Exception, subject: Subject | None
    ) -> None:
        """Keep a write the store did not take, and alert."""
        self._open_spool().append(kind, payload)
        if isinstance(exc, StoreUnavailable):
            self.health.failed(
                StoreFailure(self.clock.now(), self.health.store, operation, "spooled", str(exc), (), subject)
            )
        else:
            log.error("the ledger store refused a %s (kept in the spool, retried): %s", operation, exc)
        self._start_replayer()

    def _spool_settle(self, reservation_id: str | None, event: UsageEvent, exc: Exception) -> UsageEvent:
        """Keep a settlement the store did not take (made storable first); returns the event."""
        event = storable_event(event)
        payload = {"reservation_id": reservation_id, "event": event.to_dict()}
        self._spool_write("settle", payload, "settle", exc, event.subject)
        return event

    def _record_alert(self, action: str, details: dict[str, Any]) -> None:
        """Record an alert as an audit entry, through the spool (the store may be down)."""
        self._open_spool().append("audit", {"action": action, "details": details})
        self._start_replayer()

    def _start_replayer(self) -> None:
        with self._spool_lock:
            if self._replayer is None and not self._closed:
                self._replayer = Worker("tokenward-spool", self._replay_step, interval=0.5)
            replayer = self._replayer
        if replayer is not None:
            replayer.wake()

    def _replay_step(self) -> bool:
        """Replay the oldest spooled entries; True when some landed (more may wait). An entry the
        store refuses is retried later, and quarantined at its last refusal; one the store
        cannot take now stops the step (the rest wait with it)."""
        spool = self._open_spool()
        entries = spool.claim(100)
        if not entries:
            return False
        done: list[int] = []
        for index, entry in enumerate(entries):
            try:
                self._replay_entry(entry)
            except StoreUnavailable as exc:
                spool.done(done)
                spool.retry([e.id for e in entries[index:]], str(exc))
                return False
            except Exception as exc:  # the store refuses this entry: it must not block the rest
                error = f"{type(exc).__name__}: {exc}"
                if spool.refused(entry.id, error):
                    self._quarantined(entry, error)
                continue
            done.append(entry.id)
        spool.done(done)
        if done and self.health.down:
            self.health.recovered(self.clock.now())
        return bool(done)

    def _quarantined(self, entry: SpoolEntry, error: str) -> None:
        alert_quarantined(self.spool_path, entry, error, self._record_alert)

    def flush(self, timeout: float = 30.0) -> int:
        """Replay the spool now; returns how many entries still wait after ``timeout`` seconds
        (0: everything reached the store; quarantined entries are not counted)."""
        if not self.spool_path.exists():
            return 0
        spool = self._open_spool()
        deadline = time.monotonic() + timeout
        while spool.pending() and time.monotonic() < deadline:
            if not self._replay_step():
                time.sleep(0.05)
        return spool.pending()

    def _resume_spool(self) -> None:
        """At open: replay what a previous process left in the spool (once now, best effort; then
        in the background)."""
        if not self.spool_path.exists():
            return
        with contextlib.suppress(LedgerError):
            self._replay_step()
            if self._open_spool().pending():
                self._start_replayer()

    def _close_spool(self) -> None:
        """Stop the replayer (replaying what it can first) and close the spool file."""
        self._closed = True
        if self._replayer is not None:
            self._replayer.stop()
            with contextlib.suppress(LedgerError):
                self._replay_step()
        with self._spool_lock:
            if self._spool is not None:
                self._spool.close()
                self._spool = None


def alert_quarantined(
    spool: Path, entry: SpoolEntry, error: str, record: Callable[[str, dict[str, Any]], None]
) -> None:
    """Alert a quarantined spool entry: an error in the log, and ``record("ledger.quarantined",
    details)`` (the ledger makes an audit entry of it; not for an audit entry itself)."""
    log.error(
        "spooled %s entry %d was refused by the ledger store and is quarantined (it no longer "
        "blocks the spool; see `tokenward quarantine list`): %s",
        entry.kind,
        entry.id,
        error,
    )
    if entry.kind == "audit":
        return
    details: dict[str, Any] = {"spool": str(spool), "entry": entry.id, "kind": entry.kind, "error": error}
    request_id = (entry.payload.get("event") or {}).get("request_id")
    if request_id:
        details["request_id"] = request_id
    record("ledger.quarantined", details)
