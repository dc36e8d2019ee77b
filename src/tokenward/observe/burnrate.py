"""Burn rate per scope: tokens per minute and US dollars per hour, smoothed.

The rate is an *exponentially decayed sum* (the way Unix load averages are made): every charge
adds its amount to an accumulator that decays as ``exp(-dt / tau)``, and the rate is the
accumulator divided by ``tau``. With irregular calls this is the exponentially weighted moving
average of the spend rate over roughly the last ``tau`` (default 10 minutes); a scope that stops
spending decays towards zero. Everything is ``Decimal``, so USD rates stay exact decimals.

:class:`BurnRates` is a guard observer: it tracks every scope value of every settled event
(``user=alice``, ``session=s-1``...), plus ``all``, and answers :meth:`BurnRates.rate` and
:meth:`BurnRates.exhaustion` (when, at this pace, a budget balance runs out inside its window).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from tokenward.clock import utc
from tokenward.core.budgets import SCOPES
from tokenward.core.decide import Balance
from tokenward.core.events import UsageEvent
from tokenward.numbers import plain
from tokenward.observe.forecast import exhaustion_at

__all__ = ["BurnRate", "BurnRates", "DecayedRate"]

ZERO = Decimal(0)


def _seconds(delta: timedelta) -> Decimal:
    return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / 1_000_000


class DecayedRate:
    """An exponentially decayed sum of amounts, read as a rate per second.

    Args:
        tau: the time constant (how far back the rate "remembers"), as a timedelta.
    """

    __slots__ = ("first", "last", "tau", "total")

    def __init__(self, tau: timedelta) -> None:
        self.tau = _seconds(tau)
        if self.tau <= 0:
            raise ValueError("tau must be positive")
        self.total = ZERO
        self.last: datetime | None = None
        self.first: datetime | None = None

    def _decayed(self, at: datetime) -> Decimal:
        if self.last is None:
            return ZERO
        dt = _seconds(at - self.last)
        if dt <= 0:
            return self.total
        return self.total * (-dt / self.tau).exp()

    def add(self, at: datetime, amount: Decimal) -> None:
        """Add ``amount`` spent at ``at`` (an instant earlier than the last one counts as the last)."""
        at = utc(at)
        if self.last is not None and at < self.last:
            at = self.last
        self.total = self._decayed(at) + amount
        self.last = at
        if self.first is None:
            self.first = at

    def per_second(self, at: datetime) -> Decimal:
        """The smoothed rate at ``at``, per second."""
        return self._decayed(utc(at)) / self.tau


@dataclass(frozen=True, slots=True)
class BurnRate:
    """A scope's smoothed spend rate at one instant.

    Attributes:
        scope / subject_id: whom (``user``/``alice``; ``all``/``""`` for everything).
        at: the instant (UTC).
        tokens_per_minute: input plus output tokens per minute.
        usd_per_hour: US dollars per hour (priced calls only).
        requests_per_minute: calls per minute.
    """

    scope: str
    subject_id: str
    at: datetime
    tokens_per_minute: Decimal
    usd_per_hour: Decimal
    requests_per_minute: Decimal

    def per_second(self, meter: str) -> Decimal | None:
        """The rate of a budget meter per second (``total_tokens``, ``cost_usd``, ``requests``);
        None for a meter this tracker does not follow."""
        if meter == "total_tokens":
            return self.tokens_per_minute / 60
        if meter == "cost_usd":
            return self.usd_per_hour / 3600
        if meter == "requests":
            return self.requests_per_minute / 60
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, rates rounded to 6 decimal places."""
        q = Decimal("0.000001")
        return {
            "scope": self.scope,
            "subject_id": self.subject_id,
            "at": utc(self.at).isoformat().replace("+00:00", "Z"),
            "tokens_per_minute": plain(self.tokens_per_minute.quantize(q)),
            "usd_per_hour": plain(self.usd_per_hour.quantize(q)),
            "requests_per_minute": plain(self.requests_per_minute.quantize(q)),
        }


class _Rates:
    __slots__ = ("cost", "requests", "tokens")

    def __init__(self, tau: timedelta) -> None:
        self.tokens = DecayedRate(tau)
        self.cost = DecayedRate(tau)
        self.requests = DecayedRate(tau)


class BurnRates:
    """Smoothed burn rates per scope value, fed from settled usage events (a guard observer).

    Args:
        tau: smoothing time constant (default 10 minutes).
        scopes: which subject scopes to track (default all of them) besides ``all``.
        max_keys: forget the least recently charged scope values beyond this many.
    """

    def __init__(
        self,
        tau: timedelta = timedelta(minutes=10),
        *,
        scopes: Iterable[str] = SCOPES,
        max_keys: int = 100_000,
    ) -> None:
        self.tau = tau
        self.scopes = tuple(scopes)
        self.max_keys = max_keys
        self._rates: dict[tuple[str, str], _Rates] = {}
        self._lock = threading.Lock()

    def on_settle(self, event: UsageEvent) -> None:
        """Guard observer hook: count the event's tokens, cost and one request."""
        self.add(event)

    def add(self, event: UsageEvent) -> None:
        """Count one event in every scope value it belongs to."""
        tokens = Decimal((event.usage.input_tokens or 0) + (event.usage.output_tokens or 0))
        cost = event.cost_usd or ZERO
        keys = [("all", "")] + [(s, v) for s in self.scopes if (v := event.subject.value(s)) is not None]
        with self._lock:
            for key in keys:
                rates = self._rates.pop(key, None) or _Rates(self.tau)
                self._rates[key] = rates  # re-inserted: most recently charged last
                rates.tokens.add(event.at, tokens)
                rates.cost.add(event.at, cost)
                rates.requests.add(event.at, Decimal(1))
            while len(self._rates) > self.max_keys:
                del self._rates[next(iter(self._rates))]

    def rate(self, scope: str, subject_id: str, at: datetime) -> BurnRate:
        """The smoothed rate of one scope value at ``at`` (zeros when it never spent)."""
        with self._lock:
            rates = self._rates.get((scope, subject_id if scope != "all" else ""))
            if rates is None:
                return BurnRate(scope, subject_id, utc(at), ZERO, ZERO, ZERO)
            return BurnRate(
                scope,
                subject_id,
                utc(at),
                rates.tokens.per_second(at) * 60,
                rates.cost.per_second(at) * 3600,
                rates.requests.per_second(at) * 60,
            )

    def exhaustion(self, balance: Balance, at: datetime) -> datetime | None:
        """When ``balance`` runs out at its scope's current burn rate, if before its window resets
        (see :func:`~tokenward.observe.forecast.exhaustion_at`); None for untracked meters."""
        per_second = self.rate(balance.budget.scope, balance.subject_id, at).per_second(balance.budget.meter)
        if per_second is None:
            return None
        return exhaustion_at(balance.remaining, per_second, at, balance.reset_at)

    def top(self, scope: str, at: datetime, n: int = 10, *, by: str = "usd_per_hour") -> list[BurnRate]:
        """The ``n`` fastest-burning values of ``scope`` at ``at``, by ``usd_per_hour`` or
        ``tokens_per_minute``."""
        with self._lock:
            ids = [sid for (s, sid) in self._rates if s == scope]
        rates = [self.rate(scope, sid, at) for sid in ids]
        return sorted(rates, key=lambda r: getattr(r, by), reverse=True)[:n]
