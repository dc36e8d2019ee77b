"""Replaying recorded calls through the guard and a ledger, as if budgets had been on.

Calls are fed in timestamp order across sessions (the ledger's clock follows the recording, so
calendar windows fall where they fell). Each call's usage is normalised from the provider's raw
usage and priced from its tokens; the recorded cost is only compared against. A call is admitted
when its actual charge still fits every budget (:meth:`Guard.charge`); the first call that does
not fit is the session's cut, and what the cut saves is the cost of that call and of every later
call of the session, which are then not charged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tokenward.clock import ManualClock
from tokenward.core.accounting import account
from tokenward.core.budgets import Budget, Subject
from tokenward.core.dialects import usage_from
from tokenward.core.events import UsageEvent
from tokenward.core.pricebook import PriceBook, PriceContext
from tokenward.core.pricing import Cost
from tokenward.core.usage import Usage
from tokenward.errors import BudgetExceeded, ValidationError
from tokenward.guard import Guard
from tokenward.ledger import Ledger, open_ledger
from tokenward.numbers import plain
from tokenward.replay.traces import TraceCall

__all__ = ["CallResult", "Cut", "ReplayReport", "SessionReport", "replay"]

ZERO = Decimal(0)
_TOKEN_FIELDS = (
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)


@dataclass(frozen=True, slots=True)
class Cut:
    """Where a budget would have stopped a session.

    Attributes:
        budget: the budget that denied.
        step: the step of the first call that did not fit.
        saved_cost_usd: the cost of that call and of every later call of the session (USD).
    """

    budget: str
    step: int
    saved_cost_usd: Decimal


@dataclass(frozen=True, slots=True)
class CallResult:
    """One replayed call: its normalised usage, its cost, and whether it was admitted."""

    call: TraceCall
    usage: Usage | None
    cost: Cost
    admitted: bool
    error: str | None = None


@dataclass
class SessionReport:
    """A session's totals over all its recorded calls (tokens; USD), and its cut if any."""

    session_id: str
    task_id: str | None = None
    resolved: bool | None = None
    calls: int = 0
    admitted_calls: int = 0
    unpriced_calls: int = 0
    invalid_calls: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_TOKEN_FIELDS, 0))
    cost_usd: Decimal = ZERO
    recorded_cost_usd: Decimal | None = None
    cut: Cut | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``tokenward replay --json`` (money as decimal strings)."""
        return {
            "session_id": self.session_id,
            "task_id": self.task_id,
            "resolved": self.resolved,
            "calls": self.calls,
            "admitted_calls": self.admitted_calls,
            **self.tokens,
            "cost_usd": plain(self.cost_usd),
            "recorded_cost_usd": None if self.recorded_cost_usd is None else plain(self.recorded_cost_usd),
            "unpriced_calls": self.unpriced_calls,
            "invalid_calls": self.invalid_calls,
            "cuts": []
            if self.cut is None
            else [
                {
                    "budget": self.cut.budget,
                    "step": self.cut.step,
                    "saved_cost_usd": plain(self.cut.saved_cost_usd),
                }
            ],
        }


@dataclass
class ReplayReport:
    """The outcome of a replay: per session, and per call when asked for."""

    sessions: dict[str, SessionReport]
    budgets: tuple[Budget, ...]
    calls: list[CallResult] = field(default_factory=list)
    comparison: dict[str, dict[str, Any]] = field(default_factory=dict)

    def totals(self) -> dict[str, Any]:
        """Sums over sessions, the sessions cut (and how many of those resolved their task), what
        the cuts save, and our cost against the recorded one per recorded-cost kind."""
        sessions = list(self.sessions.values())
        cut = [s for s in sessions if s.cut is not None]
        tokens = {name: sum(s.tokens[name] for s in sessions) for name in _TOKEN_FIELDS}
        recorded = [s.recorded_cost_usd for s in sessions if s.recorded_cost_usd is not None]
        return {
            "sessions": len(sessions),
            "calls": sum(s.calls for s in sessions),
            "admitted_calls": sum(s.admitted_calls for s in sessions),
            **tokens,
            "cost_usd": plain(sum((s.cost_usd for s in sessions), ZERO)),
            "recorded_cost_usd": plain(sum(recorded, ZERO)) if recorded else None,
            "unpriced_calls": sum(s.unpriced_calls for s in sessions),
            "invalid_calls": sum(s.invalid_calls for s in sessions),
            "sessions_cut": len(cut),
            "sessions_cut_resolved": sum(1 for s in cut if s.resolved is True),
            "sessions_cut_unresolved": sum(1 for s in cut if s.resolved is False),
            "saved_cost_usd": plain(sum((s.cut.saved_cost_usd for s in cut if s.cut), ZERO)),
            "recorded_comparison": {
                kind: {
                    **stats,
                    "cost_usd": plain(stats["cost_usd"]),
                    "recorded_cost_usd": plain(stats["recorded_cost_usd"]),
                    "max_abs_diff_usd": plain(stats["max_abs_diff_usd"]),
                }
                for kind, stats in sorted(self.comparison.items())
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """``{"sessions": [...], "totals": {...}, "budgets": [...]}``."""
        return {
            "sessions": [self.sessions[k].to_dict() for k in sorted(self.sessions)],
            "totals": self.totals(),
            "budgets": [b.to_dict() for b in self.budgets],
        }


def _compare(report: ReplayReport, call: TraceCall, cost: Cost) -> None:
    if call.recorded_cost_usd is None or cost.total_usd is None:
        return
    stats = report.comparison.setdefault(
        call.recorded_cost_kind or "unknown",
        {
            "calls": 0,
            "cost_usd": ZERO,
            "recorded_cost_usd": ZERO,
            "max_abs_diff_usd": ZERO,
            "calls_over_1pct": 0,
        },
    )
    diff = abs(cost.total_usd - call.recorded_cost_usd)
    stats["calls"] += 1
    stats["cost_usd"] += cost.total_usd
    stats["recorded_cost_usd"] += call.recorded_cost_usd
    stats["max_abs_diff_usd"] = max(stats["max_abs_diff_usd"], diff)
    if diff > abs(call.recorded_cost_usd) / 100:
        stats["calls_over_1pct"] += 1


def replay(
    calls: Iterable[TraceCall],
    budgets: Iterable[Budget] = (),
    *,
    ledger: Ledger | str | None = None,
    prices: PriceBook | None = None,
    keep_calls: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Replay recorded calls through a guard and a ledger.

    Args:
        calls: the recorded calls (any order; they are replayed by timestamp).
        budgets: budgets to enforce (written to the ledger first).
        ledger: a ledger or URL (default ``memory://``); its clock must be a :class:`ManualClock`
            when a ledger object is passed.
        prices: the price book (default: the pinned genai-prices table).
        keep_calls: keep a :class:`CallResult` per call in the report.
        progress: called with the number of calls done so far, now and then.

    Returns:
        The report.
    """
    clock = ManualClock()
    store = (
        open_ledger(ledger or "memory://", clock=clock)
        if ledger is None or isinstance(ledger, str)
        else ledger
    )
    if not isinstance(store.clock, ManualClock):
        raise ValueError("replay needs a ledger driven by a ManualClock")
    clock = store.clock
    budgets = tuple(budgets)
    for budget in budgets:
        store.put_budget(budget)
    guard = Guard(store, prices=prices)
    report = ReplayReport({}, budgets)
    ordered = sorted(calls, key=lambda c: (c.at, c.session_id, c.step))
    for done, call in enumerate(ordered, start=1):
        session = report.sessions.get(call.session_id)
        if session is None:
            session = report.sessions[call.session_id] = SessionReport(call.session_id, call.task_id)
        session.resolved = call.session_resolved
        result = _replay_one(guard, clock, call, session)
        _compare(report, call, result.cost)
        if keep_calls:
            report.calls.append(result)
        if progress is not None and (done % 500 == 0 or done == len(ordered)):
            progress(done)
    return report


