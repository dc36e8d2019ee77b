"""Where a budget's spend is heading: projections over the budget's *own* window.

:func:`forecast_window` projects the spend of the current window to its end, linearly over the
elapsed part of that window (the rate so far is ``spent / elapsed``), and names the instant the
projection crosses the limit, but only when that instant lies inside the window: a daily budget
is never projected to the end of the month (case C45). A window that never resets has no period
to forecast (None).

:func:`exhaustion_at` answers the same question from a measured burn rate instead (see
:mod:`tokenward.observe.burnrate`): at the current pace, when does ``remaining`` run out, again
only if that happens before the window resets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from tokenward.clock import utc
from tokenward.core.budgets import Budget
from tokenward.numbers import plain

__all__ = ["Forecast", "exhaustion_at", "forecast_window"]

_MICRO = Decimal("0.000001")


def _iso(at: datetime | None) -> str | None:
    return None if at is None else utc(at).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Forecast:
    """A projection of one budget instance over its current window.

    Attributes:
        budget: the budget's name.
        now: the instant the projection was made at (UTC).
        window_start / window_end: the current window (UTC); ``window_end`` is the projection's
            horizon.
        spent: spend so far in the window, in the meter's unit.
        limit: the budget's limit.
        projected_spend: the spend the window ends with at the current pace.
        projected_cross_at: when the projection reaches the limit, if inside the window; None when
            it does not (or when the limit is already reached).
        exhausted: the limit is already reached.
    """

    budget: str
    now: datetime
    window_start: datetime
    window_end: datetime
    spent: Decimal
    limit: Decimal
    projected_spend: Decimal
    projected_cross_at: datetime | None
    exhausted: bool = False

    @property
    def alert(self) -> bool:
        """Whether the projection calls for an alert: the window ends at or over the limit."""
        return self.limit > 0 and (self.exhausted or self.projected_spend >= self.limit)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (amounts as decimal strings, instants ISO 8601 UTC)."""
        return {
            "budget": self.budget,
            "now": _iso(self.now),
            "window_start": _iso(self.window_start),
            "projection_horizon_end": _iso(self.window_end),
            "spent": plain(self.spent),
            "limit": plain(self.limit),
            "projected_window_spend": plain(self.projected_spend),
            "projected_cross_at": _iso(self.projected_cross_at),
            "exhausted": self.exhausted,
            "alert": self.alert,
        }


def _seconds(delta: timedelta) -> Decimal:
    return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / 1_000_000


def forecast_window(budget: Budget, spent: Decimal, now: datetime) -> Forecast | None:
    """Project ``spent`` linearly to the end of ``budget``'s window containing ``now``.

    Args:
        budget: the budget (its window decides the horizon).
        spent: spend so far in the current window, in the meter's unit.
        now: the instant of the projection.

    Returns:
        The forecast, or None when the budget's window never resets. The projected spend is
        ``spent * window_length / elapsed``; the crossing is ``window_start + elapsed * limit /
        spent`` when that falls inside the window (rounded to the microsecond).
    """
    now = utc(now)
    start, end = budget.window.start(now), budget.window.reset_at(now)
    if start is None or end is None:
        return None
    elapsed, length = _seconds(now - start), _seconds(end - start)
    limit = budget.limit
    if spent >= limit and limit > 0:
        projected = spent if elapsed <= 0 else spent * length / elapsed
        return Forecast(budget.name, now, start, end, spent, limit, projected, None, exhausted=True)
    if elapsed <= 0 or spent <= 0:
        return Forecast(budget.name, now, start, end, spent, limit, spent, None)
    projected = spent * length / elapsed
    cross: datetime | None = None
    if limit > 0 and projected >= limit:
        offset = (elapsed * limit / spent).quantize(_MICRO)
        candidate = start + timedelta(seconds=float(offset))
        cross = candidate if candidate <= end else None
    return Forecast(budget.name, now, start, end, spent, limit, projected, cross)


def exhaustion_at(
    remaining: Decimal, rate_per_second: Decimal, now: datetime, reset_at: datetime | None
) -> datetime | None:
    """When ``remaining`` runs out at ``rate_per_second``; None when the rate is zero, when
    nothing remains to run out (already exhausted: ``now``), or when it would happen only after
    the window resets at ``reset_at``.
    """
    now = utc(now)
    if remaining <= 0:
        return now
    if rate_per_second <= 0:
        return None
    at = now + timedelta(seconds=float(remaining / rate_per_second))
    if reset_at is not None and at >= utc(reset_at):
        return None
    return at
