"""Threshold episodes of rolling windows: an alert once per rise above a threshold.

A calendar window has a key of its own (its start), so "once per budget, window and threshold"
is a key. A rolling window has no end: its key (the current bucket) changes every bucket, and
spend above a threshold may stay there for many buckets, or fall back below and rise again. An
*episode* is one stretch of a rolling budget instance's spend at or above a threshold: it begins
when the spend is seen at or above it, and ends once the spend has fallen back below it. Alerts
and threshold callbacks fire once per episode, keyed by the bucket where it began.

The spend falls below the threshold either when that is seen, or, between two observations, at
the instant the older buckets' spend stops counting (:attr:`~tokenward.core.decide.Balance.drops`):
a watcher that observes every settled call therefore knows whether the spend it sees now has
stayed above since it last looked. Pure functions over a small frozen value; the caller keeps one
:class:`Episode` per budget instance and threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from tokenward.core.decide import Balance

__all__ = ["Episode", "rolling_episode"]


@dataclass(frozen=True, slots=True)
class Episode:
    """A rolling budget instance's spend at or above one threshold.

    Attributes:
        key: the window key (bucket) where the episode began: its identity.
        below_at: when the spend last seen falls back below the threshold if nothing more is
            charged (UTC), or None when it cannot be told (then only a fall seen ends it).
    """

    key: str
    below_at: datetime | None


def rolling_episode(
    balance: Balance, threshold: Decimal, at: datetime, previous: Episode | None
) -> Episode | None:
    """The episode ``balance`` (of a rolling window, seen at ``at``) is in for ``threshold``.

    Args:
        balance: the budget instance's balance at ``at``.
        threshold: a share of the limit (``0.5``).
        at: when the balance was seen.
        previous: the episode seen last time for this instance and threshold, or None.

    Returns:
        None when the spend is below the threshold (no episode); ``previous`` continued when the
        spend cannot have fallen below since it was seen; else a new episode keyed by the current
        bucket. A new episode is what an alert is raised for.
    """
    mark = threshold * balance.budget.limit
    if balance.spent < mark:
        return None
    below = _below_at(balance, mark)
    if previous is not None and (previous.below_at is None or at < previous.below_at):
        return Episode(previous.key, below)
    return Episode(balance.window_key, below)


def _below_at(balance: Balance, mark: Decimal) -> datetime | None:
    """When the spend falls below ``mark`` as its buckets stop counting."""
    left = balance.spent
    for at, spent, _held in balance.drops:
        left -= spent
        if left < mark:
            return at
    return None
