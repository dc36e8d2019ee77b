"""Alerts: what is worth telling someone about a budget, decided from its balance.

An :class:`Alert` is a value: its :attr:`~Alert.id` is derived from its *deduplication key*
(kind, budget, subject, window, threshold), so the same crossing always yields the same id, and the
outbox (:mod:`tokenward.observe.outbox`) stores it once. Each alert is therefore raised once per
budget, window and threshold, however many processes see the crossing.

Kinds:

* ``threshold``: a budget's spend reached a fraction of its limit (default 50% and 80%);
* ``exhausted``: spend reached the limit (100%), or a hard budget refused a call;
* ``forecast``: the linear projection over the budget's own window crosses the limit before the
  window ends (:func:`tokenward.observe.forecast.forecast_window`);
* ``anomaly``: a detector in :mod:`tokenward.observe.anomalies` flagged a session;
* ``disputed``: a provider reported less usage than tokenward counted passing through, and the
  call was charged tokenward's count (:mod:`tokenward.core.floor`); raised per call, when asked
  for (``Alerts(on_disputed=True)``, gateway ``observe.alerts.on_disputed: true``).

The pure function :func:`threshold_alerts` decides which alerts a balance calls for; the
:class:`~tokenward.observe.watch.AlertWatcher` calls it after every settled call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from tokenward.clock import utc
from tokenward.core.decide import Balance
from tokenward.core.events import UsageEvent
from tokenward.errors import ConfigError
from tokenward.numbers import plain

__all__ = [
    "DEFAULT_THRESHOLDS",
    "Alert",
    "AlertKind",
    "disputed_alert",
    "exhaustion_alert",
    "parse_thresholds",
    "threshold_alerts",
]

AlertKind = Literal["threshold", "exhausted", "forecast", "anomaly", "disputed"]

DEFAULT_THRESHOLDS: tuple[Decimal, ...] = (Decimal("0.5"), Decimal("0.8"), Decimal("1"))
"""Fractions of a budget's limit that raise an alert: 50%, 80% and 100% (exhaustion)."""

PAUSE_PREFIX = "tokenward.pause:"
STOP_PREFIX = "tokenward.stop:"


