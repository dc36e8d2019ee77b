"""Delivering alerts from the outbox to their sinks, with retries and exponential backoff.

A *sink* is anything with a ``name`` and a ``send(alert, attempt)`` that raises on failure:
:class:`~tokenward.observe.webhooks.WebhookSink`, :class:`LogSink`, :class:`CallbackSink`.
The :class:`Dispatcher` claims due deliveries from the :class:`~tokenward.observe.outbox.Outbox`,
calls the sink, and records the outcome. A failed attempt ``n`` (1-based) is tried again after
``min(cap, base * 2 ** (n - 1))`` seconds (optionally with "full jitter": a random share of that
delay); after ``max_attempts`` the delivery is ``dead``. Nothing is lost on a restart: what was
not delivered is still pending in the file, and the next dispatcher delivers it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tokenward.observe.alerts import Alert
from tokenward.observe.outbox import Outbox

__all__ = ["Backoff", "CallbackSink", "Dispatcher", "LogSink", "Sink"]

log = logging.getLogger("tokenward.alerts")


@runtime_checkable
class Sink(Protocol):
    """Where alerts go. ``send`` raises (any exception) when the alert was not delivered."""

    name: str

    def send(self, alert: Alert, attempt: int) -> None:
        """Deliver ``alert``; ``attempt`` counts from 1."""
        ...


class LogSink:
    """Writes each alert as one ``WARNING`` line on the ``tokenward.alerts`` logger (an
    ``exhausted`` alert as ``ERROR``), with the alert's fields in ``extra={"alert": {...}}``."""

    name = "log"

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or log

    def send(self, alert: Alert, attempt: int) -> None:
        """Log the alert."""
        level = logging.ERROR if alert.kind == "exhausted" else logging.WARNING
        self.logger.log(
            level, "[%s] %s (alert %s)", alert.kind, alert.message, alert.id, extra={"alert": alert.to_dict()}
        )


class CallbackSink:
    """Calls a Python function with each alert; an exception from it is a failed attempt.

    Args:
        callback: ``callback(alert)``; it runs in the dispatcher's thread.
        name: the sink's label (``callback:<name>``); defaults to the function's qualified name,
            so a restarted process that registers the same function gets its pending alerts.
    """

    def __init__(self, callback: Callable[[Alert], object], name: str | None = None) -> None:
        self.callback = callback
        self.name = f"callback:{name or getattr(callback, '__qualname__', repr(callback))}"

    def send(self, alert: Alert, attempt: int) -> None:
        """Call the function."""
        self.callback(alert)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry schedule: attempt ``n`` failed, wait ``min(cap, base * 2 ** (n - 1))`` seconds.

    Attributes:
        base: first delay, in seconds.
        cap: longest delay, in seconds.
        max_attempts: attempts before a delivery is ``dead``.
        jitter: when True, wait a uniformly random time up to the delay ("full jitter").
    """

    base: float = 1.0
    cap: float = 3600.0
    max_attempts: int = 15
    jitter: bool = False

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        delay = min(self.cap, self.base * 2 ** max(0, attempt - 1))
        return random.uniform(0, delay) if self.jitter else delay


class Dispatcher:
    """Delivers what is due in an outbox to the sinks it knows.

    Args:
        outbox: the outbox.
        sinks: the sinks, by their ``name``; deliveries to other sinks are left pending.
        backoff: the retry schedule.
        lease: seconds a claimed delivery is reserved for this dispatcher.
        time_source: Unix seconds (default ``time.time``; tests pass a fake).
    """

    def __init__(
        self,
        outbox: Outbox,
        sinks: Iterable[Sink],
        *,
        backoff: Backoff | None = None,
        lease: float = 60.0,
        time_source: Callable[[], float] | None = None,
    ) -> None:
        self.outbox = outbox
        self.sinks = {sink.name: sink for sink in sinks}
        self.backoff = backoff or Backoff()
        self.lease = lease
        self.time = time_source or time.time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self, *, limit: int = 100) -> int:
        """Try every delivery due now (up to ``limit``); returns how many succeeded."""
        now = self.time()
        done = 0
        for delivery in self.outbox.claim(now=now, lease=self.lease, limit=limit, sinks=list(self.sinks)):
            sink = self.sinks[delivery.sink]
            try:
                sink.send(delivery.alert, delivery.attempts)
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                last = delivery.attempts >= self.backoff.max_attempts
                next_at = None if last else self.time() + self.backoff.delay(delivery.attempts)
                self.outbox.failed(delivery.alert.id, delivery.sink, error, next_at=next_at)
                (log.error if last else log.info)(
                    "alert %s to %s failed (attempt %d%s): %s",
                    delivery.alert.id,
                    delivery.sink,
                    delivery.attempts,
                    ", giving up" if last else "",
                    error,
                )
                continue
            self.outbox.delivered(delivery.alert.id, delivery.sink, now=self.time())
            done += 1
        return done

    def drain(self, *, timeout: float = 30.0, poll: float = 0.01) -> bool:
        """Deliver until nothing this dispatcher can deliver is pending (waiting out backoffs), or
        ``timeout`` seconds pass. Returns True when drained. Meant for tests and shutdown."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.run_once()
            pending = [d for d in self.outbox.deliveries(state="pending") if d.sink in self.sinks]
            if not pending:
                return True
            time.sleep(poll)
        return False

    def wake(self) -> None:
        """Ask the background thread to look at the outbox now (a new alert was queued)."""
        self._wake.set()

    def start(self, *, interval: float = 1.0) -> None:
        """Deliver in a daemon thread: whenever woken, and at least every ``interval`` seconds."""
        if self._thread is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    while self.run_once():
                        pass
                except Exception:
                    log.exception("alert dispatcher failed; retrying")
                due = self.outbox.next_due()
                wait = interval if due is None else max(0.0, min(interval, due - self.time()))
                self._wake.wait(wait)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name="tokenward-alerts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the background thread (what is pending stays in the outbox)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
