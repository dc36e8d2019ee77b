"""Budget alerts wired to the guard: thresholds, exhaustion and forecasts, from a durable outbox.

:class:`Alerts` is a guard observer. After every settled call it reads the balances of the
call's subject (in a background thread, so the call is never slowed), and for every budget that
reached a threshold (default 50%, 80%, 100%) or whose window projection crosses its limit, it
stores an :class:`~tokenward.observe.alerts.Alert` in the outbox with one pending delivery per
sink (webhooks, the log, Python callbacks). A hard budget refusing a call raises the budget's
exhaustion alert too. The outbox keeps each alert once per budget, window and threshold (by its
deduplication key), however many processes watch the same ledger. A rolling window has no end of
its own: its alerts fire once per *episode* (:mod:`tokenward.core.episodes`): once when spend
rises to a threshold, again only after it has fallen back below it (each watcher follows the
episodes of the calls it observes, so two processes may each report the same rise once). A
:class:`~tokenward.observe.delivery.Dispatcher` delivers, retrying with exponential backoff;
what was not delivered when a process stops is delivered by the next one that opens the outbox.

Usage::

    alerts = Alerts(ledger, "alerts.db", webhooks=[Webhook("https://ops.example/hook", secret="whsec_...")],
                    callbacks=[page_someone])
    guard = Guard(ledger, observers=[alerts])
    alerts.start()      # deliver in a background thread
    ...
    alerts.close()

Threshold events recorded by the ledger itself (issue 4) will replace the balance reading here
once the ledger offers them; the delivery side does not change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from tokenward.clock import Clock, SystemClock, utc
from tokenward.core.budgets import Subject
from tokenward.core.decide import Balance, CallPlan
from tokenward.core.episodes import Episode, rolling_episode
from tokenward.core.events import UsageEvent
from tokenward.errors import BudgetError, BudgetExceeded
from tokenward.ledger import Ledger, open_ledger
from tokenward.numbers import plain
from tokenward.observe._worker import Worker
from tokenward.observe.alerts import (
    DEFAULT_THRESHOLDS,
    Alert,
    _is_control,
    disputed_alert,
    exhaustion_alert,
    threshold_alerts,
)
from tokenward.observe.delivery import Backoff, CallbackSink, Dispatcher, LogSink, Sink
from tokenward.observe.forecast import forecast_window
from tokenward.observe.outbox import Outbox
from tokenward.observe.webhooks import Webhook, WebhookSink

__all__ = ["Alerts", "forecast_alerts", "sync_ledger"]

log = logging.getLogger("tokenward.alerts")


def sync_ledger(ledger: Any) -> Ledger:
    """A synchronous ledger from a :class:`~tokenward.ledger.Ledger`, the async wrapper of an
    embedded one (its ``.sync``), or a URL."""
    if isinstance(ledger, str):
        return open_ledger(ledger)
    inner = getattr(ledger, "sync", None)
    if inner is not None:
        return inner  # type: ignore[no-any-return]
    return ledger  # type: ignore[no-any-return]


def forecast_alerts(
    balances: Iterable[Balance], at: datetime, *, min_elapsed: Decimal = Decimal("0.1")
) -> list[Alert]:
    """``forecast`` alerts for balances whose linear projection over their own window reaches the
    limit before the window ends (:func:`~tokenward.observe.forecast.forecast_window`).

    Args:
        balances: the balances to project.
        at: the instant of the projection.
        min_elapsed: project only once this share of the window has passed (a projection from the
            first minutes of a day says little); C45's half-elapsed day passes the default 10%.
    """
    out = []
    for balance in balances:
        budget = balance.budget
        if budget.limit <= 0 or _is_control(budget.name) or balance.spent >= budget.limit:
            continue
        forecast = forecast_window(budget, balance.spent, at)
        if forecast is None or forecast.projected_cross_at is None:
            continue
        length = (forecast.window_end - forecast.window_start).total_seconds()
        if length <= 0 or Decimal(
            (forecast.now - forecast.window_start).total_seconds()
        ) < min_elapsed * Decimal(length):
            continue
        cross = forecast.projected_cross_at.isoformat().replace("+00:00", "Z")
        out.append(
            Alert(
                kind="forecast",
                budget=budget.name,
                scope=budget.scope,
                subject_id=balance.subject_id,
                window_key=balance.window_key,
                at=utc(at),
                meter=budget.meter,
                limit=budget.limit,
                spent=balance.spent,
                held=balance.held,
                reset_at=balance.reset_at,
                message=(
                    f"budget {budget.name!r} ({budget.scope} {balance.subject_id!r}, {budget.meter}) is projected "
                    f"to reach its limit {plain(budget.limit)} at {cross}, before its window ends "
                    f"(projected {plain(forecast.projected_spend.quantize(Decimal('0.000001')))})"
                ),
                details=forecast.to_dict(),
            )
        )
    return out


class Alerts:
    """Budget alerts for a ledger, delivered from a durable outbox (a guard observer).

    Args:
        ledger: the ledger whose budgets are watched: a ledger, the gateway's async ledger
            (an embedded one is read through its ``.sync``), or a URL.
        outbox: an :class:`~tokenward.observe.outbox.Outbox` or its file path.
        webhooks: endpoints to post alerts to.
        callbacks: Python functions called with each :class:`~tokenward.observe.alerts.Alert`.
        log: also write each alert to the ``tokenward.alerts`` logger.
        sinks: further sinks (anything with ``name`` and ``send(alert, attempt)``).
        thresholds: fractions of a limit that raise an alert (1 is exhaustion).
        forecast: raise ``forecast`` alerts from the window projection.
        backoff: the retry schedule of failed deliveries.
        background: check balances in a background thread (True), or inline in the observer
            call (False; tests and batch jobs).
        clock: where "now" comes from for refused calls (default the wall clock).
        http_client: an ``httpx.Client`` for the webhooks (tests inject one).
        time_source: Unix seconds for the outbox schedule (default ``time.time``).
        on_disputed: also raise a ``disputed`` alert for each call whose provider reported less
            than tokenward counted (:func:`~tokenward.observe.alerts.disputed_alert`).
    """

    def __init__(
        self,
        ledger: Any,
        outbox: Outbox | str | Path,
        *,
        webhooks: Sequence[Webhook] = (),
        callbacks: Sequence[Callable[[Alert], object]] = (),
        log: bool = True,
        sinks: Sequence[Sink] = (),
        thresholds: Sequence[Decimal] = DEFAULT_THRESHOLDS,
        forecast: bool = True,
        backoff: Backoff | None = None,
        background: bool = True,
        clock: Clock | None = None,
        http_client: httpx.Client | None = None,
        time_source: Callable[[], float] | None = None,
        on_disputed: bool = False,
    ) -> None:
        self.ledger = sync_ledger(ledger)
        self.on_disputed = on_disputed
        self.outbox = outbox if isinstance(outbox, Outbox) else Outbox(outbox)
        self.thresholds = tuple(thresholds)
        self.forecast = forecast
        self.clock = clock or getattr(self.ledger, "clock", None) or SystemClock()
        self.time = time_source or time.time
        all_sinks: list[Sink] = [WebhookSink(w, client=http_client, clock=self.time) for w in webhooks]
        all_sinks += [CallbackSink(cb) for cb in callbacks]
        if log:
            all_sinks.append(LogSink())
        all_sinks += list(sinks)
        names = [s.name for s in all_sinks]
        if len(names) != len(set(names)):
            raise ValueError(f"alert sinks need distinct names, got {names}")
        self.sinks = all_sinks
        self.dispatcher = Dispatcher(self.outbox, all_sinks, backoff=backoff, time_source=self.time)
        self._seen: set[str] = set()
        self._episodes: dict[tuple[str, str, Decimal], Episode] = {}
        self._episodes_lock = threading.Lock()
        self._worker = Worker(self._handle, name="tokenward-alert-watch") if background else None

    # -- guard observer hooks ----------------------------------------------------------------------
    def on_settle(self, event: UsageEvent) -> None:
        """A call was settled: check its subject's budgets (in the background), and raise its
        ``disputed`` alert when asked to."""
        self._submit(("settle", event.subject, event.at))
        if self.on_disputed and event.disputed:
            self._submit(("disputed", event))

    def on_deny(self, subject: Subject, plan: CallPlan | None, error: BudgetError) -> None:
        """A budget refused a call: its exhaustion alert (in the background)."""
        if isinstance(error, BudgetExceeded):
            self._submit(("deny", subject, error, self.clock.now()))

    def _submit(self, item: tuple[Any, ...]) -> None:
        if self._worker is None:
            self._handle(item)
        else:
            self._worker.submit(item)

    def _handle(self, item: tuple[Any, ...]) -> None:
        if item[0] == "settle":
            self.check(item[1], item[2])
        elif item[0] == "disputed":
            self.raise_alerts([disputed_alert(item[1])])
        else:
            error: BudgetExceeded = item[2]
            budget = self.ledger.get_budget(error.budget)
            at = utc(item[3])
            if budget is None:
                window_key = ""
            elif budget.window.rolling:
                window_key = self._refusal_key(budget, error, at)
            else:
                window_key = budget.window.key(at)
            alert = exhaustion_alert(
                budget=error.budget,
                scope=error.scope,
                subject_id=error.subject_id,
                meter=error.meter,
                limit=error.limit,
                used=error.used,
                held=error.held,
                requested=error.requested,
                reset_at=error.reset_at,
                window_key=window_key,
                at=at,
            )
            if alert is not None:
                self.raise_alerts([alert])

    # -- checking and raising --------------------------------------------------------------------
    def check(self, subject: Subject, at: datetime) -> list[Alert]:
        """Check every budget applying to ``subject`` in the window containing ``at`` and raise
        what is due; returns the alerts that were new."""
        balances = self.ledger.balances(subject, at)
        alerts = self._in_episodes(threshold_alerts(balances, at, self.thresholds), balances, at)
        if self.forecast:
            alerts += forecast_alerts(balances, at)
        return self.raise_alerts(alerts)

    def _in_episodes(self, alerts: list[Alert], balances: Sequence[Balance], at: datetime) -> list[Alert]:
        """Key the threshold alerts of rolling windows by their episode (the bucket where the
        spend rose to the threshold), so a rise is reported once until the spend falls below."""
        keys: dict[tuple[str, str, Decimal], str] = {}
        with self._episodes_lock:
            for balance in balances:
                if not balance.budget.window.rolling:
                    continue
                for threshold in self.thresholds:
                    name = (balance.budget.name, balance.subject_id, threshold)
                    episode = rolling_episode(balance, threshold, at, self._episodes.get(name))
                    if episode is None:
                        self._episodes.pop(name, None)
                    else:
                        self._episodes[name] = episode
                        keys[name] = episode.key
        return [
            replace(a, window_key=key)
            if a.threshold is not None and (key := keys.get((a.budget, a.subject_id, a.threshold)))
            else a
            for a in alerts
        ]

    def _refusal_key(self, budget: Any, error: BudgetExceeded, at: datetime) -> str:
        """The window key of a rolling budget's refusal: its 100% episode's when one is under way
        (one exhaustion alert per episode), else the bucket of the oldest spend still counted,
        which stays the same through a burst of refusals."""
        with self._episodes_lock:
            episode = self._episodes.get((budget.name, error.subject_id or "", Decimal(1)))
        if episode is not None:
            return episode.key
        if error.reset_at is not None:
            return str(budget.window.key(error.reset_at - (budget.window.buckets + 1) * budget.window.bucket))
        return str(budget.window.key(at))

    def raise_alerts(self, alerts: Iterable[Alert]) -> list[Alert]:
        """Store alerts not raised before, with a pending delivery to every sink; wake the
        dispatcher. Returns the new ones."""
        fresh = [a for a in alerts if a.dedup_key not in self._seen]
        if not fresh:
            return []
        known = self.outbox.known([a.dedup_key for a in fresh])
        new = []
        names = [s.name for s in self.sinks]
        for alert in fresh:
            self._seen.add(alert.dedup_key)
            if alert.dedup_key in known:
                continue
            if self.outbox.put(alert, names, now=self.time()):
                new.append(alert)
        if new:
            self.dispatcher.wake()
        return new

    # -- running -----------------------------------------------------------------------------------
    def start(self, *, interval: float = 1.0) -> None:
        """Deliver in a background thread (see :meth:`Dispatcher.start`)."""
        self.dispatcher.start(interval=interval)

    def flush(self) -> None:
        """Wait until every observed call has been checked (alerts are then in the outbox)."""
        if self._worker is not None:
            self._worker.flush()

    def deliver(self) -> int:
        """Deliver what is due now, in this thread; returns how many deliveries succeeded."""
        return self.dispatcher.run_once()

    def close(self) -> None:
        """Finish checking what was observed, stop delivering (pending alerts stay in the
        outbox for the next start), close the webhook clients and the outbox."""
        if self._worker is not None:
            self._worker.stop()
        self.dispatcher.stop()
        for sink in self.sinks:
            close = getattr(sink, "close", None)
            if close is not None:
                close()
        self.outbox.close()
