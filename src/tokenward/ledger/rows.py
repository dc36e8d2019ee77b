"""Pure helpers of the ledger logic: balance rows, windows, threshold crossings, stop targets.

A budget instance keeps one balance row per window: ``(budget, subject_id, window_key) ->
(spent, held)``. A calendar window (or none) is one row; a rolling window is one row per bucket,
and its balance is the sum of the rows of its span (:meth:`~tokenward.core.windows.Window.span`).
Backends read and write rows in batches; everything else here is arithmetic on what they read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokenward.core.budgets import METERS, Budget, Subject
from tokenward.core.decide import Balance
from tokenward.core.events import UsageEvent
from tokenward.errors import BudgetError, BudgetExceeded, Stopped, ValidationError
from tokenward.ledger.records import ShadowDenial, StopMarker

__all__ = [
    "ZERO",
    "RowKey",
    "Rows",
    "Snapshot",
    "Span",
    "balance_of",
    "check_amounts",
    "crossed",
    "event_disputed",
    "merge",
    "page",
    "refusing_balance",
    "shadow_denials",
    "span_of",
    "stop_of",
    "stop_targets",
    "stopped_error",
    "stored_budget",
    "subject_matches",
    "window_spent",
]

log = logging.getLogger("tokenward.ledger")

ZERO = Decimal(0)
RowKey = tuple[str, str, str]
"""``(budget, subject_id, window_key)``."""
Span = tuple[str, str, str, str]
"""``(budget, subject_id, first_key, last_key)``: the rows a balance sums, keys inclusive."""
Rows = dict[RowKey, tuple[Decimal, Decimal]]
"""Balance rows as read: ``(spent, held)`` by row key (missing rows are zeros)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What admission needs besides balance rows: every budget, and every stop marker by
    ``(scope, id)``."""

    budgets: list[Budget]
    stops: Mapping[tuple[str, str], StopMarker] = field(default_factory=dict)


_legacy_warned: set[tuple[str, str]] = set()


def stored_budget(data: Mapping[str, Any]) -> Budget:
    """A budget as a ledger stored it (:meth:`Budget.to_dict`).

    A budget on a meter outside :data:`~tokenward.core.budgets.METERS` stored before custom meters
    had to be declared (no ``custom`` key) is read as the custom budget it was accepted as, so an
    older ledger still opens; a warning (once per process) names it, since a mistyped built-in
    meter never charges anything.
    """
    if "custom" not in data and data.get("meter") not in METERS:
        name, meter = str(data.get("name")), str(data.get("meter"))
        if (name, meter) not in _legacy_warned:
            _legacy_warned.add((name, meter))
            log.warning(
                "budget %r counts meter %r, which is not built in (%s) and was stored before custom "
                "meters had to be declared: LLM calls never charge it. If it is a typo, set the budget "
                "again with the right meter; if it is a custom meter, set it again with custom: true",
                name,
                meter,
                ", ".join(METERS),
            )
        data = {**data, "custom": True}
    return Budget.from_dict(data)


def span_of(budget: Budget, subject_id: str, at: datetime) -> Span:
    """The rows the balance of ``budget`` for ``subject_id`` at ``at`` sums."""
    first, last = budget.window.span(at)
    return budget.name, subject_id, first, last


def balance_of(
    budget: Budget, subject_id: str, at: datetime, rows: Mapping[RowKey, tuple[Decimal, Decimal]]
) -> Balance:
    """The balance of one budget instance at ``at`` from the rows read for its span."""
    window = budget.window
    key = window.key(at)
    if not window.rolling:
        spent, held = rows.get((budget.name, subject_id, key), (ZERO, ZERO))
        return Balance(budget, subject_id, key, spent, held, window.reset_at(at))
    first, last = window.span(at)
    spent = held = ZERO
    oldest: str | None = None
    buckets: dict[str, tuple[Decimal, Decimal]] = {}
    for (name, sid, row_key), (row_spent, row_held) in rows.items():
        if name != budget.name or sid != subject_id or not first <= row_key <= last:
            continue
        spent += row_spent
        held += row_held
        if row_spent or row_held:
            bucket_spent, bucket_held = buckets.get(row_key, (ZERO, ZERO))
            buckets[row_key] = (bucket_spent + row_spent, bucket_held + row_held)
        if row_spent and (oldest is None or row_key < oldest):
            oldest = row_key
    drops = tuple((drop, *buckets[k]) for k in sorted(buckets) if (drop := window.drops_at(k)) is not None)
    return Balance(
        budget, subject_id, key, spent, held, None if oldest is None else window.drops_at(oldest), drops
    )


def window_spent(
    budget: Budget, subject_id: str, at: datetime, key: str, rows: Mapping[RowKey, tuple[Decimal, Decimal]]
) -> Decimal:
    """What :func:`balance_of` would give as ``spent``, faster: ``key`` is the window's key at
    ``at`` (for a calendar window, its one row)."""
    if not budget.window.rolling:
        return rows.get((budget.name, subject_id, key), (ZERO, ZERO))[0]
    return balance_of(budget, subject_id, at, rows).spent


def crossed(budget: Budget, before: Decimal, after: Decimal) -> list[Decimal]:
    """The thresholds of ``budget`` that a change of its window's spend from ``before`` to
    ``after`` may have crossed.

    Calendar windows (and none): every threshold the spend is at or above after an increase (the
    caller drops those already recorded for the window, so a limit lowered mid-window still
    records its crossings at the next charge). Rolling windows: only those crossed upwards by
    this change (a rolling window has no end, so each new rise across a threshold is an event).
    """
    limit = budget.limit
    if limit <= 0 or after <= before:
        return []
    if budget.window.rolling:
        return [t for t in budget.thresholds if before < t * limit <= after]
    return [t for t in budget.thresholds if t * limit <= after]


def stop_targets(budget: Budget, subject_id: str, subject: Subject) -> list[tuple[str, str]]:
    """What a ``stop`` budget ends: its own session or task, or else the call's session and task
    (none when the call has neither: the budget then only refuses, as ``deny`` would)."""
    if budget.scope in ("session", "task"):
        return [(budget.scope, subject_id)]
    return [(scope, value) for scope in ("session", "task") if (value := subject.value(scope))]


def stopped_error(marker: StopMarker) -> Stopped:
    """The refusal of a call whose session or task ``marker`` ended."""
    return Stopped(
        stopped_scope=marker.scope,
        stopped_id=marker.subject_id,
        stopped_at=marker.at,
        budget=marker.budget,
        scope=marker.budget_scope,
        subject_id=marker.budget_subject_id,
        meter=marker.meter,
        limit=marker.limit,
        used=marker.used,
        held=ZERO,
        requested=ZERO,
        reset_at=None,
    )


def stop_of(stops: Mapping[tuple[str, str], StopMarker], subject: Subject) -> StopMarker | None:
    """The marker that ended the subject's session or task, if any."""
    for scope in ("session", "task"):
        value = subject.value(scope)
        if value is not None and (scope, value) in stops:
            return stops[(scope, value)]
    return None