def _iso(at: datetime | None) -> str | None:
    return None if at is None else utc(at).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert about one budget instance (or one session, for anomalies).

    Attributes:
        kind: ``threshold``, ``exhausted``, ``forecast`` or ``anomaly``.
        budget: the budget's name (for anomalies: the detector's name, e.g. ``loop``).
        scope / subject_id: the budget's scope and the scope value charged (``session``, ``s-1``).
        window_key: the window's key (its UTC start, ``""`` for no window).
        at: when the condition was seen (UTC).
        meter: what the budget counts (``total_tokens``, ``cost_usd``...), or None.
        threshold: the fraction of the limit crossed (``0.8``), or None.
        limit / spent / held: in the meter's unit (tokens, USD, calls), exact.
        reset_at: when the window ends (UTC), or None.
        message: one human-readable line.
        details: extra JSON-ready facts (a forecast's projection, a detector's evidence).
    """

    kind: AlertKind
    budget: str
    scope: str
    subject_id: str
    window_key: str
    at: datetime
    meter: str | None = None
    threshold: Decimal | None = None
    limit: Decimal | None = None
    spent: Decimal | None = None
    held: Decimal | None = None
    reset_at: datetime | None = None
    message: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def dedup_key(self) -> str:
        """``kind|budget|scope=subject|window|threshold``: equal for the same crossing, anywhere."""
        threshold = "" if self.threshold is None else plain(self.threshold)
        return f"{self.kind}|{self.budget}|{self.scope}={self.subject_id}|{self.window_key}|{threshold}"

    @property
    def id(self) -> str:
        """A stable id derived from :attr:`dedup_key` (``alrt_`` + 24 hex digits); it is also the
        ``webhook-id`` of every delivery of this alert, so receivers can drop repeats."""
        return "alrt_" + hashlib.sha256(self.dedup_key.encode()).hexdigest()[:24]

    @property
    def utilisation(self) -> Decimal | None:
        """``spent / limit`` (1 = exhausted), or None when the limit is unknown or zero."""
        if self.limit is None or self.spent is None or self.limit == 0:
            return None
        return self.spent / self.limit

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: amounts as decimal strings, instants as ISO 8601 UTC with ``Z``."""
        utilisation = self.utilisation
        return {
            "id": self.id,
            "type": _TYPES.get(self.kind, f"budget.{self.kind}"),
            "kind": self.kind,
            "budget": self.budget,
            "scope": self.scope,
            "subject_id": self.subject_id,
            "window_key": self.window_key,
            "at": _iso(self.at),
            "meter": self.meter,
            "threshold": None if self.threshold is None else plain(self.threshold),
            "limit": None if self.limit is None else plain(self.limit),
            "spent": None if self.spent is None else plain(self.spent),
            "held": None if self.held is None else plain(self.held),
            "utilisation": None if utilisation is None else plain(round(utilisation, 6)),
            "reset_at": _iso(self.reset_at),
            "message": self.message,
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        """Inverse of :meth:`to_dict` (``id``, ``type`` and ``utilisation`` are derived)."""

        def dec(name: str) -> Decimal | None:
            value = data.get(name)
            return None if value is None else Decimal(str(value))

        def when(name: str) -> datetime | None:
            value = data.get(name)
            return None if value is None else datetime.fromisoformat(str(value).replace("Z", "+00:00"))

        at = when("at")
        if at is None:
            raise ValueError("an alert needs 'at'")
        return cls(
            kind=data["kind"],
            budget=str(data["budget"]),
            scope=str(data["scope"]),
            subject_id=str(data["subject_id"]),
            window_key=str(data.get("window_key") or ""),
            at=at,
            meter=data.get("meter"),
            threshold=dec("threshold"),
            limit=dec("limit"),
            spent=dec("spent"),
            held=dec("held"),
            reset_at=when("reset_at"),
            message=str(data.get("message") or ""),
            details=dict(data.get("details") or {}),
        )


_TYPES = {"anomaly": "session.anomaly", "disputed": "usage.disputed"}


def disputed_alert(event: UsageEvent) -> Alert:
    """The ``disputed`` alert of a settled call whose provider reported less than tokenward
    counted (one per call: its request id is the subject)."""
    upstream = event.metadata.get("upstream")
    where = f" from upstream {upstream!r}" if upstream else ""
    return Alert(
        kind="disputed",
        budget="",
        scope="request",
        subject_id=event.request_id,
        window_key="",
        at=event.at,
        message=(
            f"call {event.request_id} ({event.model}{where}) reported less usage than tokenward counted "
            f"passing through; charged tokenward's count: {event.metadata.get('disputed')}"
        ),
        details={
            "disputed": event.metadata.get("disputed"),
            "model": event.model,
            "provider": event.provider,
            "upstream": upstream,
            "subject": event.subject.to_dict(),
        },
    )


def parse_thresholds(values: Iterable[Any]) -> tuple[Decimal, ...]:
    """Thresholds from config: fractions (``0.8``) or percentages (``"80%"``), sorted, unique.

    Raises:
        ConfigError: a value that is not a number in (0, 1] (or (0%, 100%]).
    """
    out = set()
    for value in values:
        text = str(value).strip()
        try:
            number = Decimal(text[:-1]) / 100 if text.endswith("%") else Decimal(text)
        except ArithmeticError:
            raise ConfigError(f"alert threshold {value!r} is not a number (use 0.8 or '80%')") from None
        if not number.is_finite() or not 0 < number <= 1:
            raise ConfigError(f"alert threshold {value!r} must be above 0 and at most 1 (100%)")
        out.add(number)
    return tuple(sorted(out))


def _is_control(budget_name: str) -> bool:
    """Budgets tokenward itself puts in place to pause or stop a session raise no alerts."""
    return budget_name.startswith((PAUSE_PREFIX, STOP_PREFIX))


def threshold_alerts(
    balances: Iterable[Balance], at: datetime, thresholds: Sequence[Decimal] = DEFAULT_THRESHOLDS
) -> list[Alert]:
    """The alerts a set of balances calls for at ``at``: one per threshold each balance has
    reached (``spent >= threshold * limit``). A threshold of 1 is reported as ``exhausted``.

    The caller drops the ones already raised (the outbox does, by :attr:`Alert.dedup_key`); this
    function has no memory, so a later call returns the same alerts again.

    Budgets with a limit of 0 (nothing to measure against) and tokenward's own pause/stop budgets
    are skipped. Held amounts do not count: a threshold is about money or tokens actually spent.
    """
    out: list[Alert] = []
    at = utc(at)
    for balance in balances:
        budget = balance.budget
        if budget.limit <= 0 or _is_control(budget.name):
            continue
        for threshold in thresholds:
            if balance.spent < threshold * budget.limit:
                break
            kind: AlertKind = "exhausted" if threshold >= 1 else "threshold"
            percent = plain(threshold * 100)
            who = f"{budget.scope} {balance.subject_id!r}"
            message = (
                f"budget {budget.name!r} ({who}, {budget.meter}) is exhausted: spent {plain(balance.spent)} "
                f"of {plain(budget.limit)}"
                if kind == "exhausted"
                else f"budget {budget.name!r} ({who}, {budget.meter}) reached {percent}%: spent "
                f"{plain(balance.spent)} of {plain(budget.limit)}"
            )
            out.append(
                Alert(
                    kind=kind,
                    budget=budget.name,
                    scope=budget.scope,
                    subject_id=balance.subject_id,
                    window_key=balance.window_key,
                    at=at,
                    meter=budget.meter,
                    threshold=threshold,
                    limit=budget.limit,
                    spent=balance.spent,
                    held=balance.held,
                    reset_at=balance.reset_at,
                    message=message,
                    details={"mode": budget.mode, "window": str(budget.window)},
                )
            )
    return out


def exhaustion_alert(
    *,
    budget: str,
    scope: str,
    subject_id: str | None,
    meter: str,
    limit: Decimal,
    used: Decimal,
    held: Decimal,
    requested: Decimal,
    reset_at: datetime | None,
    window_key: str,
    at: datetime,
) -> Alert | None:
    """The ``exhausted`` alert for a refused call (fields as in
    :class:`~tokenward.errors.BudgetExceeded`), or None for tokenward's own pause/stop budgets.

    It shares its deduplication key with the 100% threshold alert of the same budget window, so a
    budget that is refused and then reaches its limit raises one exhaustion alert, not two.
    """
    if _is_control(budget):
        return None
    who = f"{scope} {subject_id!r}" if subject_id is not None else scope
    return Alert(
        kind="exhausted",
        budget=budget,
        scope=scope,
        subject_id=subject_id or "",
        window_key=window_key,
        at=utc(at),
        meter=meter,
        threshold=Decimal(1),
        limit=limit,
        spent=used,
        held=held,
        reset_at=reset_at,
        message=(
            f"budget {budget!r} ({who}, {meter}) refused a call: limit {plain(limit)}, used {plain(used)}, "
            f"held {plain(held)}, the call needed {plain(requested)}"
        ),
        details={"refused": True, "requested": plain(requested)},
    )
