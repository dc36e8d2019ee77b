"""Keeping the holds of long calls alive.

A reservation lives for the guard's ``ttl`` (10 minutes by default) so that the holds of a process
that died are released. A call that runs longer than that (a long stream, a slow reasoning model,
a short ``ttl``) must not lose its hold while it runs: other calls would be admitted into room the
running call is about to use, and the budget would be overspent when it settles.

:class:`Renewer` runs one daemon thread per guard (started when a call is watched, ended after a
minute without any). Every admitted call is registered with the time to live its reservation was
made with; each third of that time its reservation is extended
(:meth:`tokenward.ledger.Ledger.extend`) by the same time to live, until the call is settled or
released. A call whose admission object is dropped without being settled (an abandoned SDK
stream) is forgotten with it (the renewer holds it weakly), so its hold still expires; so do the
holds of a process that dies. A forked child starts afresh (calls watched by the parent are the
parent's to renew).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from tokenward.errors import LedgerError

__all__ = ["Renewer"]

log = logging.getLogger("tokenward.guard")

_MIN_INTERVAL = 0.01  # seconds
_IDLE_EXIT = 60.0  # seconds without a call to watch before the thread ends


class _Call:
    __slots__ = ("context", "due", "interval", "owner", "ttl")

    def __init__(self, due: float, ttl: timedelta, owner: weakref.ref[Any], context: Any) -> None:
        self.ttl = ttl
        self.interval = max(ttl.total_seconds() / 3, _MIN_INTERVAL)
        self.due = due + self.interval
        self.owner = owner
        self.context = context


class Renewer:
    """Extends the reservations of calls still running, each third of their time to live.

    Args:
        extend: ``extend(reservation_id, ttl, context) -> bool``, called from the renewer's own
            thread: the ledger's ``extend`` (``context`` is what :meth:`watch` was given with
            the call, such as the event loop of an async ledger).
    """

    def __init__(self, extend: Callable[[str, timedelta, Any], bool]) -> None:
        self._extend = extend
        self._calls: dict[str, _Call] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._wake_at = float("inf")
        self._pid = os.getpid()
        self._closed = False
        self.renewed = 0
        """How many renewals succeeded (for tests and metrics)."""

    def watch(self, reservation_id: str, ttl: timedelta, owner: object, context: Any = None) -> None:
        """Keep ``reservation_id`` (made with time to live ``ttl``) alive while ``owner`` (the
        call's admission) exists and :meth:`done` was not called for it. Watching a reservation
        again (an idempotent re-admission) keeps its schedule and takes the new owner."""
        now = time.monotonic()
        if self._pid != os.getpid():  # a forked child: the parent's thread and calls are not ours
            self._forked()
        with self._cond:
            if self._closed:
                return
            known = self._calls.get(reservation_id)
            if known is not None:
                known.owner, known.context = weakref.ref(owner), context
                return
            call = self._calls[reservation_id] = _Call(now, ttl, weakref.ref(owner), context)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="tokenward-renewer", daemon=True)
                self._thread.start()
            elif call.due < self._wake_at:
                self._cond.notify()

    def done(self, reservation_id: str) -> None:
        """The call was settled or released: stop renewing its reservation."""
        with self._cond:
            if (
                self._calls.pop(reservation_id, None) is not None
                and not self._calls
                and self._wake_at > time.monotonic() + _IDLE_EXIT
            ):  # nothing left, and the thread sleeps longer than an idle wait: start that now
                self._cond.notify()

    def close(self) -> None:
        """Stop the thread (reservations still watched keep their current expiry)."""
        with self._cond:
            self._closed = True
            self._calls.clear()
            self._cond.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _forked(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._calls = {}
        self._thread = None
        self._wake_at = float("inf")

    def _due(self) -> list[tuple[str, timedelta, Any]] | None:
        """Wait until some calls are due; return them (rescheduled), or None to end the thread
        (closed, or a minute without any call)."""
        with self._cond:
            while not self._closed:
                if not self._calls:
                    self._wake_at = time.monotonic() + _IDLE_EXIT
                    if not self._cond.wait(_IDLE_EXIT) and not self._calls:
                        self._thread = None
                        return None
                    continue
                now = time.monotonic()
                due: list[tuple[str, timedelta, Any]] = []
                for rid, call in list(self._calls.items()):
                    if call.due > now:
                        continue
                    if call.owner() is None:  # dropped without being settled: let it expire
                        del self._calls[rid]
                        continue
                    call.due = now + call.interval
                    due.append((rid, call.ttl, call.context))
                if due:
                    return due
                if self._calls:
                    self._wake_at = min(call.due for call in self._calls.values())
                    self._cond.wait(max(self._wake_at - now, 0.0))
            return None

    def _run(self) -> None:
        while (due := self._due()) is not None:
            for rid, ttl, context in due:
                try:
                    kept = self._extend(rid, ttl, context)
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
