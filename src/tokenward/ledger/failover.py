"""What a service-backed ledger does while its store is unreachable.

Each hard budget says what it does then (``on_store_failure``, checked when the budget is built):

* ``closed`` (default): a call it applies to is refused with
  :class:`~tokenward.errors.StoreUnavailable` (the gateway answers 503 ``ledger_unavailable``);
* ``open``: the call is admitted unchecked (a reservation that holds nothing, id ``res_open_...``);
  its usage event goes to the local spool (:mod:`.spool`) and is charged to the budgets when the
  store returns ("admit, then reconcile").

A call is admitted only when *every* hard budget that applies to it fails open (soft and shadow
budgets never refuse). When the ledger has never read its budgets (it started while the store was
down) nothing is known, so the call is refused.

Either way the failure is *alerted*: logged (the first failure of an outage at once, then a
summary at most once a minute), told to the callbacks registered with
:meth:`StoreHealth.subscribe`, and recorded durably as an audit entry ``store.unavailable`` (then
``store.recovered`` with the counts of the outage) once the store takes writes again.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tokenward.core.budgets import Budget, Subject, applicable
from tokenward.errors import StoreUnavailable
from tokenward.ledger.base import Reservation, new_id
from tokenward.ledger.records import StopMarker
from tokenward.ledger.rows import stop_of, stopped_error

__all__ = [
    "StoreFailure",
    "StoreHealth",
    "Worker",
    "admit_unchecked",
    "failing_closed",
    "masked",
    "open_reservation",
    "redact",
]

_PROBE_GAP = 0.2  # seconds between two probes of a store that hangs
_SLOW_FAILURE = 0.25  # seconds: a failure that took this long means the store hangs

log = logging.getLogger("tokenward.ledger")

_SUMMARY_EVERY = 60.0  # seconds between log summaries during one outage


def redact(url: str) -> str:
    """``url`` without its password and its query (for logs, alerts and error messages)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}@{host}" if parts.username else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_PASSWORD = re.compile(r"(://[^:/@?#]*):[^@/?#]*@")


def masked(url: str) -> str:
    """``url`` with every password in it (its own, and one in a nested ``events=`` URL) shown as
    ``***``, the rest kept (for banners and listings)."""
    return _PASSWORD.sub(r"\1:***@", url)


def failing_closed(budgets: Sequence[Budget] | None, subject: Subject) -> tuple[str, ...] | None:
    """The hard budgets applying to ``subject`` that fail closed, by name.

    Returns:
        None when the budgets are unknown (the call must be refused), ``()`` when the call may be
        admitted unchecked (every hard budget that applies fails open, or none applies).
    """
    if budgets is None:
        return None
    return tuple(
        sorted(
            {
                b.name
                for b, _ in applicable(budgets, subject)
                if b.mode == "hard" and b.on_store_failure != "open"
            }
        )
    )


def admit_unchecked(
    health: StoreHealth,
    operation: str,
    subject: Subject,
    error: StoreUnavailable,
    budgets: Sequence[Budget] | None,
    stops: Mapping[tuple[str, str], StopMarker],
    now: datetime,
) -> None:
    """Decide a call while the store is unreachable, from the budgets and stop markers cached
    (``budgets`` None: never read). Returns when every hard budget applying to it fails open (the
    caller admits it unchecked); alerts either way.

    Raises:
        Stopped: the subject's session or task was ended by a ``stop`` budget.
        StoreUnavailable: a hard budget fails closed (named, with the store's error chained), or the
            budgets are unknown.
    """
    marker = stop_of(stops, subject)
    if marker is not None:
        raise stopped_error(marker)
    closed = failing_closed(budgets, subject)
    if closed is None or closed:
        health.failed(
            StoreFailure(now, health.store, operation, "refused", str(error), closed or (), subject)
        )
        who = (
            f"budget {', '.join(repr(n) for n in closed)} fails"
            if closed
            else "the budgets are unknown: it fails"
        )
        raise StoreUnavailable(
            f"the ledger store is unavailable and {who} closed (on_store_failure: closed)",
            budgets=closed or (),
        ) from error
    health.failed(StoreFailure(now, health.store, operation, "admitted", str(error), (), subject))


def open_reservation(
    subject: Subject,
    amounts: Mapping[str, Decimal],
    now: datetime,
    ttl: timedelta,
    idempotency_key: str | None,
    metadata: Mapping[str, Any] | None,
) -> Reservation:
    """The reservation of a call admitted unchecked while the store is down: it holds nothing
    (``holds`` is empty) and is known to no store; settling it charges the budgets once the store
    returns."""
    return Reservation(
        id=new_id("res_open"),
        subject=subject,
        amounts=dict(amounts),
        holds=(),
        created_at=now,
        expires_at=now + ttl,
        idempotency_key=idempotency_key,
        metadata={**dict(metadata or {}), "store_failure": "open"},
    )


@dataclass(frozen=True, slots=True)
class StoreFailure:
    """One call handled while the store was unreachable.

    Attributes:
        at: when (UTC, the ledger's clock).
        store: the store's URL, without password.
        operation: ``admit``, ``reserve``, ``settle``, ``release``, ``charge``...
        outcome: ``admitted`` (failed open), ``refused`` (failed closed) or ``spooled`` (a
            settlement or release kept locally for replay).
        error: the driver's message.
        budgets: the budgets that decided (those failing closed for a refusal).
        subject: whom the call was for, when known.
    """

    at: datetime
    store: str
    operation: str
    outcome: str
    error: str
    budgets: tuple[str, ...] = ()
    subject: Subject | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "at": self.at.isoformat().replace("+00:00", "Z"),
            "store": self.store,
            "operation": self.operation,
            "outcome": self.outcome,
            "error": self.error,
            "budgets": list(self.budgets),
            "subject": None if self.subject is None else self.subject.to_dict(),
        }