def merge(rows: Rows, changes: Iterable[tuple[RowKey, Decimal, Decimal]]) -> Rows:
    """New absolute values of the rows changed by ``(key, spent delta, held delta)``, starting
    from ``rows`` (as read in the same transaction)."""
    out: Rows = {}
    for key, spent, held in changes:
        old_spent, old_held = out.get(key) or rows.get(key) or (ZERO, ZERO)
        out[key] = (old_spent + spent, old_held + held)
    return out


def subject_matches(subject: Subject, wanted: Subject | None) -> bool:
    """Whether every scope and tag set in ``wanted`` (and its model, when it names one) has the same
    value in ``subject``."""
    if wanted is None:
        return True
    for scope, value in wanted.to_dict().items():
        if scope == "tags":
            tags = dict(subject.tags)
            if any(tags.get(k) != v for k, v in value.items()):
                return False
        elif scope == "model":
            if subject.model != value:
                return False
        elif subject.value(scope) != value:
            return False
    return True


def check_amounts(amounts: Mapping[str, Decimal], what: str) -> None:
    """Refuse amounts that would corrupt balances: a negative hold would lift a hard cap.

    Raises:
        ValidationError: an amount that is not a finite, non-negative Decimal (or int).
    """
    for meter, amount in amounts.items():
        if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
            raise ValidationError(f"{what}: {meter} must be a Decimal, got {amount!r}", field=meter)
        if (isinstance(amount, Decimal) and not amount.is_finite()) or amount < 0:
            raise ValidationError(
                f"{what}: {meter} must be finite and non-negative, got {amount}", field=meter
            )


_MAX_ID = 2**63 - 1  # the largest integer a store column holds


def page(after: int | None, limit: int | None) -> tuple[int | None, int | None]:
    """``after`` and ``limit`` of a query, made safe for any store: an ``after`` below 1 means
    from the start, one beyond any stored id means nothing; a ``limit`` beyond any count means
    all.

    Raises:
        ValidationError: a negative limit, or values that are not whole numbers.
    """
    for name, value in (("after", after), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValidationError(f"{name} must be a whole number, got {value!r}", field=name)
    if limit is not None and limit < 0:
        raise ValidationError(f"limit must not be negative, got {limit}", field="limit")
    if after is not None:
        after = None if after < 1 else min(after, _MAX_ID)
    return after, None if limit is None else min(limit, _MAX_ID)


def shadow_denials(
    shadow: Sequence[BudgetExceeded],
    balances: Sequence[Balance],
    subject: Subject,
    now: datetime,
    request_id: str | None,
    reservation_id: str | None,
) -> list[ShadowDenial]:
    """The records of the shadow budgets an admission would have been refused by (ids 0: the
    store numbers them), each in the window its balance was read in."""
    keys = {(b.budget.name, b.subject_id): b.window_key for b in balances}
    return [
        ShadowDenial(
            id=0,
            at=now,
            budget=e.budget,
            scope=e.scope,
            subject_id=e.subject_id,
            meter=e.meter,
            window_key=keys.get((e.budget, e.subject_id or ""), ""),
            limit=e.limit,
            used=e.used,
            held=e.held,
            requested=e.requested,
            reset_at=e.reset_at,
            request_id=request_id,
            reservation_id=reservation_id,
            subject=subject,
        )
        for e in shadow
    ]


def refusing_balance(denial: BudgetError, balances: Sequence[Balance]) -> Balance | None:
    """The balance of the hard budget that refused a call (a ``stop`` budget ends the session
    or task it belongs to), or None when the denial is not such a refusal (an unpriced call, or
    the refusal of a call whose work was already stopped)."""
    if not isinstance(denial, BudgetExceeded) or isinstance(denial, Stopped):
        return None
    return next(
        (b for b in balances if b.budget.name == denial.budget and b.subject_id == denial.subject_id), None
    )


def event_disputed(event: UsageEvent) -> bool | None:
    """The disputed flag a store keeps beside an event (its own column): the event's
    ``disputed`` attribute, else ``metadata.disputed``; None when neither says (events written
    before the column existed keep it in their metadata only)."""
    flag = getattr(event, "disputed", None)
    if flag is None:
        flag = event.metadata.get("disputed")
    return flag if isinstance(flag, bool) else None
