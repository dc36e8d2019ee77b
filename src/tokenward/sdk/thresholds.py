"""Threshold callbacks: told once per budget, window and threshold when spend crosses a share of
a budget's limit (for a rolling window, once per rise to the threshold until spend falls back
below it: :mod:`tokenward.core.episodes`)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokenward.core.decide import Balance
from tokenward.core.episodes import Episode, rolling_episode
from tokenward.core.events import UsageEvent
from tokenward.ledger import Ledger

__all__ = ["Crossing", "ThresholdWatcher"]

log = logging.getLogger("tokenward.thresholds")


@dataclass(frozen=True, slots=True)
class Crossing:
    """Spend crossed ``threshold`` (a share of the limit, 0.8 = 80 %) of a budget.

    Attributes:
        budget, scope, subject_id, meter: which budget instance.
        window_key: the window (its UTC start, or ``""``; for a rolling window, the bucket where
            spend rose to the threshold).
        threshold: the share crossed.
        used: spent in the window (meter units: tokens, USD, calls).
        limit: the budget's limit.
        reset_at: when the window resets (UTC), or None.
    """

    budget: str
    scope: str
    subject_id: str
    meter: str
    window_key: str
    threshold: Decimal
    used: Decimal
    limit: Decimal
    reset_at: datetime | None


class ThresholdWatcher:
    """An observer that checks the balances of each settled call's subject and calls back on
    crossings (sync callbacks in place; ``async`` ones as tasks on the running loop, or run to
    completion when there is none)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._subscriptions: list[tuple[Callable[..., Any], list[Decimal]]] = []
        self._seen: set[tuple[str, str, str, Decimal, int]] = set()
        self._episodes: dict[tuple[str, str, Decimal], Episode] = {}
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    def subscribe(self, callback: Callable[..., Any], thresholds: Sequence[Decimal]) -> None:
        """Add a callback for the given shares."""
        self._subscriptions.append((callback, sorted(thresholds)))

    def on_settle(self, event: UsageEvent) -> None:
        """Check the event's budgets for crossings."""
        if not self._subscriptions:
            return
        for balance in self.ledger.balances(event.subject, at=event.at):
            limit = balance.budget.limit
            if limit <= 0:
                continue
            share = balance.spent / limit
            episodes = self._rolling_keys(balance, event) if balance.budget.window.rolling else {}
            for index, (callback, thresholds) in enumerate(self._subscriptions):
                for threshold in thresholds:
                    if share < threshold:
                        continue
                    window_key = episodes.get(threshold, balance.window_key)
                    key = (balance.budget.name, balance.subject_id, window_key, threshold, index)
                    with self._lock:
                        if key in self._seen:
                            continue
                        self._seen.add(key)
                    crossing = Crossing(
                        balance.budget.name,
                        balance.budget.scope,
                        balance.subject_id,
                        balance.budget.meter,
                        window_key,
                        threshold,
                        balance.spent,
                        limit,
                        balance.reset_at,
                    )
                    self._call(callback, crossing)

    def _rolling_keys(self, balance: Balance, event: UsageEvent) -> dict[Decimal, str]:
        """The episode key of each subscribed threshold a rolling balance is at or above."""
        thresholds = {t for _, ts in self._subscriptions for t in ts}
        keys: dict[Decimal, str] = {}
        with self._lock:
            for threshold in thresholds:
                name = (balance.budget.name, balance.subject_id, threshold)
                episode = rolling_episode(balance, threshold, event.at, self._episodes.get(name))
                if episode is None:
                    self._episodes.pop(name, None)
                else:
                    self._episodes[name] = episode
                    keys[threshold] = episode.key
        return keys

    def _call(self, callback: Callable[..., Any], crossing: Crossing) -> None:
        try:
            if inspect.iscoroutinefunction(callback):
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    asyncio.run(callback(crossing))
                    return
                task = loop.create_task(callback(crossing))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                callback(crossing)
        except Exception:
            log.exception("threshold callback %r failed", callback)