def _replay_one(guard: Guard, clock: ManualClock, call: TraceCall, session: SessionReport) -> CallResult:
    session.calls += 1
    if call.recorded_cost_usd is not None:
        session.recorded_cost_usd = (session.recorded_cost_usd or ZERO) + call.recorded_cost_usd
    try:
        usage = usage_from(call.dialect, call.raw_usage)
    except ValidationError as exc:
        session.invalid_calls += 1
        return CallResult(call, None, Cost.unknown("usage"), False, f"line {call.line}: {exc}")
    for name in _TOKEN_FIELDS:
        session.tokens[name] += getattr(usage, name) or 0
    accounting = account(usage, model=call.model, prices=guard.prices, context=PriceContext(at=call.at))
    cost = accounting.cost
    if cost.total_usd is None:
        session.unpriced_calls += 1
    else:
        session.cost_usd += cost.total_usd
    if session.cut is not None:
        session.cut = Cut(
            session.cut.budget, session.cut.step, session.cut.saved_cost_usd + (cost.total_usd or ZERO)
        )
        return CallResult(call, usage, cost, False)
    clock.set(call.at)
    event = UsageEvent(
        request_id=f"replay:{call.response_id or f'{call.session_id}#{call.step}'}",
        at=call.at,
        subject=Subject(session=call.session_id, task=call.task_id, agent=call.agent_id),
        usage=usage,
        model=call.model,
        endpoint=call.dialect,
        status="replayed",
        cost_usd=cost.total_usd,
        cost_estimated=cost.estimated,
        price_source=cost.price.source if cost.price else None,
        price_version=cost.price.version if cost.price else None,
        charged=accounting.charged,
        metadata={
            "step": call.step,
            "recorded_cost_usd": None if call.recorded_cost_usd is None else str(call.recorded_cost_usd),
        },
    )
    try:
        guard.charge(event)
    except BudgetExceeded as exc:
        session.cut = Cut(exc.budget, call.step, cost.total_usd or ZERO)
        return CallResult(call, usage, cost, False)
    session.admitted_calls += 1
    return CallResult(call, usage, cost, True)
