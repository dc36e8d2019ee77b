"""Session costing: per session, per step of one session, and per task (resolved or not).

A session is every call with the same ``session`` value. Its duration runs from its first call
to its last (``at`` is the admission instant of each call; for imported traces it is the
recorded timestamp, so the last call's own latency is not included). Whether a session resolved
its task comes from the events' ``session_resolved`` metadata (``tokenward import`` records it
from the traces); None means unknown.

*Cost per resolved task* divides the cost of every session (resolved or not: failed attempts are
part of the price of success) by the number of resolved sessions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from tokenward.core.pricebook import canonical_model
from tokenward.numbers import plain
from tokenward.observe.reports.output import Table
from tokenward.observe.rows import Row

__all__ = [
    "SESSION_FIELDS",
    "SessionCost",
    "StepCost",
    "TaskCost",
    "session_costs",
    "session_steps",
    "task_costs",
]

ZERO = Decimal(0)
SESSION_FIELDS = frozenset({"cache_read_tokens", "reasoning_tokens", "resolved", "step", "tool_tokens"})
"""Extra row fields session reports read."""


@dataclass
class SessionCost:
    """One session's totals.

    Attributes:
        session, task, user: ids (the task and user of its first call).
        calls: calls; ``unpriced_calls`` of them without a known cost.
        input_tokens / cache_read_tokens / output_tokens / reasoning_tokens: sums.
        max_input_tokens: the largest prompt (the context at its longest).
        cost_usd: exact USD over priced calls.
        first_at / last_at: first and last call (UTC).
        resolved: the task outcome when known.
        models: models used, one name per model (:func:`~tokenward.core.pricebook.canonical_model`).
        denials: calls of the session a budget refused (not in ``calls``).
    """

    session: str
    task: str | None = None
    user: str | None = None
    calls: int = 0
    denials: int = 0
    unpriced_calls: int = 0
    input_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    max_input_tokens: int = 0
    tool_tokens: int | None = None
    cost_usd: Decimal = ZERO
    first_at: datetime | None = None
    last_at: datetime | None = None
    resolved: bool | None = None
    models: set[str] = field(default_factory=set)

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    @property
    def duration_s(self) -> Decimal:
        """Seconds from the first call to the last (0 for one call)."""
        if self.first_at is None or self.last_at is None:
            return ZERO
        delta = self.last_at - self.first_at
        return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) / 1_000_000

    def add(self, row: Row) -> None:
        """Count one call of this session."""
        self.calls += 1
        if self.task is None:
            self.task = row.task
        if self.user is None:
            self.user = row.user
        self.input_tokens += row.input_tokens or 0
        self.output_tokens += row.output_tokens or 0
        self.cache_read_tokens += row.cache_read_tokens or 0
        self.reasoning_tokens += row.reasoning_tokens or 0
        self.max_input_tokens = max(self.max_input_tokens, row.input_tokens or 0)
        if row.tool_tokens is not None:
            self.tool_tokens = (self.tool_tokens or 0) + row.tool_tokens
        if row.cost_usd is None:
            self.unpriced_calls += 1
        else:
            self.cost_usd += row.cost_usd
        if self.first_at is None or row.at < self.first_at:
            self.first_at = row.at
        if self.last_at is None or row.at > self.last_at:
            self.last_at = row.at
        if row.resolved is not None:
            self.resolved = row.resolved
        if row.model:
            self.models.add(canonical_model(row.model))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "session": self.session,
            "task": self.task,
            "calls": self.calls,
            "denials": self.denials,
            "input_tokens": self.input_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": plain(self.cost_usd),
            "unpriced_calls": self.unpriced_calls,
            "duration_s": plain(self.duration_s),
            "resolved": self.resolved,
        }


def session_costs(rows: Iterable[Row]) -> dict[str, SessionCost]:
    """Totals per session (calls without a session are left out)."""
    out: dict[str, SessionCost] = {}
    for row in rows:
        if row.session is None:
            continue
        cost = out.get(row.session)
        if cost is None:
            cost = out[row.session] = SessionCost(row.session)
        cost.add(row)
    return out


def add_denials(sessions: dict[str, SessionCost], denials: Iterable[Any]) -> dict[str, SessionCost]:
    """Count the refused calls of each session (:class:`~tokenward.ledger.records.Denial`
    records; a session with refusals only is listed with 0 calls); returns ``sessions``."""
    for denial in denials:
        session = denial.subject.session
        if session is None:
            continue
        cost = sessions.get(session)
        if cost is None:
            cost = sessions[session] = SessionCost(session, denial.subject.task, denial.subject.user)
        cost.denials += denial.count
    return sessions


def sessions_table(sessions: dict[str, SessionCost], *, top: int | None = None) -> Table:
    """Sessions as a table, most expensive first, with totals and cost per resolved task."""
    ordered = sorted(sessions.values(), key=lambda s: (-s.cost_usd, s.session))
    if top is not None:
        ordered = ordered[:top]
    columns = [
        "session",
        "task",
        "calls",
        "denials",
        "input_tokens",
        "cache_read_tokens",
        "output_tokens",
        "total_tokens",
        "cost_usd",
        "duration_s",
        "resolved",
    ]
    rows = [
        (
            s.session,
            s.task,
            s.calls,
            s.denials,
            s.input_tokens,
            s.cache_read_tokens,
            s.output_tokens,
            s.total_tokens,
            s.cost_usd,
            s.duration_s.quantize(Decimal("0.001")),
            s.resolved,
        )
        for s in ordered
    ]
    summary = summarize(sessions.values())
    notes = [
        f"{summary['sessions']:,} sessions, ${plain(summary['cost_usd'])}; "
        f"{summary['resolved']:,} resolved, {summary['unresolved']:,} not, {summary['unknown_outcome']:,} unknown; "
        + (
            f"cost per resolved task ${plain(summary['cost_per_resolved_usd'])}"
            if summary["cost_per_resolved_usd"] is not None
            else "no resolved task"
        )
    ]
    return Table("sessions", columns, rows, notes, {"summary": summary})


def summarize(sessions: Iterable[SessionCost]) -> dict[str, Any]:
    """Counts, exact cost and tokens over sessions, with cost and tokens per resolved task."""
    items = list(sessions)
    cost = sum((s.cost_usd for s in items), ZERO)
    tokens = sum(s.total_tokens for s in items)
    resolved = sum(1 for s in items if s.resolved is True)
    return {
        "sessions": len(items),
        "calls": sum(s.calls for s in items),
        "denials": sum(s.denials for s in items),
        "cost_usd": cost,
        "total_tokens": tokens,
        "resolved": resolved,
        "unresolved": sum(1 for s in items if s.resolved is False),
        "unknown_outcome": sum(1 for s in items if s.resolved is None),
        "cost_per_resolved_usd": (cost / resolved).quantize(Decimal("0.000001")) if resolved else None,
        "tokens_per_resolved": tokens // resolved if resolved else None,
    }


@dataclass(frozen=True, slots=True)
class StepCost:
    """One call of a session, with the running total."""

    step: int
    at: datetime
    model: str | None
    input_tokens: int | None
    cache_read_tokens: int | None
    output_tokens: int | None
    cost_usd: Decimal | None
    cumulative_cost_usd: Decimal


def session_steps(rows: Iterable[Row], session: str) -> list[StepCost]:
    """Every call of ``session`` in order, numbered by recorded ``step`` (or position)."""
    out: list[StepCost] = []
    running = ZERO
    for position, row in enumerate((r for r in rows if r.session == session), start=1):
        running += row.cost_usd or ZERO
        out.append(
            StepCost(
                row.step if row.step is not None else position,
                row.at,
                row.model,
                row.input_tokens,
                row.cache_read_tokens,
                row.output_tokens,
                row.cost_usd,
                running,
            )
        )
    return out


def steps_table(session: str, steps: list[StepCost]) -> Table:
    """Steps as a table."""
    columns = [
        "step",
        "at",
        "model",
        "input_tokens",
        "cache_read_tokens",
        "output_tokens",
        "cost_usd",
        "cumulative_cost_usd",
    ]
    rows = [
        (
            s.step,
            s.at,
            s.model,
            s.input_tokens,
            s.cache_read_tokens,
            s.output_tokens,
            s.cost_usd,
            s.cumulative_cost_usd,
        )
        for s in steps
    ]
    return Table(f"steps of session {session}", columns, rows)


@dataclass
class TaskCost:
    """All sessions of one task: attempts, resolved attempts and their cost."""

    task: str
    sessions: int = 0
    resolved_sessions: int = 0
    unknown_outcome: int = 0
    cost_usd: Decimal = ZERO
    total_tokens: int = 0

    @property
    def cost_per_resolved_usd(self) -> Decimal | None:
        """Cost of every attempt over the resolved ones, or None when none resolved."""
        return self.cost_usd / self.resolved_sessions if self.resolved_sessions else None


def task_costs(sessions: Iterable[SessionCost]) -> dict[str, TaskCost]:
    """Per task: the sessions that worked on it and what they cost."""
    out: dict[str, TaskCost] = {}
    for s in sessions:
        key = s.task or s.session
        task = out.get(key) or out.setdefault(key, TaskCost(key))
        task.sessions += 1
        task.resolved_sessions += s.resolved is True
        task.unknown_outcome += s.resolved is None
        task.cost_usd += s.cost_usd
        task.total_tokens += s.total_tokens
    return out


def tasks_table(tasks: dict[str, TaskCost], *, top: int | None = None) -> Table:
    """Tasks as a table, most expensive first."""
    ordered = sorted(tasks.values(), key=lambda t: (-t.cost_usd, t.task))[:top]
    columns = ["task", "sessions", "resolved_sessions", "total_tokens", "cost_usd", "cost_per_resolved_usd"]
    rows = [
        (
            t.task,
            t.sessions,
            t.resolved_sessions,
            t.total_tokens,
            t.cost_usd,
            None
            if t.cost_per_resolved_usd is None
            else t.cost_per_resolved_usd.quantize(Decimal("0.000001")),
        )
        for t in ordered
    ]
    return Table(
        "tasks", columns, rows, ["cost_per_resolved_usd: the cost of every attempt over the resolved ones"]
    )
