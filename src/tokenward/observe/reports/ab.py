"""Variants compared under equal budgets (A/B by tag, model, or any dimension).

Sessions are split into *arms* by a dimension (``tag:variant``, ``model``, ``agent``...; a
session belongs to the arm of its first call). Per arm: sessions, outcomes, tokens and exact
cost, cost per session (mean and median) and per resolved task.

*Under equal budgets*: give :func:`ab_test` a per-session budget (``meter``, ``limit``) and every
arm is replayed against that same budget, in each session's call order, the way a hard budget
would have cut it (the first call that no longer fits ends the session: that call and the rest
are not paid, and a session cut before it finished counts as not resolved). This compares the
variants at the same spending power, which raw averages do not when one arm simply spends more.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tokenward.errors import ConfigError
from tokenward.observe.reports.chargeback import dimension
from tokenward.observe.reports.output import Table
from tokenward.observe.rows import Row

__all__ = ["ABArm", "ab_table", "ab_test"]

ZERO = Decimal(0)
_METERS = ("total_tokens", "input_tokens", "output_tokens", "cost_usd", "requests")


def _amount(row: Row, meter: str) -> Decimal | None:
    if meter == "requests":
        return Decimal(1)
    if meter == "cost_usd":
        return row.cost_usd
    if meter == "total_tokens":
        total = row.total_tokens
        return None if total is None else Decimal(total)
    value = getattr(row, meter)
    return None if value is None else Decimal(value)


@dataclass
class _Session:
    arm: str | None
    cost: Decimal = ZERO
    tokens: int = 0
    calls: int = 0
    resolved: bool | None = None
    used: Decimal = ZERO
    cut_at: int | None = None
    cost_kept: Decimal = ZERO


@dataclass
class ABArm:
    """One arm's figures.

    Attributes:
        arm: the dimension value (None: calls without it).
        sessions / calls / resolved / unresolved / unknown: counts.
        total_tokens / cost_usd: sums (exact USD).
        session_costs: every session's cost (for the median).
        under_budget: with an equal budget, the same figures as the budget would have left them
            (``sessions_cut``, ``cost_usd``, ``resolved``, ``saved_usd``).
    """

    arm: str | None
    sessions: int = 0
    calls: int = 0
    resolved: int = 0
    unresolved: int = 0
    unknown: int = 0
    total_tokens: int = 0
    cost_usd: Decimal = ZERO
    session_costs: list[Decimal] = field(default_factory=list)
    under_budget: dict[str, Any] = field(default_factory=dict)

    @property
    def resolve_rate(self) -> Decimal | None:
        """Resolved over sessions with a known outcome."""
        known = self.resolved + self.unresolved
        return None if known == 0 else (Decimal(self.resolved) / known).quantize(Decimal("0.0001"))

    @property
    def mean_cost_usd(self) -> Decimal | None:
        """Mean cost per session."""
        return None if not self.sessions else (self.cost_usd / self.sessions).quantize(Decimal("0.000001"))

    @property
    def median_cost_usd(self) -> Decimal | None:
        """Median cost per session."""
        return (
            None
            if not self.session_costs
            else Decimal(statistics.median(self.session_costs)).quantize(Decimal("0.000001"))
        )

    @property
    def cost_per_resolved_usd(self) -> Decimal | None:
        """All cost over resolved sessions."""
        return None if not self.resolved else (self.cost_usd / self.resolved).quantize(Decimal("0.000001"))


def ab_test(
    rows: Iterable[Row], arm_by: str, *, meter: str | None = None, limit: Decimal | None = None
) -> list[ABArm]:
    """Compare arms of ``arm_by``, optionally under the same per-session budget.

    Args:
        rows: usage rows in time order (calls without a session are ignored).
        arm_by: the dimension naming the arm (``tag:variant``, ``model``...).
        meter / limit: a per-session budget applied to every arm (``cost_usd``, ``total_tokens``,
            ``input_tokens``, ``output_tokens`` or ``requests``; limit in the meter's unit).

    Raises:
        ConfigError: an unknown dimension or meter, or only one of ``meter``/``limit``.
    """
    if (meter is None) != (limit is None):
        raise ConfigError("an equal budget needs both a meter and a limit")
    if meter is not None and meter not in _METERS:
        raise ConfigError(f"unknown meter {meter!r} for an A/B budget; use one of {', '.join(_METERS)}")
    key = dimension(arm_by)
    sessions: dict[str, _Session] = {}
    for row in rows:
        if row.session is None:
            continue
        s = sessions.get(row.session)
        if s is None:
            s = sessions[row.session] = _Session(key(row))
        s.calls += 1
        s.cost += row.cost_usd or ZERO
        s.tokens += row.total_tokens or 0
        if row.resolved is not None:
            s.resolved = row.resolved
        if meter is not None and limit is not None and s.cut_at is None:
            amount = _amount(row, meter) or ZERO
            if s.used + amount > limit:
                s.cut_at = s.calls
            else:
                s.used += amount
                s.cost_kept += row.cost_usd or ZERO
    arms: dict[str | None, ABArm] = {}
    for s in sessions.values():
        a = arms.get(s.arm) or arms.setdefault(s.arm, ABArm(s.arm))
        a.sessions += 1
        a.calls += s.calls
        a.total_tokens += s.tokens
        a.cost_usd += s.cost
        a.session_costs.append(s.cost)
        a.resolved += s.resolved is True
        a.unresolved += s.resolved is False
        a.unknown += s.resolved is None
        if meter is not None:
            if not a.under_budget:
                a.under_budget.update(
                    {
                        "meter": meter,
                        "limit": limit,
                        "sessions_cut": 0,
                        "cost_usd": ZERO,
                        "saved_usd": ZERO,
                        "resolved": 0,
                    }
                )
            ub = a.under_budget
            ub["sessions_cut"] += s.cut_at is not None
            ub["cost_usd"] += s.cost_kept
            ub["saved_usd"] += s.cost - s.cost_kept
            ub["resolved"] += s.resolved is True and s.cut_at is None
    for a in arms.values():
        if a.under_budget:
            resolved = a.under_budget["resolved"]
            a.under_budget["cost_per_resolved_usd"] = (
                (a.under_budget["cost_usd"] / resolved).quantize(Decimal("0.000001")) if resolved else None
            )
    return sorted(arms.values(), key=lambda a: (a.arm is None, str(a.arm)))


def ab_table(arms: list[ABArm], arm_by: str) -> Table:
    """As a table; with an equal budget, its columns come after the raw ones."""
    budgeted = any(a.under_budget for a in arms)
    columns = [
        arm_by,
        "sessions",
        "calls",
        "resolved",
        "unresolved",
        "unknown",
        "resolve_rate",
        "total_tokens",
        "cost_usd",
        "mean_cost_usd",
        "median_cost_usd",
        "cost_per_resolved_usd",
    ]
    if budgeted:
        columns += [
            "budget_sessions_cut",
            "budget_cost_usd",
            "budget_saved_usd",
            "budget_resolved",
            "budget_cost_per_resolved_usd",
        ]
    rows = []
    for a in arms:
        line: list[Any] = [
            a.arm,
            a.sessions,
            a.calls,
            a.resolved,
            a.unresolved,
            a.unknown,
            a.resolve_rate,
            a.total_tokens,
            a.cost_usd,
            a.mean_cost_usd,
            a.median_cost_usd,
            a.cost_per_resolved_usd,
        ]
        if budgeted:
            ub = a.under_budget
            line += [
                ub.get("sessions_cut"),
                ub.get("cost_usd"),
                ub.get("saved_usd"),
                ub.get("resolved"),
                ub.get("cost_per_resolved_usd"),
            ]
        rows.append(tuple(line))
    notes = []
    if budgeted:
        ub = next(a.under_budget for a in arms if a.under_budget)
        notes.append(
            f"budget_*: every arm replayed under the same per-session budget {ub['meter']} <= {ub['limit']}; "
            "a session cut before its end counts as not resolved"
        )
    return Table(f"A/B by {arm_by}", columns, rows, notes)
