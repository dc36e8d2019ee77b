"""Keeping the holds of long calls alive.

A reservation lives for the guard's ``ttl`` (10 minutes by default) so that the holds of a process
that died are released. A call that runs longer than that (a long stream, a slow reasoning model,
a short ``ttl``) must not lose its hold while it runs: other calls would be admitted into room the
running call is about to use, and the budget would be overspent when it settles.

:class:`Renewer` runs one daemon thread per guard. Every admitted call is registered; once it has
been open for a third of the ``ttl`` its reservation is extended
(:meth:`tokenward.ledger.Ledger.extend`) by another ``ttl``, and again every third of the ``ttl``,
until the call is settled or released. A call whose admission object is dropped without being
settled (an abandoned SDK stream) is forgotten with it (the renewer holds it weakly), so its hold
still expires; so do the holds of a process that dies.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tokenward.errors import LedgerError

__all__ = ["Renewer"]

log = logging.getLogger("tokenward.guard")

_MIN_INTERVAL = 0.05  # seconds


class Renewer:
    """Extends the reservations of calls still running, every ``ttl / 3``.

    Args:
        extend: the ledger's ``extend(reservation_id, ttl) -> bool`` (sync; called from the
            renewer's own thread).
        ttl: the reservations' time to live; each renewal pushes the expiry to now + ``ttl``.
    """

    def __init__(self, extend: Callable[[str, timedelta], bool], ttl: timedelta) -> None:
        self._extend = extend
        self.ttl = ttl
        self.interval = max(ttl.total_seconds() / 3, _MIN_INTERVAL)
        self._calls: dict[str, tuple[float, weakref.ref[Any]]] = {}  # reservation id -> (due, owner)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.renewed = 0
        """How many renewals succeeded (for tests and metrics)."""

    def watch(self, reservation_id: str, owner: object) -> None:
        """Keep ``reservation_id`` alive while ``owner`` (the call's admission) exists and
        :meth:`done` was not called for it."""
        due = time.monotonic() + self.interval
        with self._cond:
            if self._closed:
                return
            was_empty = not self._calls
            self._calls[reservation_id] = (due, weakref.ref(owner))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="tokenward-renewer", daemon=True)
                self._thread.start()
            elif was_empty:
                self._cond.notify()

    def done(self, reservation_id: str) -> None:
        """The call was settled or released: stop renewing its reservation."""
        with self._cond:
            self._calls.pop(reservation_id, None)

    def close(self) -> None:
        """Stop the thread (reservations still watched keep their current expiry)."""
        with self._cond:
            self._closed = True
            self._calls.clear()
            self._cond.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _due(self) -> list[str] | None:
        """Wait until some calls are due; return their ids (rescheduled), or None once closed."""
        with self._cond:
            while not self._closed:
                if not self._calls:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                first_due = next(iter(self._calls.values()))[0]  # insertion order is due order
                if first_due > now:
                    self._cond.wait(first_due - now)
                    continue
                due: list[str] = []
                for rid, (when, owner) in list(self._calls.items()):
                    if when > now:
                        break
                    del self._calls[rid]
                    if owner() is not None:
                        self._calls[rid] = (now + self.interval, owner)  # to the back: due last
                        due.append(rid)
                return due
            return None

    def _run(self) -> None:
        while (due := self._due()) is not None:
            for rid in due:
                try:
                    kept = self._extend(rid, self.ttl)
                except LedgerError as exc:  # the store is down or slow: try again at the next interval
                    log.warning("could not extend reservation %s: %s", rid, exc)
                    continue
                except Exception:
                    log.exception("could not extend reservation %s", rid)
                    continue
                if kept:
                    self.renewed += 1
                else:  # finished meanwhile, or already past its expiry: nothing left to keep
                    self.done(rid)