@dataclass
class StoreHealth:
    """Whether the store is reachable, with the counts of the current outage and the alerts.

    Args:
        store: the store's URL, without password.
        record: called with ``(action, details)`` when an outage starts (``store.unavailable``)
            and ends (``store.recovered``); the ledger makes a durable audit entry of it.
    """

    store: str
    record: Callable[[str, dict[str, Any]], None] | None = None
    down_since: datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)
    _listeners: list[Callable[[StoreFailure], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _logged_at: float = 0.0
    _probing: bool = False
    _next_probe: float = 0.0
    _hanging: bool = False

    @contextmanager
    def attempt(self) -> Iterator[None]:
        """Around one call to the store. While an outage is known and the store fails slowly (it
        hangs, so each call waits out the time-out), only one call at a time, and not more often
        than every 0.2 s, goes to the store to probe it; the others fail at once with
        :class:`StoreUnavailable` instead of each holding a worker thread for the time-out. A
        store that refuses at once (down, restarting) is simply tried by every call.

        Raises:
            StoreUnavailable: the store hangs and another call is probing it.
        """
        gated = self._hanging and self.down_since is not None
        if gated:
            with self._lock:
                now = time.monotonic()
                if self._probing or now < self._next_probe:
                    raise StoreUnavailable(
                        f"ledger store {self.store} unreachable (it hangs; an outage is in progress)"
                    )
                self._probing = True
        start = time.monotonic()
        try:
            yield
        except BaseException:
            self._hanging = time.monotonic() - start >= _SLOW_FAILURE
            raise
        else:
            self._hanging = False
        finally:
            if gated:
                with self._lock:
                    self._probing = False
                    self._next_probe = time.monotonic() + _PROBE_GAP

    def subscribe(self, callback: Callable[[StoreFailure], None]) -> None:
        """Call ``callback(failure)`` for every call handled while the store is down (keep it
        quick; an exception in it is logged and ignored)."""
        self._listeners.append(callback)

    @property
    def down(self) -> bool:
        """Whether the last attempt to reach the store failed."""
        return self.down_since is not None

    def failed(self, failure: StoreFailure) -> None:
        """Note one call handled while the store is unreachable, and alert."""
        with self._lock:
            first = self.down_since is None
            if first:
                self.down_since = failure.at
                self.counts = {}
            self.counts[failure.outcome] = self.counts.get(failure.outcome, 0) + 1
            due = first or time.monotonic() - self._logged_at >= _SUMMARY_EVERY
            if due:
                self._logged_at = time.monotonic()
            counts = dict(self.counts)
        if first:
            log.error(
                "ledger store %s unreachable (%s): %s %s by store-failure policy%s",
                self.store,
                failure.error,
                failure.operation,
                failure.outcome,
                f" ({', '.join(failure.budgets)})" if failure.budgets else "",
            )
            if self.record is not None:
                self._record("store.unavailable", {"since": failure.to_dict()})
        elif due:
            log.error("ledger store %s still unreachable; this outage so far: %s", self.store, counts)
        for listener in list(self._listeners):
            try:
                listener(failure)
            except Exception:
                log.exception("store-failure callback %r failed", listener)

    def recovered(self, at: datetime) -> None:
        """Note that the store answered again (after an outage: log and record it)."""
        with self._lock:
            if self.down_since is None:
                return
            since, counts = self.down_since, dict(self.counts)
            self.down_since = None
            self.counts = {}
        log.warning("ledger store %s reachable again after %s; outage: %s", self.store, at - since, counts)
        if self.record is not None:
            self._record(
                "store.recovered",
                {
                    "down_since": since.isoformat().replace("+00:00", "Z"),
                    "at": at.isoformat().replace("+00:00", "Z"),
                    "counts": counts,
                },
            )

    def _record(self, action: str, details: dict[str, Any]) -> None:
        try:
            self.record(action, details)  # type: ignore[misc]
        except Exception:
            log.exception("could not record %s", action)


class Worker:
    """A daemon thread that runs ``step()`` whenever woken, and at least every ``interval``
    seconds, until stopped. ``step`` returns True when it did something (then it runs again at
    once). With ``gather`` (seconds) it waits that long after being woken, so that the work of
    many calls is done in one batch."""

    def __init__(
        self, name: str, step: Callable[[], bool], interval: float = 1.0, gather: float = 0.0
    ) -> None:
        self._step = step
        self._interval = interval
        self._gather = gather
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run ``step`` soon."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._wake.wait(self._interval) and self._gather:
                self._stop.wait(self._gather)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                while self._step() and not self._stop.is_set():
                    pass
            except Exception:  # never let the worker die; the step logs its own failures
                log.exception("ledger worker %s failed", self._thread.name)
                self._stop.wait(0.5)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop and wait for the thread."""
        self._stop.set()
        self._wake.set()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
